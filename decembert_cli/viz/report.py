"""`decembert visualize`: training curves, task examples, video frames with dense captions, one HTML page per run.

The HTML page holds its pictures as data URIs and its tables inline: one file that opens offline
(no CDN, no script), in a browser or as a screenshot.
"""

from __future__ import annotations

import base64
import html
import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from decembert_cli import checkpoint as ckpt
from decembert_cli.config import Config
from decembert_cli.config.loader import check_value, from_dict
from decembert_cli.config.schema import MAX_INTERVAL, Interval, NonNegativeInt
from decembert_cli.data.densecap import read_store_regions
from decembert_cli.data.howto100m import BadVideo, load_stream
from decembert_cli.data.video import MAX_DURATION, Decoded, Grid, VideoError, frame_grid, open_video, sample
from decembert_cli.densecap.regions import Region
from decembert_cli.errors import DecembertError
from decembert_cli.io import METRICS_LOG, atomic_write_text, read_jsonl, regular_file
from decembert_cli.model import build_tokenizer
from decembert_cli.model.pretraining import PERCENT, in_percent
from decembert_cli.recipes import ABLATIONS, DOWNSTREAM, TABLE6_PAPER
from decembert_cli.viz import plots
from decembert_cli.viz.attention import attention_example, run_corpus

if TYPE_CHECKING:
    from decembert_cli.data.clip_table import ClipTable


def read_log(run_dir: Path) -> list[dict[str, Any]]:
    """The rows of a run's metrics log that can be drawn: those with a numeric step (others are noted), shares
    in per cent (`run_log.in_percent`)."""
    path = Path(run_dir) / METRICS_LOG
    if not path.is_file():
        raise DecembertError(f"{path} not found: RUN_DIR must be a run folder of decembert pretrain or finetune")
    rows, note = read_jsonl(path)
    if note:
        print(f"note: {note}", file=sys.stderr)
    steps = [r for r in rows if _read_as(r.get("step"), NonNegativeInt) is not None]
    if len(steps) < len(rows):
        left = len(rows) - len(steps)
        print(f'note: {path}: {left} of {len(rows)} rows have no numeric "step" and are left out', file=sys.stderr)
    return [in_percent(r) for r in steps]


def _read_as(value: Any, kind: Any) -> Any:
    """A value read from a file as the schema type `kind` (a number in range, a pair of numbers); None if it is not."""
    try:
        return check_value(value, kind, "")
    except DecembertError:
        return None


def run_curves(run_dirs: list[Path], out: Path) -> Path:
    """Every logged metric of one run, or of several overlaid."""
    names = [Path(d).name or str(d) for d in run_dirs]
    if len(set(names)) < len(names):
        names = [str(d) for d in run_dirs]
    return plots.curves({name: read_log(d) for name, d in zip(names, run_dirs)}, out)


def _run_meta(run_dir: Path) -> dict[str, Any]:
    file = ckpt.resolve(Path(run_dir))
    payload = ckpt.load_checkpoint(file)
    return {"meta": payload.get("meta", {}), "config": payload.get("config", {}), "file": file}


def frames_every(video: Path, every: float, most: int) -> list[tuple[float, np.ndarray]]:
    """(time, RGB frame shown then) for at most `most` of the times 0, every, 2 x every, ... s, spread
    evenly over the video, decoded as extract-features decodes (one frame in memory per kept time)."""
    try:
        decoder = open_video(video)
    except VideoError as exc:
        raise DecembertError(f"{video}: {exc.reason}") from None
    duration = min(decoder.info.duration, MAX_DURATION)  # (as the container says: any number)
    count = int(duration // every) + 1 if duration > 0 else most
    keep = set(np.linspace(0, count - 1, min(most, count)).round().astype(int).tolist())
    try:
        return [
            (item.k * every, item.pixels[0])
            for item in sample(decoder, [frame_grid(every)], Decoded())
            if item.k in keep
        ]
    except VideoError as exc:
        raise DecembertError(f"{video}: {exc.reason}") from None
    finally:
        decoder.close()


def frame_at(video: Path, t: float) -> np.ndarray | None:
    """The RGB frame shown at `t` s (the last one when the video is shorter), or None when it cannot be read."""
    try:
        decoder = open_video(video)
    except VideoError:
        return None
    # one item, its frame at t (a video shorter than t gives it its last frame); t comes from a predictions file
    at = min(max(t, 0.0), MAX_DURATION) if math.isfinite(t) else 0.0
    grid = Grid(rate=1 / MAX_INTERVAL, phase=0.0, offsets=(at,), size=0)
    try:
        return next((item.pixels[0] for item in sample(decoder, [grid], Decoded())), None)
    except VideoError:
        return None
    finally:
        decoder.close()


def _video_file(root: Path, video_id: str) -> Path | None:
    return next(
        (
            p
            for p in (
                root / "videos" / f"{video_id}.mp4",
                root / "videos" / f"{video_id}.avi",
                root / "videos" / f"{video_id}.webm",
            )
            if p.is_file()
        ),
        None,
    )


def task_examples(run_dir: Path, out: Path, count: int = 6) -> Path:
    """Examples of a fine-tuned run's newest evaluation: frames (when the videos are there), predictions, answers."""
    info = _run_meta(run_dir)
    meta = info["meta"]
    if meta.get("kind") != "finetune":
        raise DecembertError(
            f"{run_dir} is a {meta.get('kind') or 'unknown'} run; "
            "`visualize task` shows fine-tuned tasks (its `visualize run` shows curves)"
        )
    evals = sorted(Path(run_dir).glob("eval-*/predictions.jsonl"), key=lambda p: p.stat().st_mtime)
    if not evals:
        raise DecembertError(
            f"{run_dir} has no evaluation yet: run `decembert evaluate {meta.get('task')} --checkpoint {run_dir}` first"
        )
    rows, note = read_jsonl(evals[-1])
    if note:
        print(f"note: {note}", file=sys.stderr)
    picked = [rows[i] for i in np.linspace(0, len(rows) - 1, min(count, len(rows))).round().astype(int)] if rows else []
    root = Path(info["config"].get("task", {}).get("root", "") or ".")
    shown = []
    for row in picked:
        if "question" in row:
            lines = [f"Q: {row['question']}", f"answer: {row['answer']}   predicted: {row['prediction']}"]
            lines += ["top 5: " + ", ".join(f"{a} {p:.2f}" for a, p in row.get("top5", []))]
        elif "top5" in row:
            lines = [
                f"query: {row['text']}",
                f"video: {row['video_id']}   rank {row['rank']}",
                "top 5: " + ", ".join(row["top5"]),
            ]
        else:
            lines = [f"predicted: {row['caption']}"] + [f"reference: {r}" for r in row.get("references", [])[:2]]
        window = _read_as(row.get("window"), tuple[float, float])
        t = (window[0] + window[1]) / 2 if window is not None else 2.0
        video = _video_file(root, row.get("video_id", ""))
        shown.append(
            {"lines": [f"[{row.get('video_id', '')}]", *lines], "frame": frame_at(video, t) if video else None}
        )
    return plots.examples(shown, out)


def video_picture(
    video: Path,
    out: Path,
    densecap: Path | None = None,
    features: Path | None = None,
    every: float | None = None,
    most: int = 12,
) -> Path:
    """A video's frames every `every` s (default 1, or the dense captions' interval; at most `most`,
    spread evenly) with the regions of the captioned frame at that time, and optionally the
    per-second change of its stored features."""
    if every is not None:
        every = check_value(every, Interval, "--every")
    records: list[tuple[float, list[Region]]] = []
    if densecap is not None:
        path = Path(densecap)
        if path.is_dir():
            path = path / f"{Path(video).stem}.json"
        try:
            records, interval = read_store_regions(regular_file(path, "--densecap"))
        except BadVideo as exc:
            raise DecembertError(
                f"--densecap {path}: {exc}; give the record decembert dense-caption wrote for this video"
            ) from None
        every = interval if every is None else every
    every = 1.0 if every is None else every
    by_time = {round(t, 2): regions for t, regions in records}
    frames = []
    for t, pixels in frames_every(Path(video), every, most):
        frames.append((float(t), pixels, by_time.get(round(t, 2), [])))
    if not frames:
        raise DecembertError(f"{video}: no frame could be decoded")
    changes = None
    if features is not None:
        changes = {}
        for stream in ("2d", "3d"):
            f = Path(features) / stream / f"{Path(video).stem}.npy"
            if f.is_file():
                try:
                    x = np.asarray(load_stream(f, None, stream.upper()), dtype=np.float32)
                except BadVideo as exc:
                    raise DecembertError(f"--features {f}: {exc}") from None
                x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
                changes[stream] = 1.0 - (x[1:] * x[:-1]).sum(1)
        if not changes:
            raise DecembertError(f"--features {features}: no 2d/ or 3d/ {Path(video).stem}.npy there")
    return plots.video_frames(frames, out, changes=changes)


def _image(path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(Path(path).name)}" src="data:image/png;base64,{data}">'


def _table(title: str, metrics: dict[str, Any]) -> str:
    cells = "".join(
        f"<tr><td>{html.escape(str(k))}</td><td>{v:.4g}</td></tr>"
        if isinstance(v, float)
        else f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>"
        for k, v in metrics.items()
    )
    return f"<h3>{html.escape(title)}</h3><table>{cells}</table>"


STYLE = (
    "body{font-family:sans-serif;margin:2em;max-width:1400px;color:#222}"
    "img{max-width:100%;border:1px solid #ddd;margin:.5em 0}\n"
    "table{border-collapse:collapse;margin:.5em 0}td{border:1px solid #ccc;padding:2px 8px;font-size:13px}"
    "h2{border-bottom:1px solid #ccc}th{border:1px solid #ccc;padding:2px 8px;font-size:13px;text-align:left}"
    "details{margin:.5em 0}summary{cursor:pointer;color:#555}"
)


# logged numbers about the run rather than the model: folded away under the curves that matter
HOUSEKEEPING = ("lr", "grad_norm", "samples_per_s", "data_wait", "tokens_per_s", "tflops_per_s", "mfu")
# the pre-training numbers the summary shows, each beside what it is compared with (Table 6, or a baseline)
PRETRAIN_SUMMARY = (
    ("MLM accuracy on ASR tokens", "mlm_acc_asr", None),
    ("MLM accuracy on dense-caption tokens", "mlm_acc_dense", None),
    ("video-text matching accuracy", "vtm_acc", None),
    ("video use: MLM on ASR, own video", "mlm_acc_asr_positives", "mlm_acc_asr_swapped_video"),
    ("alignment: argmax u is the true caption", "alignment_acc", "alignment_own_caption"),
)


def _housekeeping(key: str) -> bool:
    return key in HOUSEKEEPING or key.startswith("weight_")


def _number(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


def _table6_row(config: dict[str, Any]) -> str:
    """Which of the paper's cumulative Table 6 rows a pre-training run's settings are (the full model if none
    other fits)."""
    for row, settings in ABLATIONS.items():
        if all(_setting_is(config, assignment) for assignment in settings):
            return row
    return "full"


def _setting_is(config: dict[str, Any], assignment: str) -> bool:
    """Whether a saved run config has `section.key=value` (a --set as the recipes write it)."""
    key, value = assignment.split("=", 1)
    section, name = key.split(".", 1)
    have = config.get(section, {}).get(name)
    if str(have).lower() == value.lower():
        return True
    try:
        return float(have) == float(value)
    except (TypeError, ValueError):
        return False


def _summary(runs: list[tuple[Path, dict[str, Any], list[dict[str, Any]]]]) -> str:
    """The first thing on the page, in pipeline order: the corpus and pre-training (Table 6's metrics, the
    video-use and alignment diagnostics beside their baselines), then each task's scores beside the paper's."""
    rows = []
    for run, info, log in runs:
        meta, val = info["meta"], [r for r in log if r.get("split") == "val"]
        last = val[-1] if val else {}
        if meta.get("kind") == "pretrain":
            row = _table6_row(info["config"])
            paper = TABLE6_PAPER.get(row, {})
            step = last.get("step", "-")
            where = (
                f"pre-training ({html.escape(run.name)}: corpus {html.escape(str(meta.get('corpus')))}, step {step})"
            )
            for label, key, baseline in PRETRAIN_SUMMARY:
                if key not in last:
                    continue
                compared = (
                    f"{_number(last.get(baseline))} ({baseline})"
                    if baseline
                    else f"{_number(paper.get(key))} (paper, Table 6 {row})"
                    if key in paper
                    else "-"
                )
                rows.append((where, label, _number(last[key]), compared))
        for evaluation in sorted(run.glob("eval-*/metrics.json")):
            try:
                record = json.loads(evaluation.read_text(encoding="utf-8"))
                task, metrics = str(record["task"]), dict(record["metrics"])
            except (OSError, ValueError, KeyError, TypeError):
                continue  # the run's own section says what its files hold
            paper = DOWNSTREAM[task].paper if task in DOWNSTREAM else {}
            where = f"{html.escape(task)} ({html.escape(run.name)}, {html.escape(str(record.get('split')))} split)"
            for key in [record.get("main_metric"), *paper]:
                if key in metrics and all(r[:2] != (where, key) for r in rows):
                    rows.append((where, key, _number(metrics[key]), f"{_number(paper.get(key))} (paper)"))
    if not rows:
        return "<h2>Summary</h2><p>no validation or evaluation yet</p>"
    head = "<tr><th>stage</th><th>metric</th><th>this run</th><th>compared with</th></tr>"
    body = "".join(
        f"<tr><td>{a}</td><td>{html.escape(b)}</td><td>{c}</td><td>{html.escape(d)}</td></tr>" for a, b, c, d in rows
    )
    return f"<h2>Summary</h2><table class='summary'>{head}{body}</table>"


def report(run_dirs: list[Path], video: str | None = None) -> Path:
    """RUN_DIR/report/index.html (and its PNGs) for each run folder given; a folder of runs (as
    `make demo` writes) gets one page covering all of them. The page opens on a summary, then one section
    per run in pipeline order (pre-training first, then the tasks). Returns the page."""
    runs = [Path(d) for d in run_dirs]
    if len(runs) == 1 and not (runs[0] / METRICS_LOG).is_file():
        runs = sorted(p.parent for p in runs[0].glob(f"*/{METRICS_LOG}"))
        home = Path(run_dirs[0])
        if not runs:
            raise DecembertError(f"{home} holds no run (no {METRICS_LOG} in it or in its subfolders)")
    else:
        home = runs[0]
    folder = home / "report"
    folder.mkdir(parents=True, exist_ok=True)
    loaded = [(run, _run_meta(run), read_log(run)) for run in runs]
    loaded.sort(key=lambda x: (x[1]["meta"].get("kind") != "pretrain", str(x[1]["meta"].get("task") or ""), x[0].name))
    sections = [_summary(loaded)]
    for run, info, log in loaded:
        meta = info["meta"]
        parts = [
            f"<h2>{html.escape(run.name)}: {html.escape(str(meta.get('kind')))} "
            f"{html.escape(str(meta.get('task') or meta.get('corpus') or ''))}</h2>"
        ]
        parts.append(f"<p>checkpoint {html.escape(str(info['file']))}</p>")
        val = [r for r in log if r.get("split") == "val"]
        if val:
            parts.append(
                _table(
                    f"last validation (step {val[-1]['step']})",
                    {k: v for k, v in val[-1].items() if k not in ("split", "step", PERCENT)},
                )
            )
        keys = plots.curve_keys({run.name: log})
        main = [k for k in keys if not _housekeeping(k)]
        if main:
            parts.append(_image(plots.curves({run.name: log}, folder / f"{run.name}-curves.png", main)))
        chores = [k for k in keys if _housekeeping(k)]
        if chores:
            picture = _image(plots.curves({run.name: log}, folder / f"{run.name}-housekeeping.png", chores))
            parts.append(
                f"<details><summary>housekeeping: {html.escape(', '.join(chores))}</summary>{picture}</details>"
            )
        if meta.get("kind") == "pretrain":
            try:
                table = _corpus(info["config"], meta)
                example = attention_example(run, video or table.video_ids[0], table=table)
                parts.append(
                    _image(plots.attention([example], folder / f"{run.name}-attention.png", titles=[run.name]))
                )
            except DecembertError as exc:
                parts.append(f"<p>attention map not drawn: {html.escape(str(exc))}</p>")
        if meta.get("kind") == "finetune":
            for evaluation in sorted(run.glob("eval-*/metrics.json")):
                record = json.loads(evaluation.read_text(encoding="utf-8"))
                parts.append(
                    _table(
                        f"{record['task']}, {record['split']} split ({record['items']} items)",
                        {**record.get("protocol", {}), **record["metrics"]},
                    )
                )
            if list(run.glob("eval-*/predictions.jsonl")):
                parts.append(_image(task_examples(run, folder / f"{run.name}-examples.png")))
        sections.append("\n".join(parts))
    page = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>decembert report: {html.escape(home.name)}</title>"
        f"<style>{STYLE}</style></head><body><h1>decembert report: {html.escape(str(home))}</h1>"
        f"{''.join(sections)}</body></html>\n"
    )
    return atomic_write_text(folder / "index.html", page)


def _corpus(config: dict[str, Any], meta: dict[str, Any]) -> ClipTable:
    """A pre-training run's corpus (opened once for the report)."""
    cfg = from_dict(Config, config)
    return run_corpus(cfg, meta, build_tokenizer(cfg.model))
