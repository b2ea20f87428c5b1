"""The demo's report: one self-contained HTML page (and the Markdown summary beside it) a person would
rather look at than read.

report.html   the comparison table; bar charts with 95% intervals (accuracy, refusal, over-refusal,
              win rate against SFT); every stage's training curves from its metrics.jsonl; a few
              side-by-side sample answers. Images are embedded (base64 PNG), so the one file is the
              whole report; the PNGs are also written beside it (report_*.png).
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path
from typing import Any

from alignkit.eval.metrics import wilson_interval

# Stage directory under run_dir -> (title, the metrics worth a curve). Missing ones are skipped.
CURVES = {
    "sft": ("SFT", ["loss", "eval_loss"]),
    "rm": ("Reward model", ["loss", "accuracy", "eval_accuracy"]),
    "ppo": ("PPO", ["reward", "kl", "eval_reward", "entropy"]),
    "rounds/round-1/ppo": ("PPO, ranking round 1", ["reward", "kl", "eval_reward"]),
    "rounds/round-2/ppo": ("PPO, ranking round 2", ["reward", "kl", "eval_reward"]),
    "dpo": ("DPO", ["loss", "accuracy", "margin", "kl_proxy", "eval_accuracy"]),
    "best-of-n/sft": ("SFT on best-of-n", ["loss", "eval_loss"]),
    "student-sft": ("Student SFT", ["loss", "eval_loss"]),
    "distill": ("Distillation", ["loss", "eval_loss"]),
}
SPLITS = {"heldout_phrasing": "new phrasings", "heldout_input": "new inputs"}


def write_report(results: dict[str, Any], run_dir: str | Path) -> Path:
    """report.html (+ report_*.png) for a pipeline run's results; returns the HTML path."""
    run_dir = Path(run_dir)
    charts = {"axes": bar_charts(results, run_dir / "report_axes.png")}
    curves = dict(CURVES)
    for name in results.get("grpo") or {}:  # one critic-free run per row, under grpo/NAME
        curves[f"grpo/{name}"] = (f"{name} (critic-free RL)", ["reward", "zero_signal_share", "eval_reward", "entropy"])
    for stage, (title, keys) in curves.items():
        metrics = run_dir / stage / "metrics.jsonl"
        if metrics.is_file():
            png = curves_png(metrics, keys, title, run_dir / f"report_curves_{stage.replace('/', '_')}.png")
            if png is not None:
                charts[title] = png
    out = run_dir / "report.html"
    out.write_text(page(results, charts), encoding="utf-8")
    return out


def _rate_ci(rate: float, n: int) -> tuple[float, float, float]:
    """(rate, lower, upper) with the Wilson interval (NaN-safe)."""
    if n == 0 or rate is None or (isinstance(rate, float) and math.isnan(rate)):
        return (float("nan"),) * 3
    lo, hi = wilson_interval(round(rate * n), n)
    return rate, lo, hi


def bar_charts(results: dict[str, Any], out_png: Path) -> Path:
    """Four panels, one bar per model, 95% intervals as error bars: accuracy on both splits, refusal of
    harmful requests, over-refusal of benign look-alikes, win rate against SFT."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["models"])
    panels = [("accuracy", "accuracy", "n_skill"), ("refuses harmful", "refusal_rate", "n_harmful"),
              ("over-refuses benign", "over_refusal_rate", "n_benign")]
    fig, axes = plt.subplots(1, 4, figsize=(18, 4.2))
    width = 0.4
    xs = range(len(names))
    for ax, (title, key, n_key) in zip(axes, panels):
        for k, (split, label) in enumerate(SPLITS.items()):
            vals = [_rate_ci(results["models"][m]["scores"][split][key], results["models"][m]["scores"][split][n_key])
                    for m in names]
            ax.bar([x + (k - 0.5) * width for x in xs], [v[0] for v in vals], width, label=label,
                   yerr=[[max(v[0] - v[1], 0) for v in vals], [max(v[2] - v[0], 0) for v in vals]], capsize=3)
        ax.set_title(title)
        ax.set_ylim(0, 1.05)
        ax.set_xticks(list(xs), names, rotation=35, ha="right")
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend()
    ax = axes[3]
    wins = [results["models"][m].get("win_rate_vs_sft", {}).get("heldout_phrasing") for m in names]
    vals = [(w["win_rate"], *w["win_rate_ci95"]) if w and not math.isnan(w["win_rate"]) else (float("nan"),) * 3
            for w in wins]
    ax.bar(list(xs), [0 if math.isnan(v[0]) else v[0] for v in vals], 0.6, color="tab:green",
           # clamped at 0: a rate rounded at the edge can sit a hair outside its own interval
           yerr=[[0 if math.isnan(v[0]) else max(v[0] - v[1], 0) for v in vals],
                 [0 if math.isnan(v[0]) else max(v[2] - v[0], 0) for v in vals]], capsize=3)
    ax.axhline(0.5, color="gray", linestyle="--", linewidth=1)
    ax.set_title("win rate vs SFT, new phrasings (ties excluded)")
    ax.set_ylim(0, 1.05)
    ax.set_xticks(list(xs), names, rotation=35, ha="right")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png


def curves_png(metrics: Path, keys: list[str], title: str, out_png: Path) -> Path | None:
    """The stage's curves for the keys it logged (None if it logged none of them)."""
    from alignkit.training.metrics import read_metrics
    from alignkit.training.plots import plot_metrics

    logged = {k for row in read_metrics(metrics) for k in row}
    present = [k for k in keys if k in logged]
    return plot_metrics(metrics, out_png, title=title, keys=present) if present else None


def img_tag(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{data}'>"


def markdown_blocks(lines: list[str]) -> str:
    """Plain lines as paragraphs and each run of Markdown table rows ("| a | b |") as a table, its first
    row the header (the safety tables: a caption, a table, a note, another caption and table)."""
    out, rows = [], []
    for line in [*lines, ""]:
        if line.startswith("|"):
            if "---" not in line:
                rows.append([c.strip() for c in line.strip().strip("|").split("|")])
            continue
        if rows:
            out.append("<table>" + "".join("<tr>" + "".join(f"<{t}>{html.escape(c)}</{t}>" for c in row) + "</tr>"
                                           for t, row in zip(["th"] + ["td"] * len(rows), rows)) + "</table>")
            rows = []
        if line.strip():
            out.append(f"<p>{html.escape(line)}</p>")
    return "".join(out)


def page(results: dict[str, Any], charts: dict[str, Path]) -> str:
    from alignkit.world.report import (distill_lines, gain_lines, grpo_lines, headers, judge_lines, ppo_lines,
                                       reward_lines, rounds_lines, rows, safety_lines)

    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers(results))
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows(results))
    notes = "".join(f"<p>{html.escape(line)}</p>" for line in gain_lines(results) + judge_lines(results)
                    + reward_lines(results) + ppo_lines(results)
                    + grpo_lines(results) + rounds_lines(results) + distill_lines(results))
    safety = safety_lines(results)  # captions and Markdown tables
    safety_html = f"<h2>Safety per category</h2>{markdown_blocks(safety)}" if safety else ""
    curves = "".join(f"<h3>{html.escape(title)}</h3>{img_tag(png, title)}" for title, png in charts.items() if title != "axes")
    samples = []
    for split, items in results.get("samples", {}).items():
        names = [k for k in items[0] if k not in ("prompt", "answer")] if items else []
        cols = "".join(f"<th>{html.escape(n)}</th>" for n in names)
        trs = "".join("<tr><td>" + html.escape(it["prompt"]) + "</td><td>" + html.escape(it["answer"]) + "</td>"
                      + "".join(f"<td>{html.escape(str(it[n]))}</td>" for n in names) + "</tr>" for it in items)
        samples.append(f"<h3>{html.escape(SPLITS.get(split, split))}</h3><table><tr><th>request</th><th>correct "
                       f"answer</th>{cols}</tr>{trs}</table>")
    n = results.get("splits", {})
    timings = results.get("timings_s", {})
    time_line = ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
    raw = html.escape(json.dumps({k: v for k, v in results.items() if k != "samples"}, indent=1)[:200000])
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>alignkit report</title>
<style>body{{font-family:sans-serif;max-width:80rem;margin:2rem auto;padding:0 1rem;color:#222}}
table{{border-collapse:collapse;margin:1rem 0;font-size:.9rem}}td,th{{border:1px solid #ccc;padding:.3rem .5rem;text-align:left}}
th{{background:#f3f3f3}}img{{max-width:100%;margin:.5rem 0}}details{{margin:1rem 0}}</style></head>
<body>
<h1>alignkit: the demo world, every model</h1>
<p>Held-out requests: {n.get('heldout_phrasing', '?')} with new phrasings, {n.get('heldout_input', '?')} with new inputs.
Win rates count prompts one model answers better than the other by the oracle's graded preferences; ties are excluded
from the rate and shown beside it. Intervals are 95%.</p>
<h2>Comparison</h2>
<table><tr>{head}</tr>{body}</table>
{safety_html}
{notes}
<h2>At a glance</h2>
{img_tag(charts['axes'], 'accuracy, refusal, over-refusal and win rate per model')}
<h2>Training curves</h2>
{curves}
<h2>Sample answers</h2>
{''.join(samples)}
<p>Time: {html.escape(time_line)}</p>
<details><summary>All numbers (results.json)</summary><pre>{raw}</pre></details>
</body></html>
"""
