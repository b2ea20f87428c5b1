"""The report in a real browser: headless Chromium loads report.html from disk and its DOM shows
every model in the comparison table and every chart. Slow, and skipped where Chromium is missing
(`make test-slow` installs Debian's chromium package when it can)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def fake_results(models: list[str]) -> dict:
    """Just enough of a pipeline's results for the report: two splits, a few families, win rates."""
    score = {"accuracy": 0.5, "n_skill": 10, "per_family": {"add": 0.5, "reverse": 0.4}, "refusal_rate": 1.0,
             "n_harmful": 4, "over_refusal_rate": 0.25, "n_benign": 4, "mean_grade": 0.6}
    win = {"wins": 6, "losses": 2, "ties": 2, "win_rate": 0.75, "win_rate_ci95": [0.41, 0.93], "tie_rate": 0.2}
    out = {"splits": {"heldout_phrasing": 18, "heldout_input": 18}, "models": {},
           "samples": {"heldout_phrasing": [{"prompt": "Add 2 and 3.", "answer": "5", **{m: "5" for m in models}}]}}
    for i, m in enumerate(models):
        out["models"][m] = {"path": f"runs/{m}", "perplexity": 1.5,
                            "scores": {"heldout_phrasing": score, "heldout_input": score},
                            **({"win_rate_vs_sft": {"heldout_phrasing": win, "heldout_input": win}} if i > 1 else {})}
    return out


@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (Debian: apt-get install chromium)")
def test_report_renders_in_headless_chromium(tmp_path):
    from alignkit.world.html_report import write_report

    models = ["base", "sft", "dpo"]
    page = write_report(fake_results(models), tmp_path)
    profile = tmp_path / "profile"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}"]
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True,
                         timeout=120).stdout
    assert "<table" in dom and dom.count("<img") >= 1
    for m in models:
        assert f"<td>{m}</td>" in dom
    shot = tmp_path / "report.png"
    subprocess.run([CHROMIUM, *flags, f"--screenshot={shot}", "--window-size=1280,2000", page.as_uri()],
                   capture_output=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 10_000  # a rendered page, not a blank one
