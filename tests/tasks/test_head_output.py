"""A head's output is checked once per run: each mistake a plugin author can make is one error naming the
head class and what is wrong, from `check_task` and from `decembert finetune` alike (no traceback)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from decembert_cli.testing import check_task
from tests.robustness.cli import assert_one_error, plugin_env, run_cli

DIM = 16

# what the broken head's forward returns instead of QAHead's output `out` (a HeadOutput with a batch-mean loss)
MISTAKES = {
    "a-dict": ('{"logits": out.values["logits"], "loss": out.loss}', "returned a dict, not a HeadOutput"),
    "no-loss": ("HeadOutput(out.values)", "returned no loss for a training batch"),
    "per-item-loss": (
        "HeadOutput(out.values, out.loss * torch.ones(len(batch.extras['qid'])))",
        "HeadOutput.loss has shape (4,)",
    ),
    "not-finite": ("HeadOutput(out.values, out.loss * float('nan'))", "HeadOutput.loss is nan"),
    "no-grad": ("HeadOutput(out.values, out.loss.detach())", "HeadOutput.loss has no gradient"),
}


def _plugin(returns: str) -> str:
    """A task plugin: msrvtt-qa whose head returns `returns`."""
    return f"""
import torch
from decembert_cli.api import HeadOutput
from decembert_tasks.qa import MSRVTTQA, QAHead

class BrokenHead(QAHead):
    def forward(self, output, batch):
        out = super().forward(output, batch)
        return {returns}

class Plugin(MSRVTTQA):
    name = "broken-head"

    def head(self, encoder):
        return BrokenHead(encoder.hidden_size, len(self.adapter().vocabulary()))
"""


@pytest.fixture(scope="module")
def sample_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from decembert_cli.data.sample.corpus import generate

    return generate(
        tmp_path_factory.mktemp("sample") / "corpus", videos=8, clips=40, feature_dim_2d=DIM, feature_dim_3d=DIM
    )


@pytest.mark.parametrize("mistake", list(MISTAKES))
def test_check_task_names_the_head_and_the_mistake(
    mistake: str, sample_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    returns, message = MISTAKES[mistake]
    module = f"broken_head_{mistake.replace('-', '_')}"  # a module name of its own: imports are cached
    (tmp_path / f"{module}.py").write_text(_plugin(returns))
    monkeypatch.syspath_prepend(str(tmp_path))
    plugin = importlib.import_module(module).Plugin
    with pytest.raises(AssertionError, match="head BrokenHead") as raised:
        check_task(plugin, {"root": str(sample_root / "msrvtt")}, feature_dims=(DIM, DIM))
    assert message in str(raised.value)


@pytest.mark.parametrize("mistake", list(MISTAKES))
def test_finetune_gives_one_error_naming_the_head(mistake: str, sample_root: Path, tmp_path: Path) -> None:
    returns, message = MISTAKES[mistake]
    env = plugin_env(tmp_path / "plugins", "decembert.tasks", {"broken_head": _plugin(returns)})
    sets = [f"task.root={sample_root / 'msrvtt'}", "model.arch=tiny", "model.init=none", "train.batch_size=4"]
    sets += [f"model.feature_dim_2d={DIM}", f"model.feature_dim_3d={DIM}", "train.max_steps=2"]
    args = ["finetune", "broken-head", "--out", str(tmp_path / "run"), *[a for s in sets for a in ("--set", s)]]
    line = assert_one_error(run_cli(args, tmp_path, env=env), "head BrokenHead")
    assert message in line


def test_tasks_check_runs_the_contract_check_from_the_command_line(tmp_path: Path) -> None:
    returns, message = MISTAKES["no-loss"]
    env = plugin_env(tmp_path / "plugins", "decembert.tasks", {"broken_head": _plugin(returns)})
    done = run_cli(["tasks", "--check"], tmp_path, env=env)
    assert_one_error(done, "installed tasks cannot load or fail the check (broken-head)")
    rows = {line.split("│")[1].strip(): line for line in done.stdout.splitlines() if line.count("│") > 2}
    assert f"fails the contract check: head BrokenHead {message}" in rows["broken-head"]
    assert all(rows[name].rstrip(" │").endswith("ok") for name in rows if name != "broken-head"), done.stdout
    listed = run_cli(["tasks"], tmp_path, env=env)  # without --check: no task is called ok
    assert listed.returncode == 0 and " ok " not in listed.stdout and "loads (--check" in listed.stdout
