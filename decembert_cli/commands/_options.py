"""Options and output shared by the commands: configs, and runs over many videos."""

from __future__ import annotations

import contextlib
import os
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer

if TYPE_CHECKING:
    from _typeshed import DataclassInstance
    from rich.console import Console
    from rich.table import Table

T = TypeVar("T", bound="DataclassInstance")

ConfigOption = typer.Option(
    None, "--config", "-c", help="YAML config file, or a packaged preset name (paper, demo, tiny)."
)
SetOption = typer.Option(
    [], "--set", help="Override one key, e.g. --set loss.constrained_lambda=0.5 (repeatable; value read as YAML)."
)
PrintConfigOption = typer.Option(False, "--print-config", help="Print the resolved config as YAML and exit.")


# where output goes to a pipe or a file: a width no line reaches, so tables keep every cell whole (rich would
# use 80 columns and cut commands and paths with "..."); tables still take only the width their content needs
UNBOUNDED_WIDTH = 100_000


def titled_table(title: str, **kwargs: Any) -> Table:
    """A rich Table with its title on one line, left-aligned (rich would wrap a title longer than the columns)."""
    from rich.table import Table

    return Table(title=title, title_justify="left", min_width=len(title), **kwargs)


def make_console(*, stderr: bool = False, **kwargs: Any) -> Console:
    """The rich Console of a command. On a terminal, its width; otherwise (a pipe, a log) unbounded, unless the
    COLUMNS environment variable sets one."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    if "width" not in kwargs and not os.environ.get("COLUMNS") and not stream.isatty():
        kwargs["width"] = UNBOUNDED_WIDTH
    return Console(stderr=stderr, **kwargs)


def resolve(cls: type[T], config: str | None, overrides: list[str], print_config: bool) -> T:
    """Load the config; with --print-config, print it and stop."""
    from decembert_cli.config import load_config, to_yaml

    resolved: Any = load_config(cls, config, overrides)
    if print_config:
        typer.echo(to_yaml(resolved), nl=False)
        raise typer.Exit()
    return resolved


def parse_shard(value: str) -> tuple[int, int]:
    """`i/n` -> (i, n), checked."""
    from decembert_cli.errors import DecembertError

    try:
        i, n = (int(x) for x in value.split("/"))
    except ValueError:
        raise DecembertError(f"--shard {value}: write it as i/n, e.g. 0/4 for the first of 4 shards") from None
    if not (n >= 1 and 0 <= i < n):
        raise DecembertError(f"--shard {value}: need 0 <= i < n")
    return i, n


def video_run(decoder: str, precision: str, device: str, shard: str) -> tuple[Any, Any, tuple[int, int]]:
    """Checked options of a command over many videos: (device, autocast dtype, shard).

    torchrun's RANK / WORLD_SIZE split the --shard further (each process one GPU: LOCAL_RANK)."""
    import os

    from decembert_cli.engine.distributed import resolve_device
    from decembert_cli.errors import DecembertError
    from decembert_cli.precision import autocast_dtype

    if decoder not in ("auto", "opencv", "pyav"):
        raise DecembertError(f"--decoder {decoder}: use auto, opencv or pyav")
    if precision not in ("auto", "fp32", "bf16", "fp16"):
        raise DecembertError(f"--precision {precision}: use auto, fp32, bf16 or fp16")
    i, n = parse_shard(shard)
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    dev = resolve_device(device, int(os.environ.get("LOCAL_RANK", 0)), "--device")
    return dev, autocast_dtype(precision, dev, "--precision"), (i * world + rank, n * world)


@contextlib.contextmanager
def counting_progress(console: Any, label: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar (on a terminal only) that yields `progress(done, total)` to report with."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task(label, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


@contextlib.contextmanager
def video_progress(console: Any, verb: str) -> Iterator[tuple[Callable[[int], None], Callable[[str, str], None]]]:
    """A progress bar over videos: yields (on_start(total), on_video(video_id, "done" | "failed"))."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn(verb),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[failed]} failed"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    ) as bar:
        task = bar.add_task("videos", total=None, failed=0)
        failed = [0]

        def on_video(_video_id: str, state: str) -> None:
            failed[0] += state == "failed"
            bar.update(task, advance=1, failed=failed[0])

        yield (lambda total: bar.update(task, total=total)), on_video


def report_failures(console: Any, failed: Counter[str], failures_log: Path, ignored: list[str]) -> None:
    """The lines after a run over many videos: failures by kind and where their reasons are, ignored files."""
    if failed:
        kinds = ", ".join(f"{k}: {v}" for k, v in failed.most_common())
        console.print(f"[yellow]failed[/] ({kinds}); reasons in {failures_log}", highlight=False, soft_wrap=True)
    if ignored:
        console.print(
            f"ignored {len(ignored)} files that are not videos by extension (e.g. {ignored[0]})",
            highlight=False,
            soft_wrap=True,
        )
