"""The pictures (matplotlib, Agg backend, PNG at a fixed size so a report lays out the same every time)."""

from __future__ import annotations

import io
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from decembert_cli.io import atomic_write_bytes

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from decembert_cli.densecap.regions import Region

DPI = 100


def _figure(width: float, height: float) -> Figure:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt.figure(figsize=(width, height), dpi=DPI)


def _save(fig: Figure, path: Path) -> Path:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)  # no tight bbox: the size stays width x height inches at DPI
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())


def _short(text: str, width: int = 48) -> str:
    return textwrap.shorten(text, width=width, placeholder="...")


def attention(examples: Sequence[Any], path: Path, layer: int | None = None, titles: Sequence[str] = ()) -> Path:
    """Figure 4: per example a column with the (layers x heads x candidates) grid, the mean over heads
    of `layer` (default: the last) as bars, and the candidate and dense captions. 7 x 7.5 inches each."""
    fig = _figure(7.0 * len(examples), 7.5)
    for col, ex in enumerate(examples):
        layers, heads, n = ex.mass.shape
        chosen = layers - 1 if layer is None else layer
        grid = np.full((layers, heads * (n + 1) - 1), np.nan)
        for h in range(heads):
            grid[:, h * (n + 1) : h * (n + 1) + n] = ex.mass[:, h, :]
        top = fig.add_axes((0.08 + col / len(examples), 0.56, 0.86 / len(examples), 0.37))
        image = top.imshow(grid, aspect="auto", cmap="viridis", interpolation="nearest")
        top.set_yticks(range(layers), [f"layer {i + 1}" for i in range(layers)], fontsize=7)
        top.set_xticks(
            [h * (n + 1) + (n - 1) / 2 for h in range(heads)], [f"h{h + 1}" for h in range(heads)], fontsize=7
        )
        title = titles[col] if col < len(titles) else Path(ex.checkpoint).parent.parent.name
        top.set_title(
            f"{title}: {ex.video_id} clip {ex.clip}, step {ex.step}\n"
            "video -> candidate captions (each head: s_i-k .. s_i+k)",
            fontsize=8,
        )
        fig.colorbar(image, ax=top, fraction=0.03)
        bars = fig.add_axes((0.08 + col / len(examples), 0.27, 0.86 / len(examples), 0.2))
        mean = ex.mass[chosen].mean(0)
        colours = ["tab:orange" if j == ex.aligned else ("tab:blue" if j == ex.own else "tab:gray") for j in range(n)]
        bars.bar(range(n), mean, color=colours)
        bars.set_xticks(range(n), [f"c{j}" for j in range(n)], fontsize=7)
        bars.set_title(f"layer {chosen + 1}, mean over heads (blue: own caption, orange: true caption)", fontsize=8)
        lines = [
            f"c{j}{' (own)' if j == ex.own else ''}{' (true)' if j == ex.aligned else ''}: {_short(c)}"
            for j, c in enumerate(ex.candidates)
        ]
        lines += ["dense captions: " + _short("; ".join(ex.dense), 70)] if ex.dense else []
        fig.text(0.08 + col / len(examples), 0.19, "\n".join(lines), fontsize=7, va="top", family="monospace")
    return _save(fig, path)


def curve_keys(runs: dict[str, list[dict[str, Any]]]) -> list[str]:
    """The logged numbers that make a curve: those with at least two points in some run, in log order."""
    keys: list[str] = []
    for records in runs.values():
        for r in records:
            keys += [
                k
                for k, v in r.items()
                if isinstance(v, (int, float)) and k not in ("step", "epoch", "world") and k not in keys
            ]
    points = {k: max(sum(isinstance(r.get(k), (int, float)) for r in rs) for rs in runs.values()) for k in keys}
    return [k for k in keys if points[k] >= 2]


def curves(runs: dict[str, list[dict[str, Any]]], path: Path, keys: Sequence[str] | None = None) -> Path:
    """Logged numbers against the step (`keys`, default `curve_keys`): training lines, validation points;
    runs overlaid. 4 x 3 inches per metric, 3 per row."""
    keys = list(curve_keys(runs) if keys is None else keys)
    cols = 3
    rows = max(1, -(-len(keys) // cols))
    fig = _figure(4.0 * cols, 3.0 * rows)
    for i, key in enumerate(keys):
        ax = fig.add_subplot(rows, cols, i + 1)
        for name, records in runs.items():
            train = [(r["step"], r[key]) for r in records if "split" not in r and isinstance(r.get(key), (int, float))]
            val = [
                (r["step"], r[key]) for r in records if r.get("split") == "val" and isinstance(r.get(key), (int, float))
            ]
            if train:
                ax.plot(*zip(*train), label=f"{name}", linewidth=1)
            if val:
                ax.plot(*zip(*val), marker="o", linestyle="--", label=f"{name} (val)", markersize=3)
        ax.set_title(key, fontsize=9)
        ax.tick_params(labelsize=7)
        if i == 0:
            ax.legend(fontsize=6)
    fig.subplots_adjust(
        hspace=0.5, wspace=0.3, top=1 - 0.45 / (3.0 * rows), bottom=0.4 / (3.0 * rows), left=0.07, right=0.97
    )
    return _save(fig, path)


def examples(rows: list[dict[str, Any]], path: Path) -> Path:
    """Task examples: per row a frame (when given) and its lines of text. 10 x 2.2 inches per row."""
    fig = _figure(10.0, 2.2 * max(1, len(rows)))
    for i, row in enumerate(rows):
        top = 1 - (i + 1) / len(rows)
        frame = row.get("frame")
        if frame is not None:
            ax = fig.add_axes((0.01, top + 0.02 / len(rows), 0.22, 0.96 / len(rows)))
            ax.imshow(frame)
            ax.axis("off")
        fig.text(
            0.25,
            top + 0.9 / len(rows),
            "\n".join(_short(line, 110) for line in row["lines"]),
            fontsize=8,
            va="top",
            family="monospace",
        )
    return _save(fig, path)


def metrics_table(metrics: dict[str, float], path: Path, title: str) -> Path:
    """A table of metric names and values (validation, for the image panels of TensorBoard and W&B). 6 inches wide."""
    rows = [[key, f"{value:.4g}"] for key, value in metrics.items()]
    fig = _figure(6.0, 0.6 + 0.22 * max(1, len(rows)))
    ax = fig.add_axes((0.02, 0.02, 0.96, 0.96 - 0.35 / fig.get_figheight()))
    ax.axis("off")
    ax.set_title(title, fontsize=9, loc="left")
    if rows:
        table = ax.table(cellText=rows, colLabels=["metric", "value"], loc="upper left", cellLoc="left")
        table.auto_set_font_size(False)
        table.set_fontsize(8)
    return _save(fig, path)


def video_frames(
    frames: list[tuple[float, np.ndarray, list[Region]]],
    path: Path,
    cols: int = 4,
    changes: dict[str, np.ndarray] | None = None,
) -> Path:
    """Frames with their dense-caption boxes and captions drawn, 4 x 3.2 inches per frame; with
    `changes` (stream -> per-second 1 - cosine to the previous second) a 3-inch strip below."""
    from matplotlib.patches import Rectangle

    rows = max(1, -(-len(frames) // cols))
    extra = 1 if changes else 0
    fig = _figure(4.0 * cols, 3.2 * rows + 3.0 * extra)
    grid = fig.add_gridspec(rows + extra, cols, height_ratios=[3.2] * rows + [3.0] * extra)
    for i, (t, pixels, regions) in enumerate(frames):
        ax = fig.add_subplot(grid[i // cols, i % cols])
        ax.imshow(pixels)
        h, w = pixels.shape[:2]
        whole = []
        for r in regions:
            box = r.box
            if box is None or (box[2] - box[0]) * (box[3] - box[1]) >= 0.9 * w * h:  # the whole frame: in the title
                whole.append(r.caption)
                continue
            x1, y1, x2, y2 = box
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color="yellow", linewidth=1))
            ax.text(x1, y1, _short(r.caption, 24), fontsize=6, color="black", backgroundcolor="yellow", va="bottom")
        ax.set_title(f"{t:g} s" + (": " + _short("; ".join(whole), 44) if whole else ""), fontsize=7)
        ax.axis("off")
    if changes:
        ax = fig.add_subplot(grid[rows, :])
        for stream, values in changes.items():
            ax.plot(np.arange(1, len(values) + 1), values, label=f"{stream} features", linewidth=1)
        ax.set_title("feature change per second (1 - cosine to the second before)", fontsize=8)
        ax.set_xlabel("second", fontsize=8)
        ax.legend(fontsize=7)
    return _save(fig, path)
