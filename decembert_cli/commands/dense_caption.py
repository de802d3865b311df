"""`decembert dense-caption`: dense region captions for frames every 2 s of each video."""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

import typer


def dense_caption(
    inputs: List[Path] = typer.Argument(..., help="Video files, folders of videos (recursive) or list files (.txt/.csv)."),
    out: Path = typer.Option(..., "--out", "-o", help="Dense-caption store folder (created); a rerun skips captioned videos."),
    backend: str = typer.Option("florence2", help="A registered captioner (entry points decembert.captioners)."),
    model: Optional[str] = typer.Option(None, help="Model for the backend: a hub id or a local directory (florence2: microsoft/Florence-2-large)."),
    interval: float = typer.Option(2.0, help="Seconds between captioned frames (the paper: 2)."),
    top_k: int = typer.Option(0, min=0, help="Regions kept per frame, best first (0: all the model gives)."),
    batch_size: int = typer.Option(8, min=1, help="Frames per generate call."),
    num_beams: int = typer.Option(3, min=1, help="Beam search width (Florence-2's default: 3)."),
    max_new_tokens: int = typer.Option(1024, min=1, help="Longest generated text per frame."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    precision: str = typer.Option("auto", help="auto (bf16 on GPUs that have it), fp32, bf16, fp16."),
    decoder: str = typer.Option("auto", help="auto (OpenCV, then PyAV), opencv or pyav."),
    shard: str = typer.Option("0/1", help="Do shard i of n (i/n); torchrun ranks split each shard further."),
) -> None:
    """Caption frames every 2 s with an off-the-shelf dense captioner and store the regions.

    Writes OUT/{video_id}.json (frames with their time and regions: caption, box in pixels, score),
    OUT/densecap.json (backend, model, weights SHA-256, settings), videos.jsonl and failures.jsonl.
    `decembert pretrain` reads the folder as data.dense_captions.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from decembert_cli.commands._options import parse_shard
    from decembert_cli.densecap.backends import captioners
    from decembert_cli.densecap.pipeline import CaptionOptions, caption_videos
    from decembert_cli.engine.distributed import resolve_device
    from decembert_cli.engine.precision import autocast_dtype
    from decembert_cli.errors import DecembertError

    if decoder not in ("auto", "opencv", "pyav"):
        raise DecembertError(f"--decoder {decoder}: use auto, opencv or pyav")
    if precision not in ("auto", "fp32", "bf16", "fp16"):
        raise DecembertError(f"--precision {precision}: use auto, fp32, bf16 or fp16")
    i, n = parse_shard(shard)
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    dev = resolve_device(device, int(os.environ.get("LOCAL_RANK", 0)), "--device")
    factory = captioners.load(backend)
    captioner = factory(model, dev, autocast_dtype(precision, dev, "--precision"), {"num_beams": num_beams, "max_new_tokens": max_new_tokens})
    options = CaptionOptions(out=out, interval=interval, top_k=top_k, batch_size=batch_size, decoder=decoder, shard=(i * world + rank, n * world))
    console = Console(stderr=True)
    with Progress(
        TextColumn("captioning"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
        console=console, transient=True, disable=not console.is_terminal,
    ) as bar:  # fmt: skip
        task = bar.add_task("videos", total=None)
        summary = caption_videos(
            inputs, captioner, options,
            on_start=lambda todo: bar.update(task, total=todo), on_video=lambda _v, _s: bar.update(task, advance=1),
        )  # fmt: skip
    per_frame = summary.caption_s / summary.frames if summary.frames else 0.0
    console.print(
        f"{summary.captioned} captioned, {summary.already_done} already done, {sum(summary.failed.values())} failed of "
        f"{summary.videos} videos; {summary.frames} frames, {summary.regions} regions in {summary.wall_s:.1f} s "
        f"({per_frame:.3f} s per frame captioning)",
        highlight=False, soft_wrap=True,
    )  # fmt: skip
    if summary.failed:
        kinds = ", ".join(f"{k}: {v}" for k, v in summary.failed.most_common())
        console.print(f"[yellow]failed[/] ({kinds}); reasons in the failures log in {out}", highlight=False, soft_wrap=True)
    typer.echo(str(out))
