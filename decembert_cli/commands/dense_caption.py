"""`decembert dense-caption`: dense region captions for frames every 2 s of each video."""

from __future__ import annotations

from pathlib import Path

import typer


def dense_caption(
    inputs: list[Path] = typer.Argument(
        ...,
        help="Video files, folders of videos (recursive) or list files (.txt/.csv); "
        "for --backend import, the files to import.",
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Dense-caption store folder (created); a rerun skips captioned videos."
    ),
    backend: str = typer.Option(
        "florence2",
        help="florence2, import (other tools' JSON or the paper's .npy), oracle (sample corpus only), "
        "or another registered captioner.",
    ),
    model: str | None = typer.Option(
        None, help="Model for the backend: a hub id or a local directory (florence2: microsoft/Florence-2-large)."
    ),
    interval: float = typer.Option(2.0, help="Seconds between captioned frames (the paper: 2; 0.04 to 86400)."),
    top_k: int = typer.Option(0, min=0, help="Regions kept per frame, best first (0: all the model gives)."),
    batch_size: int = typer.Option(8, min=1, max=256, help="Frames per generate call."),
    num_beams: int | None = typer.Option(None, min=1, max=64, help="Beam search width (Florence-2's default: 3)."),
    max_new_tokens: int | None = typer.Option(
        None, min=1, max=8192, help="Longest generated text per frame (Florence-2: 1024)."
    ),
    option: list[str] = typer.Option(
        [], "--option", help="KEY=VALUE for the backend, repeatable (import: pattern=REGEX, frame_base=N)."
    ),
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
    from decembert_cli.commands._options import make_console, report_failures, video_progress, video_run
    from decembert_cli.config.loader import check_value
    from decembert_cli.config.schema import Interval
    from decembert_cli.data.jobs import log_names, store_writer
    from decembert_cli.densecap.backends import ImportBackend, captioners
    from decembert_cli.densecap.pipeline import CaptionOptions, caption_videos, import_captions
    from decembert_cli.errors import DecembertError

    interval = check_value(interval, Interval, "--interval")  # before a captioner is loaded
    dev, autocast, shard_of_run = video_run(decoder, precision, device, shard)
    settings: dict[str, object] = {"num_beams": num_beams, "max_new_tokens": max_new_tokens}
    for item in option:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise DecembertError(f"--option {item}: use KEY=VALUE")
        settings[key.strip()] = value
    factory = captioners.load(backend)
    captioner = factory(model, dev, autocast, {k: v for k, v in settings.items() if v is not None})
    options = CaptionOptions(
        out=out, interval=interval, top_k=top_k, batch_size=batch_size, decoder=decoder, shard=shard_of_run
    )
    console = make_console(stderr=True)
    imports = isinstance(captioner, ImportBackend)
    progress = video_progress(console, "importing" if imports else "captioning")
    with store_writer(out, inputs, options.shard), progress as (on_start, on_video):
        run = import_captions if imports else caption_videos
        summary = run(inputs, captioner, options, on_start=on_start, on_video=on_video)
    per_frame = summary.caption_s / summary.frames if summary.frames else 0.0
    console.print(
        f"{summary.captioned} captioned, {summary.already_done} already done, {sum(summary.failed.values())} failed of "
        f"{summary.videos} videos; {summary.frames} frames, {summary.regions} regions in {summary.wall_s:.1f} s "
        f"({per_frame:.3f} s per frame captioning)",
        highlight=False,
        soft_wrap=True,
    )
    report_failures(console, summary.failed, Path(out) / log_names(options.shard)[1], summary.ignored_files)
    typer.echo(str(out))
