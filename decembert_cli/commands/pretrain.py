"""`decembert pretrain`: DeCEMBERT pre-training on a corpus plugin (howto100m, sample, ...)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from decembert_cli.commands._options import (
    ConfigOption,
    PrintConfigOption,
    SetOption,
    counting_progress,
    make_console,
    resolve,
    titled_table,
)

if TYPE_CHECKING:  # imported when the command runs, so that `decembert --help` stays instant
    from rich.console import Console
    from rich.table import Table

    from decembert_cli.data.scan import DataReport


def pretrain(
    data: str = typer.Option("howto100m", "--data", help="Corpus: howto100m, sample, or one a plugin adds."),
    config: str | None = ConfigOption,
    overrides: list[str] = SetOption,
    print_config: bool = PrintConfigOption,
    out: Path | None = typer.Option(None, "--out", help="Run folder (default runs/pretrain-DATA-TIME)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its newest checkpoint."),
    strict: bool = typer.Option(
        False, "--strict", help="Stop at the first bad video instead of skipping and counting it."
    ),
) -> None:
    """Pre-train with MLM + video-text matching + the constrained attention loss.

    Examples: `decembert pretrain --data howto100m --set data.root=DIR --out runs/h100m`;
    `decembert pretrain --data sample` (the built-in corpus, generated on first use).
    Ablations: --set data.neighbours=0, --set data.use_dense=false, --set loss.constrained_lambda=0.
    Multi-GPU or multi-process CPU: torchrun --nproc-per-node N -m decembert_cli pretrain ...
    """
    import os
    import time

    from decembert_cli.config import Config
    from decembert_cli.config.loader import former_defaults
    from decembert_cli.engine.pretrain import prepare
    from decembert_cli.engine.pretrain import pretrain as run_pretraining
    from decembert_cli.errors import DecembertError
    from decembert_cli.viz.attention import validation_pictures

    if out is None:
        if resume:
            raise DecembertError("--resume needs --out RUN_DIR (the run to continue)")
        out = Path("runs") / f"pretrain-{data}-{time.strftime('%Y%m%d-%H%M%S')}"
    if resume and config is None and (out / "config.yaml").is_file():
        config = str(out / "config.yaml")  # a resumed run starts from its own config; --set still applies
        overrides = [*former_defaults(out / "config.yaml"), *overrides]  # a run from before a default changed
    cfg = resolve(Config, config, overrides, print_config)
    main = int(os.environ.get("RANK", "0")) == 0
    console = make_console(quiet=not main)
    with counting_progress(console, f"indexing the {data} corpus (once)") as progress:
        setup = prepare(cfg, data, out, strict=strict, progress=progress)
    setup.job.pictures = validation_pictures((cfg, setup.table, setup.shown_video, setup.tokenizer))
    report = setup.report
    console.print(
        f"corpus {data}: {report.videos_used} of {report.videos_seen} videos usable; "
        f"train {setup.train_videos} videos / {setup.train_clips} clips "
        f"({setup.train_items} items per epoch: one per "
        f"{cfg.train.epoch_unit}), validation {setup.val_videos} videos / "
        f"{setup.val_clips} clips scored",
        highlight=False,
    )
    _print_report(console, report)

    def show_validation(step: int, metrics: dict[str, float]) -> None:
        console.print(validation_table(metrics, title=f"validation at step {step}"))

    result = run_pretraining(setup, cfg, resume=resume, on_validation=show_validation)
    console.print(
        f"done: step {result.steps}/{result.total_steps}, {result.samples_per_s:.1f} samples/s, "
        f"{100 * result.data_wait:.0f}% of the time waiting for data; checkpoint {result.checkpoint}; "
        f"metrics log {out / 'metrics.jsonl'}",
        highlight=False,
        soft_wrap=True,
    )
    _print_report(console, report)


def _print_report(console: Console, report: DataReport) -> None:
    if not (report.skipped or report.fixed):
        return

    table = titled_table("data problems (see data_report.json)")
    table.add_column("problem")
    table.add_column("count", justify="right")
    table.add_column("first case")
    for kind, n in report.skipped.most_common():
        table.add_row(f"skipped video: {kind}", str(n), report.examples.get(kind, ""))
    for kind, n in report.fixed.most_common():
        table.add_row(kind, str(n), report.examples.get(kind, ""))
    console.print(table)


TABLE6 = [
    ("mlm_acc_asr", "MLM accuracy, ASR tokens"),
    ("mlm_acc_dense", "MLM accuracy, dense-caption tokens"),
    ("vtm_acc", "video-text matching accuracy"),
    ("mlm_acc_asr_positives", "MLM accuracy, ASR tokens of matching pairs"),
    ("mlm_acc_asr_swapped_video", "  the same with another video's features"),
    ("constrained_loss", "constrained attention loss"),
    ("entropy", "entropy of u (nats)"),
    ("alignment_acc", "alignment accuracy (argmax u = true caption)"),
    ("alignment_own_caption", "  baseline: always the clip's own caption s_i"),
    ("alignment_prev_caption", "  baseline: always the previous caption s_i-1"),
]


def validation_table(metrics: dict[str, float], title: str) -> Table:

    from decembert_cli.model.pretraining import is_percent_metric

    table = titled_table(title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, label in TABLE6:
        if key in metrics:
            value = metrics[key]
            table.add_row(label, f"{value:.2f}%" if is_percent_metric(key) else f"{value:.4f}")
    offsets = sorted(
        (k for k in metrics if k.startswith("argmax_u_offset")), key=lambda k: int(k[len("argmax_u_offset") :])
    )
    if offsets:
        shares = ", ".join(
            f"s_i{k[len('argmax_u_offset') :] if not k.endswith('+0') else ''} {metrics[k]:.0f}%" for k in offsets
        )
        table.add_row("argmax u by time offset", shares)
    return table
