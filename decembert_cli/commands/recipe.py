"""`decembert recipe TABLE`: the chain of commands behind one of the paper's tables, its cost, and a runner."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from decembert_cli.commands._options import SetOption, make_console, titled_table

if TYPE_CHECKING:
    from rich.console import Console

    from decembert_cli.recipes import Recipe


def recipe(
    table: str = typer.Argument(..., help="table3, table4, table5 or table6."),
    root: Path = typer.Option(
        Path("decembert-data"),
        "--root",
        help="Data folder: ROOT/howto100m, ROOT/msrvtt, ROOT/youcook2, each with videos/ and its annotation files.",
    ),
    runs: Path | None = typer.Option(None, "--runs", help="Folder of the recipe's runs (default ROOT/runs)."),
    config: str = typer.Option("paper", "--config", "-c", help="Pre-training config (a preset name or YAML file)."),
    overrides: list[str] = SetOption,
    skip: list[str] = typer.Option(
        [], "--skip", help="A step whose output you already have, e.g. features:howto100m (repeatable)."
    ),
    execute: bool = typer.Option(
        False, "--run/--dry-run", help="--dry-run (default): print the chain and its cost. --run: execute it."
    ),
    script: bool = typer.Option(
        False, "--script", help="Print the chain as a bash script (one command per line, its cost as a comment)."
    ),
) -> None:
    """The paper's recipe for a table: every command (features, dense captions, index, pre-training,
    fine-tuning, evaluation) with the paper's settings, the GPU-hours on one H200 (measured rate or a
    labelled estimate) and the disk. --run executes it, resumably: run it again after an interruption.
    --script prints the commands as a bash script instead.
    --set applies to the pre-training runs."""
    from decembert_cli import recipes
    from decembert_cli.errors import DecembertError

    if script and execute:
        raise DecembertError("--script prints the commands for you to run; --run runs them: give one of the two")
    console = make_console(highlight=False, soft_wrap=True)
    plan = recipes.build(table, root, runs, config, overrides)
    if script:
        typer.echo(as_script(plan), nl=False)
        return
    show_plan(console, plan)
    if execute:
        recipes.run(plan, announce=lambda line: console.print(f"[bold]{line}[/bold]"), skip=skip)
        show_results(console, plan)


def show_plan(console: Console, plan: Recipe) -> None:

    from decembert_cli.recipes import RATES

    table = titled_table(f"recipe {plan.table}: {plan.title}", show_lines=False)
    for column in ("#", "step", "hours", "disk", "command"):
        table.add_column(column, justify="right" if column in ("#", "hours", "disk") else "left")
    for number, step in enumerate(plan.steps, 1):
        mark = "" if RATES[step.rate].measured else "~"
        table.add_row(
            str(number),
            step.name + (f"\n[dim]{step.note}[/dim]" if step.note else ""),
            f"{mark}{step.hours:,.1f}",
            _size(step.disk_bytes),
            step.command(),
        )
    console.print(table)
    label = "measured rates" if plan.all_measured() else "an estimate (~: from an estimated rate)"
    console.print(
        "hours: wall-clock on one machine with one H200 and 16 CPU cores. "
        f"total: {plan.hours:,.0f} hours, {_size(plan.disk_bytes)} of new files under {plan.root} "
        f"(besides the videos); {label}",
    )
    console.print("rates used:")
    for key in sorted({s.rate for s in plan.steps}):
        rate = RATES[key]
        console.print(f"  {key}: {rate.per_s:,.1f} {rate.unit} ({rate.source})")
    for task, numbers in plan.paper.items():
        console.print(f"paper: {task} " + ", ".join(f"{k} {v:g}" for k, v in numbers.items()))


def as_script(plan: Recipe) -> str:
    """The recipe as a bash script: each step's cost as a comment, then its command on one line. Unlike --run,
    it does not skip steps already done or resume an interrupted run."""
    from decembert_cli.recipes import RATES

    lines = ["#!/usr/bin/env bash", f"# decembert recipe {plan.table}: {plan.title}", "set -euo pipefail", ""]
    for number, step in enumerate(plan.steps, 1):
        mark = "" if RATES[step.rate].measured else "~"
        note = f"; {step.note}" if step.note else ""
        disk = _size(step.disk_bytes) if step.disk_bytes else "no new files"
        lines.append(f"# {number}. {step.name}: {mark}{step.hours:,.1f} h on one H200, {disk}{note}")
        lines.append(step.command())
    return "\n".join(lines) + "\n"


def show_results(console: Console, plan: Recipe) -> None:

    from decembert_cli.recipes import results

    table = titled_table(f"{plan.table}: this run")
    for column in ("row", "metric", "ours", "paper"):
        table.add_column(column, justify="left" if column in ("row", "metric") else "right")
    for row, metric, ours, paper in results(plan):
        table.add_row(row, metric, "-" if ours is None else f"{ours:.2f}", "-" if paper is None else f"{paper:g}")
    console.print(table)


def _size(n: float) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return "-" if n == 0 else f"{n / 1e3:,.0f} kB"
