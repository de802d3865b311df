"""`decembert sample-data`: write the built-in synthetic corpus in HowTo100M's layouts."""

from __future__ import annotations

from pathlib import Path

import typer

from decembert_cli.commands._options import counting_progress, make_console


def sample_data(
    out: Path = typer.Argument(
        ..., help="Directory to write the corpus into (created; must be new, empty or this corpus)."
    ),
    videos: int = typer.Option(160, min=2, help="Number of videos."),
    seed: int = typer.Option(0, min=0, help="Random seed: the same seed writes byte-identical files."),
    feature_dim: int = typer.Option(2048, min=8, help="Width of both synthetic feature streams (2D and 3D)."),
    render: bool = typer.Option(
        True, "--render/--no-render", help="Also write the videos (videos/<id>.mp4, 24 fps, 160x120)."
    ),
    features: str = typer.Option(
        "synthetic",
        help="synthetic: features drawn from the planted prototypes; "
        "none: leave features/ to `decembert extract-features`.",
    ),
    clips: int = typer.Option(
        240, min=0, help="Short clips in msrvtt/ with MSR-VTT and MSRVTT-QA annotations (downstream tasks)."
    ),
) -> None:
    """Generate the synthetic `sample` pre-training corpus with a planted, known signal.

    Files follow HowTo100M exactly (HowTo100M_v1.csv, task_ids.csv, caption.json, features/2d and
    features/3d .npy per video, dense_captions in the paper's layout); alignment.json records which
    segment each caption truly describes. The videos show each segment's object (a coloured shape)
    moving as its action moves; with --features none, extract their features with
    `decembert extract-features OUT/videos --out OUT/features`. OUT/msrvtt holds short clips with
    MSR-VTT and MSRVTT-QA annotations for the downstream tasks (decembert finetune msrvtt-qa
    --set task.root=OUT/msrvtt). Re-running on the same corpus does nothing.
    """
    from decembert_cli.data.sample.corpus import generate, read_meta

    console = make_console()
    existed = read_meta(out) is not None
    with counting_progress(console, "writing videos") as progress:
        root = generate(
            out,
            videos=videos,
            seed=seed,
            feature_dim_2d=feature_dim,
            feature_dim_3d=feature_dim,
            render=render,
            features=features,
            clips=clips,
            progress=progress,
        )
    counts = (read_meta(root) or {}).get("counts", {})
    state = "already there, unchanged" if existed else "written"
    console.print(
        f"sample corpus {state}: {counts.get('videos')} videos, {counts.get('captions')} captions, "
        f"{counts.get('seconds')} s of video in {root}",
        highlight=False,
        soft_wrap=True,
    )
