"""`decembert recipe`: the chain behind a paper table, its cost, and the resumable runner."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from decembert_cli import recipes
from decembert_cli.app import app
from decembert_cli.errors import DecembertError

runner = CliRunner()


def test_table6_dry_run_prints_the_chain_and_the_estimate(tmp_path: Path) -> None:
    result = runner.invoke(app, ["recipe", "table6", "--dry-run", "--root", str(tmp_path)], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    for row in ("mlm-matching", "neighbours", "dense", "full"):  # cumulative, as the paper's rows
        assert f"pretrain:{row}" in out
    assert "data.use_dense=false" in out and "loss.constrained_lambda=0" in out and "data.neighbours=0" in out
    assert "extract-features" in out and "dense-caption" in out and "data index howto100m" in out
    assert "total:" in out and "hours" in out and "an estimate" in out
    assert "measured: H200" in out  # the pre-training rate's source
    assert not (tmp_path / "runs").exists()  # a dry run writes nothing


def test_through_a_pipe_every_command_is_whole_and_the_script_parses(tmp_path: Path) -> None:
    import os
    import shlex
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}  # as `decembert recipe table6 | cat` runs
    args = [sys.executable, "-m", "decembert_cli", "recipe", "table6", "--root", str(tmp_path)]
    piped = subprocess.run(args, env=env, capture_output=True, text=True, check=True).stdout
    plan = recipes.build("table6", tmp_path, None, "paper", [])
    assert all(step.command() in piped for step in plan.steps) and "…" not in piped
    script = subprocess.run([*args, "--script"], env=env, capture_output=True, text=True, check=True).stdout
    assert script.startswith("#!/usr/bin/env bash\n")
    commands = [shlex.split(line) for line in script.splitlines() if line and not line.startswith(("#", "set "))]
    assert [shlex.join(c) for c in commands] == [step.command() for step in plan.steps]
    cli: Any = typer.main.get_command(app)  # typer's own copy of click: its classes, not click's
    for command in commands:  # each line parses as the CLI would parse it (options, types), without running
        assert command[0] == "decembert"
        sub, name, words = cli, "decembert", command[1:]
        parent = cli.context_class(cli, info_name=name)
        while hasattr(sub, "list_commands"):  # a group: decembert, decembert data
            if sub is not cli:
                parent = sub.context_class(sub, info_name=name, parent=parent)
            name, words = words[0], words[1:]
            sub = sub.get_command(parent, name)
            assert sub is not None, command
        with sub.make_context(name, list(words), parent=parent):
            pass


def test_unknown_table_lists_the_known_ones() -> None:
    result = runner.invoke(app, ["recipe", "table9"])
    assert result.exit_code == 2
    assert "unknown table 'table9'" in result.stderr
    for name in ("table1", "table2", "table3", "table4", "table5", "table6", "table7"):
        assert name in result.stderr


@pytest.mark.parametrize("table", sorted(recipes.TABLES))
def test_every_step_is_a_valid_command_line(tmp_path: Path, table: str) -> None:
    """Each command parses with the real CLI (options exist, arguments fit), so the chain cannot drift from it."""
    cli = typer.main.get_command(app)
    plan = recipes.build(table, tmp_path)
    assert plan.steps and len({s.name for s in plan.steps}) == len(plan.steps)
    for step in plan.steps:
        ctx = cli.make_context("decembert", list(step.args), resilient_parsing=False)
        name, command, rest = cli.resolve_command(ctx, list(step.args))
        while hasattr(command, "resolve_command"):  # a group (typer's own click classes): descend
            ctx = command.make_context(name, rest, parent=ctx)
            name, command, rest = command.resolve_command(ctx, rest)
        assert command is not None, step.args
        command.make_context(name, rest, parent=ctx)  # raises on an unknown option or a missing argument


def test_estimates_follow_the_config_and_the_measured_rate(tmp_path: Path) -> None:
    paper = recipes.build("table5", tmp_path)
    step = next(s for s in paper.steps if s.name == "pretrain:full")
    # the paper preset: 20 epochs of one clip per video over 1.22M videos at the measured 1,010.5 samples/s
    assert step.work == pytest.approx(20 * 1_220_000)
    assert step.hours == pytest.approx(20 * 1_220_000 / 1010.5 / 3600)
    clips = recipes.build("table5", tmp_path, overrides=["train.epoch_unit=clip", "train.epochs=1"])
    assert next(s for s in clips.steps if s.name == "pretrain:full").work == pytest.approx(136_000_000)
    assert paper.paper == {"msrvtt-qa": {"accuracy": 37.4}}
    assert not paper.all_measured()


def _dataset_folders(root: Path) -> None:
    for name in ("howto100m", "msrvtt", "youcook2"):
        (root / name / "videos").mkdir(parents=True)


def test_run_resumes_after_a_failure_and_continues_interrupted_training(tmp_path: Path) -> None:
    _dataset_folders(tmp_path)
    plan = recipes.build("table5", tmp_path)
    calls: list[list[str]] = []

    def fail_at_finetune(args: list[str]) -> int:
        calls.append(args)
        if args[0] == "finetune":
            (tmp_path / "runs" / "msrvtt-qa" / "checkpoints").mkdir(parents=True)  # it got as far as a checkpoint
            return 1
        return 0

    with pytest.raises(DecembertError, match="step finetune:msrvtt-qa failed"):
        recipes.run(plan, runner=fail_at_finetune, announce=lambda _: None)
    names = [s.name for s in plan.steps]
    finetune_at = names.index("finetune:msrvtt-qa")
    assert [c[0] for c in calls] == [s.args[0] for s in plan.steps[: finetune_at + 1]]
    state = json.loads((tmp_path / "runs" / recipes.STATE_FILE).read_text())
    assert sorted(state["done"]) == sorted(names[:finetune_at])

    calls.clear()
    recipes.run(plan, runner=lambda args: calls.append(args) or 0, announce=lambda _: None)
    assert calls[0] == [*plan.steps[finetune_at].args, "--resume"]  # continues the interrupted run
    assert [c[0] for c in calls[1:]] == ["evaluate"]
    calls.clear()
    recipes.run(plan, runner=lambda args: calls.append(args) or 0, announce=lambda _: None)
    assert calls == []  # everything done

    # a finished step recorded with another command is refused, not silently reused
    other = recipes.build("table5", tmp_path, overrides=["train.epochs=1"])
    with pytest.raises(DecembertError, match="use another --runs folder"):
        recipes.run(other, runner=lambda args: 0, announce=lambda _: None)


def test_run_checks_inputs_first_and_skip_names_steps(tmp_path: Path) -> None:
    plan = recipes.build("table3", tmp_path)
    with pytest.raises(DecembertError, match="missing input .*howto100m/videos"):
        recipes.run(plan, runner=lambda args: pytest.fail("nothing may run"), announce=lambda _: None)
    with pytest.raises(DecembertError, match="--skip features:nope: recipe table3 has no such step"):
        recipes.run(plan, runner=lambda args: 0, skip=["features:nope"], announce=lambda _: None)
    assert not (tmp_path / "runs").exists()


def test_results_put_the_runs_numbers_beside_the_papers(tmp_path: Path) -> None:
    plan = recipes.build("table5", tmp_path)
    assert recipes.results(plan) == [("msrvtt-qa", "accuracy", None, 37.4)]
    out = tmp_path / "runs" / "msrvtt-qa" / "eval-test"
    out.mkdir(parents=True)
    (out / "metrics.json").write_text(json.dumps({"metrics": {"accuracy": 31.25}}))
    assert recipes.results(plan) == [("msrvtt-qa", "accuracy", 31.25, 37.4)]
    ablation = recipes.build("table6", tmp_path)
    run = tmp_path / "runs" / "pretrain-neighbours"
    run.mkdir(parents=True)
    # a log written before validation lines were marked `percent` held the shares as fractions
    lines = [{"step": 5, "loss": 1.0}, {"step": 10, "split": "val", "mlm_acc_asr": 0.5, "vtm_acc": 0.75}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    marked = tmp_path / "runs" / "pretrain-dense"
    marked.mkdir(parents=True)
    line = {"step": 10, "split": "val", "percent": True, "mlm_acc_asr": 41.5, "vtm_acc": 0.5, "loss_mlm": 0.25}
    (marked / "metrics.jsonl").write_text(json.dumps(line) + "\n")
    rows = {(r, m): (ours, paper) for r, m, ours, paper in recipes.results(ablation)}
    assert rows[("neighbours", "mlm_acc_asr")] == (50.0, 48.42) and rows[("neighbours", "vtm_acc")] == (75.0, 78.90)
    assert rows[("dense", "mlm_acc_asr")] == (41.5, 49.78) and rows[("dense", "vtm_acc")] == (0.5, 80.02)
    assert rows[("neighbours", "mlm_acc_dense")] == (None, None) and rows[("full", "vtm_acc")] == (None, 80.32)


def test_a_table_title_stays_on_one_line_in_a_pipe_and_on_a_terminal() -> None:
    """A title longer than the columns under it (evaluate's "task, split, items (seconds)") is not wrapped."""
    import io

    from rich.console import Console

    from decembert_cli.commands._options import UNBOUNDED_WIDTH, titled_table

    title = "msrvtt-qa, test split, 96 items (5.1 s)"
    for width in (UNBOUNDED_WIDTH, 80):  # a pipe (make_console), a terminal
        table = titled_table(title)
        table.add_column("metric")
        table.add_column("value")
        table.add_row("accuracy", "34.38")
        out = io.StringIO()
        Console(file=out, width=width).print(table)
        assert out.getvalue().splitlines()[0].strip() == title


def test_table7_fine_tunes_every_cumulative_row_and_scores_the_val_split(tmp_path: Path) -> None:
    plan = recipes.build("table7", tmp_path)
    names = [s.name for s in plan.steps]
    for row, changes in recipes.ABLATIONS.items():
        pretrain = next(s for s in plan.steps if s.name == f"pretrain:{row}")
        assert all(c in pretrain.args for c in changes)
        for task in ("msrvtt-caption", "msrvtt-qa"):
            assert f"finetune:{task}:{row}" in names
            evaluate = next(s for s in plan.steps if s.name == f"evaluate:{task}:{row}")
            assert evaluate.args[evaluate.args.index("--split") + 1] == "val"
            finetune = next(s for s in plan.steps if s.name == f"finetune:{task}:{row}")
            assert str(tmp_path / "runs" / f"pretrain-{row}") in finetune.args
    assert recipes.ABLATIONS["mlm-matching"] == [
        "data.neighbours=0",
        "data.use_dense=false",
        "loss.constrained_lambda=0",
    ]
    out = tmp_path / "runs" / "msrvtt-qa-dense" / "eval-val"
    out.mkdir(parents=True)
    (out / "metrics.json").write_text(json.dumps({"metrics": {"accuracy": 30.0}}))
    rows = {(r, m): (ours, paper) for r, m, ours, paper in recipes.results(plan)}
    assert rows[("msrvtt-qa:dense", "accuracy")] == (30.0, 36.7)
    assert rows[("msrvtt-caption:full", "CIDEr-D")] == (None, 51.2)
    assert rows[("msrvtt-caption:mlm-matching", "BLEU@4")] == (None, 41.3)


def test_downstream_tables_carry_the_papers_numbers(tmp_path: Path) -> None:
    assert recipes.build("table1", tmp_path).paper["msrvtt-caption"]["CIDEr-D"] == 52.3
    assert recipes.build("table2", tmp_path).paper["youcook2-caption"]["BLEU@4"] == 11.92
    assert recipes.build("table3", tmp_path).paper["msrvtt-retrieval"]["t2v_R@1"] == 17.5
    assert recipes.build("table4", tmp_path).paper["youcook2-retrieval"]["t2v_R@10"] == 59.8


def test_a_damaged_state_file_is_named_and_kept(tmp_path: Path) -> None:
    _dataset_folders(tmp_path)
    state = tmp_path / "runs" / recipes.STATE_FILE
    state.parent.mkdir()
    state.write_text("{not json")
    with pytest.raises(DecembertError, match=r"recipe-state.json.*line 1"):
        recipes.run(recipes.build("table5", tmp_path), runner=lambda args: 0, announce=lambda _: None)
    assert state.read_text() == "{not json"  # nothing the user had is overwritten
