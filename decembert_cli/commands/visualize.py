"""`decembert visualize`: attention maps, training curves, task examples, video frames and an HTML report."""

from __future__ import annotations

from pathlib import Path

import typer

visualize = typer.Typer(help="Pictures (PNG) and an HTML report of runs, tasks and videos.", no_args_is_help=True)


@visualize.command("attention")
def attention(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="Pre-training checkpoint (file or run folder)."),
    video: str = typer.Option(..., "--video", help="A video id of the checkpoint's corpus."),
    clip: int | None = typer.Option(
        None, "--clip", help="Caption index of the clip (default: the video's middle one)."
    ),
    layer: int | None = typer.Option(
        None, "--layer", help="Layer (1-based) of the mean-over-heads bars (default: the last)."
    ),
    compare: Path | None = typer.Option(
        None, "--compare", help="A second checkpoint (e.g. without the constrained loss), drawn beside."
    ),
    out: Path | None = typer.Option(None, "--out", help="PNG to write (default RUN/report/attention-VIDEO-CLIP.png)."),
    overrides: list[str] = typer.Option(
        [], "--set", help="Override the checkpoint's config, e.g. --set data.root=DIR."
    ),
) -> None:
    """The paper's Figure 4: attention from the clip's video tokens to each candidate ASR caption,
    per layer and head."""
    import json

    from decembert_cli.io import atomic_write_text
    from decembert_cli.viz import plots
    from decembert_cli.viz.attention import attention_example

    inputs = [checkpoint, compare]
    if out is not None:
        _check_attention_outputs(out, inputs)  # before any work
    examples = [attention_example(checkpoint, video, clip, overrides)]
    if compare is not None:
        examples.append(attention_example(compare, video, examples[0].clip, overrides))
    run = checkpoint if checkpoint.is_dir() else checkpoint.parent.parent
    if out is None:
        out = run / "report" / f"attention-{video}-{examples[0].clip}.png"
        _check_attention_outputs(out, inputs)
    layers = examples[0].mass.shape[0]
    if layer is not None and not 1 <= layer <= layers:
        from decembert_cli.errors import DecembertError

        raise DecembertError(f"--layer {layer}: the model has layers 1 to {layers}")
    chosen = None if layer is None else layer - 1
    titles = [Path(e.checkpoint).parent.parent.name for e in examples]
    path = plots.attention(examples, out, layer=chosen, titles=titles)
    record = {"written_by": ATTENTION_RECORD, "examples": [e.to_dict() for e in examples]}
    atomic_write_text(out.with_suffix(".json"), json.dumps(record, indent=1) + "\n")
    typer.echo(str(path))


ATTENTION_RECORD = "decembert visualize attention"  # marks the JSON beside the PNG as ours (replaceable)


def _check_attention_outputs(out: Path, inputs: list[Path | None]) -> None:
    """The PNG replaces an earlier picture; the JSON of the numbers beside it replaces only an earlier one."""
    from decembert_cli.io import check_outputs, is_png, read_json_object

    check_outputs([out], inputs, replaces=is_png)
    check_outputs(
        [out.with_suffix(".json")],
        inputs,
        replaces=lambda p: (read_json_object(p) or {}).get("written_by") == ATTENTION_RECORD,
    )


@visualize.command("run")
def run_curves(
    run_dir: Path = typer.Argument(..., help="A run folder (metrics.jsonl)."),
    compare: list[Path] = typer.Option([], "--compare", help="More run folders, overlaid (repeatable)."),
    out: Path | None = typer.Option(None, "--out", help="PNG to write (default RUN_DIR/report/curves.png)."),
) -> None:
    """Curves of every logged metric (losses, accuracies, learning rate) against the step."""
    from decembert_cli.io import METRICS_LOG, check_outputs, is_png
    from decembert_cli.viz.report import run_curves as draw

    out = out or run_dir / "report" / "curves.png"
    runs = [run_dir, *compare]
    check_outputs([out], [p for r in runs for p in (r, r / METRICS_LOG)], replaces=is_png)
    typer.echo(str(draw(runs, out)))


@visualize.command("task")
def task_examples(
    run_dir: Path = typer.Argument(..., help="A fine-tuned run folder, evaluated (decembert evaluate)."),
    count: int = typer.Option(6, min=1, max=100, help="Examples drawn."),
    out: Path | None = typer.Option(None, "--out", help="PNG to write (default RUN_DIR/report/examples.png)."),
) -> None:
    """Examples with frames and predictions: QA top-5 answers, retrieval top-5 videos, captions and references."""
    from decembert_cli.io import check_outputs, is_png
    from decembert_cli.viz.report import task_examples as draw

    out = out or run_dir / "report" / "examples.png"
    check_outputs([out], [run_dir, *run_dir.glob("eval-*/*")], replaces=is_png)
    typer.echo(str(draw(run_dir, out, count)))


@visualize.command("video")
def video_frames(
    video: Path = typer.Argument(..., help="A video file."),
    densecap: Path | None = typer.Option(
        None, "--densecap", help="Its dense-caption record (OUT/ID.json of dense-caption, or that folder)."
    ),
    features: Path | None = typer.Option(
        None, "--features", help="A feature folder (2d/, 3d/): plot the per-second change of its features."
    ),
    every: float | None = typer.Option(
        None, help="Seconds between frames, 0.04 to 86400 (default: 1, or the dense captions' interval)."
    ),
    most: int = typer.Option(12, min=1, max=100, help="Frames drawn at most (spread over the video)."),
    out: Path | None = typer.Option(None, "--out", help="PNG to write (default VIDEO_ID-frames.png here)."),
) -> None:
    """A video's frames with its dense captions and boxes drawn, for checking extraction by eye."""
    from decembert_cli.io import check_outputs, is_png
    from decembert_cli.viz.report import video_picture

    out = out or Path(f"{video.stem}-frames.png")
    check_outputs([out], [video, densecap, features], replaces=is_png)
    typer.echo(str(video_picture(video, out, densecap, features, every, most)))


@visualize.command("report")
def report(
    run_dirs: list[Path] = typer.Argument(..., help="Run folders, or one folder of runs (e.g. demo/runs/TIME)."),
    video: str | None = typer.Option(
        None, "--video", help="Video of the attention map of pre-training runs (default: the corpus' first)."
    ),
) -> None:
    """One self-contained HTML page (pictures inline, opens offline): curves, metrics tables,
    attention map, task examples."""
    from decembert_cli.viz.report import report as write

    typer.echo(str(write(run_dirs, video)))
