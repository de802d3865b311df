"""`decembert extract-features`: videos -> 2D + 3D features at 1 feature/s in the feature store."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from decembert_cli.features.backbones import Backbone
    from decembert_cli.features.pipeline import ExtractOptions, ExtractSummary


def extract_features(
    inputs: list[Path] = typer.Argument(
        ...,
        help="Video files, folders of videos (searched recursively) "
        "or list files (.txt/.csv: path or video_id,path per line).",
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Feature store folder (created); a rerun skips finished videos."),
    layout: str = typer.Option(
        "decembert", help="decembert: both streams on the 1 s grid. howto100m: 3D at 1.5/s as HowTo100M ships it."
    ),
    backbone_2d: str = typer.Option(
        "resnet152.tv_in1k", "--backbone-2d", help="Any timm model name (the paper: ResNet-152, ImageNet)."
    ),
    weights_2d: Path | None = typer.Option(
        None, "--weights-2d", help="Local 2D weights file; default: timm's hub download."
    ),
    backbone_3d: str = typer.Option(
        "resnext101",
        "--backbone-3d",
        help="A registered 3D backbone: resnext101 (the paper's), resnext50, slow_r50, resnext3d-tiny, or a plugin's.",
    ),
    weights_3d: Path | None = typer.Option(
        None, "--weights-3d", help="Local 3D weights file, e.g. Hara et al.'s resnext-101-kinetics.pth."
    ),
    random_init: bool = typer.Option(
        False, "--random-init", help="Random weights for every backbone without a weights file (tests, demo)."
    ),
    size_2d: int | None = typer.Option(
        None, "--size-2d", min=16, max=1024, help="2D input side in pixels (default: the model's, 224 for ResNet-152)."
    ),
    size_3d: int | None = typer.Option(
        None,
        "--size-3d",
        min=16,
        max=1024,
        help="3D input side in pixels (default: the backbone's, 112 for ResNeXt-101).",
    ),
    batch_size: int = typer.Option(32, min=1, max=1024, help="Images or clips per forward pass."),
    readers: int = typer.Option(2, min=1, max=64, help="Decoding threads."),
    decoder: str = typer.Option("auto", help="auto (OpenCV, then PyAV), opencv or pyav."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    precision: str = typer.Option("auto", help="auto (bf16 on GPUs that have it), fp32, bf16, fp16."),
    dtype: str = typer.Option("float16", help="Stored dtype: float16 (as HowTo100M) or float32."),
    l2_normalise: bool = typer.Option(False, "--l2-normalise", help="Store L2-normalised rows."),
    shard: str = typer.Option("0/1", help="Do shard i of n (i/n); torchrun ranks split each shard further."),
) -> None:
    """Extract 2D (appearance) and 3D (motion) features at 1 feature/s, as the paper uses them.

    Writes OUT/2d/<id>.npy and OUT/3d/<id>.npy with OUT/*/stream.json (backbone, weights SHA-256,
    rate, resolution, normalisation), videos.jsonl and failures.jsonl. Failed videos do not stop the
    run; rerunning after a crash or kill extracts only what is missing.
    """
    from decembert_cli.commands._options import make_console, report_failures, video_progress
    from decembert_cli.data.jobs import log_names, store_writer
    from decembert_cli.features.pipeline import extract

    options = _extract_options(out, layout, dtype, l2_normalise, batch_size, readers, decoder, device, precision, shard)
    console = make_console(stderr=True)
    b2, b3 = _backbones(backbone_2d, weights_2d, size_2d, backbone_3d, weights_3d, size_3d, random_init)
    console.print(_backbones_line(b2, b3, options), highlight=False, soft_wrap=True)
    with store_writer(out, inputs, options.shard), video_progress(console, "extracting") as (on_start, on_video):
        summary = extract(inputs, b2, b3, options, on_video=on_video, on_start=on_start)
    console.print(_summary_line(summary, options), highlight=False, soft_wrap=True)
    report_failures(console, summary.failed, Path(out) / log_names(options.shard)[1], summary.ignored_files)
    typer.echo(str(Path(out)))


def _extract_options(
    out: Path,
    layout: str,
    dtype: str,
    l2_normalise: bool,
    batch_size: int,
    readers: int,
    decoder: str,
    device: str,
    precision: str,
    shard: str,
) -> ExtractOptions:
    """The pipeline's options, with the checked device, autocast dtype and this process' shard."""
    from decembert_cli.commands._options import video_run
    from decembert_cli.features.pipeline import ExtractOptions

    dev, autocast, shard_of_run = video_run(decoder, precision, device, shard)
    return ExtractOptions(
        out=out,
        layout=layout,
        dtype=dtype,
        l2_normalise=l2_normalise,
        batch_size=batch_size,
        readers=readers,
        decoder=decoder,
        device=dev,
        autocast=autocast,
        shard=shard_of_run,
    )


def _weights_source(path: Path | None, flag: str, random_init: bool) -> str:
    """A backbone's weights: the given file, "random" (--random-init) or "hub" (not offline for 2D)."""
    from decembert_cli.errors import DecembertError

    if path is not None:
        return str(path)
    if random_init:
        return "random"
    if os.environ.get("HF_HUB_OFFLINE") == "1" and flag == "--weights-2d":
        raise DecembertError("HF_HUB_OFFLINE=1 and no --weights-2d: pass a local weights file, or --random-init")
    return "hub"


def _backbones(
    backbone_2d: str,
    weights_2d: Path | None,
    size_2d: int | None,
    backbone_3d: str,
    weights_3d: Path | None,
    size_3d: int | None,
    random_init: bool,
) -> tuple[Backbone, Backbone]:
    """The 2D and 3D backbones, built in that order."""
    from decembert_cli.features.backbones import build_2d, build_3d

    b2 = build_2d(backbone_2d, _weights_source(weights_2d, "--weights-2d", random_init), size_2d)
    b3 = build_3d(backbone_3d, _weights_source(weights_3d, "--weights-3d", random_init), size_3d)
    return b2, b3


def _backbones_line(b2: Backbone, b3: Backbone, options: ExtractOptions) -> str:
    """The line announcing both backbones, the device and the layout."""
    return (
        f"2D {b2.name} ({b2.dim}-d, {b2.size} px, weights {b2.weights}); 3D {b3.name} ({b3.dim}-d, {b3.frames} frames "
        f"at {b3.fps:g} fps, {b3.size} px, weights {b3.weights}); {options.device}, layout {options.layout}"
    )


def _summary_line(summary: ExtractSummary, options: ExtractOptions) -> str:
    """The closing line: counts, video seconds, wall time, throughput, decoding and inference time."""
    rate = summary.seconds / summary.wall_s if summary.wall_s else 0.0
    return (
        f"{summary.extracted} extracted, {summary.already_done} already done, {sum(summary.failed.values())} failed "
        f"of {summary.videos} videos; {summary.seconds:.0f} s of video in {summary.wall_s:.1f} s "
        f"({rate:.1f} video-seconds/s; decoding {summary.decode_s:.1f} s over {options.readers} readers, "
        f"inference {summary.infer_s:.1f} s)"
    )
