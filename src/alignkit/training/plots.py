"""Training curves as PNG: one panel per metric in metrics.jsonl, against the optimizer step."""

from __future__ import annotations

from pathlib import Path

from alignkit.training.metrics import read_metrics

SKIP = {"step", "time", "epoch"}


def plot_metrics(metrics_path: str | Path, out_png: str | Path | None = None, title: str = "",
                 keys: list[str] | None = None) -> Path:
    """Draw every numeric metric (loss, eval_loss, lr, tokens_per_s, ...), or only `keys`, in a grid;
    return the PNG path."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers
    import matplotlib.pyplot as plt

    metrics_path = Path(metrics_path)
    rows = read_metrics(metrics_path)
    series: dict[str, tuple[list[float], list[float]]] = {}
    for row in rows:
        for key, value in row.items():
            if key not in SKIP and isinstance(value, (int, float)) and (keys is None or key in keys):
                xs, ys = series.setdefault(key, ([], []))
                xs.append(row["step"])
                ys.append(value)
    if keys:
        missing = [k for k in keys if k not in series]
        if missing:
            from alignkit.errors import AlignkitError

            raise AlignkitError(f"{metrics_path}: no numeric metric named {', '.join(missing)}")
        series = {k: series[k] for k in keys}
    out_png = Path(out_png) if out_png else metrics_path.with_name("curves.png")
    cols = min(3, max(1, len(series)))
    nrows = max(1, -(-len(series) // cols))
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.0 * nrows), squeeze=False)
    for ax, (key, (xs, ys)) in zip(axes.flat, series.items()):
        ax.plot(xs, ys, marker="o" if len(xs) < 20 else None, markersize=3)
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if key in ("loss", "eval_loss", "eval_ppl") and ys and min(ys) > 0 and max(ys) / min(ys) > 20:
            ax.set_yscale("log")
    for ax in list(axes.flat)[len(series):]:
        ax.axis("off")
    fig.suptitle(title or str(metrics_path.parent))
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png
