"""The data report as one page: report.html (figures embedded, also written as PNGs beside it) and
report.json (every figure, with the rows behind them), from alignkit.data.survey.analyse."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from alignkit.data.survey import summary_lines


def write_survey(report: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "html": out / "report.html"}
    paths["json"].write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    pngs = figures(report, out)
    paths.update(pngs)
    paths["html"].write_text(page(report, pngs), encoding="utf-8")
    return paths


def figures(report: dict[str, Any], out: Path) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pngs: dict[str, Path] = {}
    lengths = report["lengths"]
    unit = "tokens" if "instruction_tokens" in lengths else "words"
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.6))
    for ax, key, title in zip(axes, (f"instruction_{unit}", f"response_{unit}"), ("instructions", "responses")):
        values = lengths[key].get("values", [])
        if values:
            ax.hist(values, bins=min(50, max(5, len(set(values)))), color="tab:blue", alpha=0.8)
        ax.set_title(f"{title}: length in {unit}")
        ax.set_xlabel(unit)
        ax.set_ylabel("rows")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    pngs["lengths"] = _save(fig, out / "report_lengths.png", plt)

    verbs = report["diversity"]["leading_verbs"][:15]
    if verbs:
        fig, ax = plt.subplots(figsize=(12, 0.35 * len(verbs) + 1.2))
        names = [v["verb"] for v in verbs][::-1]
        counts = [v["rows"] for v in verbs][::-1]
        ax.barh(names, counts, color="tab:orange")
        for y, v in enumerate(verbs[::-1]):
            objs = ", ".join(f"{o} {n}" for o, n in v["objects"].items())
            if objs:
                ax.text(v["rows"], y, f"  {objs}", va="center", fontsize=8)
        ax.set_title("most common leading words of the instructions, with their most common objects")
        ax.set_xlabel("rows")
        ax.set_xlim(0, max(counts) * 1.6)
        fig.tight_layout()
        pngs["verbs"] = _save(fig, out / "report_verbs.png", plt)

    near = report["duplicates"]["near_jaccard"]
    pref = report.get("preference")
    if near or pref:
        fig, axes = plt.subplots(1, 2, figsize=(12, 3.6))
        ax = axes[0]
        if near:
            ax.hist(near, bins=20, range=(report["duplicates"]["near_threshold"], 1.0), color="tab:red", alpha=0.8)
        ax.set_title(f"near-duplicate pairs by Jaccard similarity ({len(near)} pairs)")
        ax.set_xlabel("Jaccard of word 3-shingles")
        ax.grid(alpha=0.3)
        ax = axes[1]
        if pref and pref["chosen_words"]:
            ax.scatter(pref["rejected_words"], pref["chosen_words"], s=6, alpha=0.4)
            top = max(pref["chosen_words"] + pref["rejected_words"]) or 1
            ax.plot([0, top], [0, top], color="gray", linestyle="--", linewidth=1)
            ax.set_xlabel("rejected, words")
            ax.set_ylabel("chosen, words")
            ax.set_title(f"chosen longer in {100 * pref['chosen_longer_share']:.0f}% of pairs")
        else:
            ax.axis("off")
        fig.tight_layout()
        pngs["pairs"] = _save(fig, out / "report_pairs.png", plt)
    return pngs


def _save(fig: Any, path: Path, plt: Any) -> Path:
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _img(path: Path, alt: str) -> str:
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}'>"


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def page(report: dict[str, Any], pngs: dict[str, Path]) -> str:
    esc = html.escape
    summary = "".join(f"<li>{esc(line)}</li>" for line in summary_lines(report))
    fmt = _table(["format", "rows"], [[k, n] for k, n in report["by_format"].items()])
    group = ""
    if "by_group" in report:
        g = report["by_group"]
        group = f"<h3>By {esc(g['key'])}</h3>" + _table([g["key"], "rows"], [[k, n] for k, n in g["counts"].items()])
    lengths = _table(["", "rows", "mean", "median", "p90", "p99", "max"],
                     [[k.replace("_", " "), v["n"], f"{v.get('mean', 0):.1f}", v.get("median", ""), v.get("p90", ""),
                       v.get("p99", ""), v.get("max", "")] for k, v in report["lengths"].items()])
    dup = report["duplicates"]
    near = _table(["Jaccard", "row", "row", "text", "text"],
                  [[p["jaccard"], p["a"], p["b"], p["text_a"], p["text_b"]] for p in dup["near_examples"]])
    exact = _table(["row", "same as"], [[e["row"], e["same_as"]] for e in dup["exact_examples"]])
    flagged = ""
    if "unsafe" in report:
        flagged = "<h2>Rows the safety rules flag</h2>" + _table(["row", "reason"], [[e["where"], e["reason"]] for e in
                                                                                      report["unsafe"]["examples"]])
    problems = _table(["what", "rows", "first rows"],
                      [["empty response", report["empty_responses"]["rows"], ", ".join(report["empty_responses"]["examples"])],
                       ["response looks cut off (20+ words, no ending mark)", report["cut_off_responses"]["rows"],
                        ", ".join(report["cut_off_responses"]["examples"])]]
                      + ([["longer than max_length", report["longer_than_max_length"]["rows"],
                           ", ".join(report["longer_than_max_length"]["examples"])]]
                         if "longer_than_max_length" in report else [])
                      + [["malformed", report["malformed"], "; ".join(m["error"] for m in report["malformed_examples"][:3])]])
    imgs = "".join(f"<h3>{esc(k)}</h3>{_img(p, k)}" for k, p in pngs.items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>data report: {esc(report['path'])}</title>
<style>body{{font-family:sans-serif;max-width:80rem;margin:2rem auto;padding:0 1rem;color:#222}}
table{{border-collapse:collapse;margin:1rem 0;font-size:.85rem}}td,th{{border:1px solid #ccc;padding:.3rem .5rem;text-align:left;vertical-align:top}}
th{{background:#f3f3f3}}img{{max-width:100%;margin:.5rem 0}}</style></head>
<body>
<h1>Data report: {esc(report['path'])}</h1>
<ul>{summary}</ul>
<h2>Rows</h2>{fmt}{group}
<h2>Lengths</h2>{lengths}
<h2>Figures</h2>{imgs}
<h2>Problems</h2>{problems}
{flagged}
<h2>Near-duplicates (most alike first)</h2>{near}
<h2>Exact duplicates</h2>{exact}
</body></html>
"""
