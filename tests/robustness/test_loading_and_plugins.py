"""Loading what a run or a user hands over, and plugins that break, through the CLI as a user meets them:

5. loading a checkpoint, an exported folder, a recipe's state or results file validates its type and shape
   first and gives one error naming the file and the field; a non-regular file (a FIFO) is refused at once;
   an export without its tokenizer is refused;
9. a plugin that breaks on import (raising anything, SystemExit and KeyboardInterrupt included) or that is
   not what its group needs is listed as broken with the reason; the other tasks still list and work; the
   exit status says something was broken.

Every case is one subprocess and must end with exit status 2, exactly one `error:` line that names the
problem, and no traceback."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from .cli import assert_one_error, plugin_env, run_cli, tree

DIM = 16
W = "{w}"  # the case's working folder
C = "{c}"  # the sample corpus (shared, read-only)
TIMEOUT = 90  # a case that blocks (a FIFO read before the fix) fails instead of hanging the suite


def _sets(*pairs: str) -> list[str]:
    return [x for p in pairs for x in ("--set", p)]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A sample corpus, a one-step pre-training run, a one-step msrvtt-qa run from it and the exports of both
    (read-only for the cases: each damages copies in its own folder)."""
    from decembert_cli.data.sample.corpus import generate

    home = tmp_path_factory.mktemp("loading")
    corpus = generate(home / "sample", videos=12, feature_dim_2d=DIM, feature_dim_3d=DIM)
    common = ("train.max_steps=1", "train.batch_size=4", "train.device=cpu")
    dims = (f"model.feature_dim_2d={DIM}", f"model.feature_dim_3d={DIM}")
    pre_args = _sets(f"data.root={corpus}", "data.workers=0", *dims, *common)
    commands = [
        ["pretrain", "--data", "sample", "--config", "tiny", *pre_args, "--out", str(home / "pre")],
        ["finetune", "msrvtt-qa", "--checkpoint", str(home / "pre"), *_sets(f"task.root={corpus / 'msrvtt'}", *common)]
        + ["--out", str(home / "qa")],
        ["export", str(home / "pre"), "--out", str(home / "pre-export")],
        ["export", str(home / "qa"), "--out", str(home / "qa-export")],
    ]
    for argv in commands:
        done = run_cli(argv, home)
        assert done.returncode == 0, done.stdout + done.stderr
    return {"corpus": corpus, **{name: home / name for name in ("pre", "qa", "pre-export", "qa-export")}}


def _checkpoint(run: Path) -> Path:
    return next((run / "checkpoints").glob("step-*.pt"))


# ---- damaged model sources: each setup writes W/pre-d (a pre-training source) and W/qa-d (a fine-tuned one)

Setup = Callable[[Path, dict[str, Path]], None]


def _fifos(w: Path, models: dict[str, Path]) -> None:
    for name in ("pre-d", "qa-d"):
        os.mkfifo(w / name)


def _exports(change: Callable[[Path], None]) -> Setup:
    """Copies of both exports, each changed by `change(folder)`."""

    def make(w: Path, models: dict[str, Path]) -> None:
        for kind in ("pre", "qa"):
            folder = Path(shutil.copytree(models[f"{kind}-export"], w / f"{kind}-d"))
            change(folder)

    return make


def _config_json(edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def change(folder: Path) -> None:
        described = json.loads((folder / "config.json").read_text())
        edit(described)
        (folder / "config.json").write_text(json.dumps(described))

    return change


def _without_tokenizer(folder: Path) -> None:
    for path in folder.glob("*"):
        if path.name.startswith(("tokenizer", "vocab", "special_tokens")):
            path.unlink()


def _head_tensor_resized(folder: Path) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(str(folder / "model.safetensors"))
    head = sorted(k for k in state if k.startswith("head."))
    if head:
        state[head[-1]] = torch.zeros(3, 3)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})


def _checkpoints(edit: Callable[[dict], None]) -> Setup:
    """Checkpoint files W/pre-d and W/qa-d: the runs' checkpoints changed by `edit(payload)`."""

    def make(w: Path, models: dict[str, Path]) -> None:
        for kind in ("pre", "qa"):
            payload = torch.load(_checkpoint(models[kind]), weights_only=True)
            edit(payload)
            torch.save(payload, w / f"{kind}-d")

    return make


def _word_embeddings_cut(payload: dict) -> None:
    key = "encoder.bert.embeddings.word_embeddings.weight"
    payload["model"][key] = payload["model"][key][:10].clone()


def _folder_named_like_a_checkpoint(w: Path, models: dict[str, Path]) -> None:
    for kind in ("pre", "qa"):
        checkpoints = w / f"{kind}-d" / "checkpoints"
        checkpoints.mkdir(parents=True)
        (checkpoints / "step-00000001.pt").symlink_to(_checkpoint(models[kind]))
        (checkpoints / "step-00000005.pt").mkdir()  # newer than the real one


FINETUNE = ["finetune", "msrvtt-qa", "--checkpoint", f"{W}/pre-d", *_sets(f"task.root={C}/msrvtt")]
FINETUNE += [*_sets("train.max_steps=1", "train.batch_size=4"), "--out", f"{W}/out"]
EVALUATE = ["evaluate", "msrvtt-qa", "--checkpoint", f"{W}/qa-d", *_sets(f"task.root={C}/msrvtt"), "--out", f"{W}/out"]
EXPORT = ["export", f"{W}/pre-d", "--out", f"{W}/out"]
VISUALIZE = ["visualize", "attention", "--checkpoint", f"{W}/pre-d", "--video", "{video}", *_sets(f"data.root={C}")]
VISUALIZE += ["--out", f"{W}/out/attention.png"]
COMMANDS = {"finetune": FINETUNE, "evaluate": EVALUATE, "export": EXPORT, "visualize": VISUALIZE}

# the same damage given to every command that loads a model: (damage id, setup, what the error line says)
SHARED: list[tuple[str, Setup, str]] = [
    ("fifo", _fifos, "not a regular file"),
    ("export-without-tokenizer", _exports(_without_tokenizer), "without its tokenizer"),
    ("wrongly-shaped-tensor", _checkpoints(_word_embeddings_cut), "has shape (10, 64)"),
    ("folder-named-like-a-checkpoint", _folder_named_like_a_checkpoint, "step-00000005.pt is a folder"),
]
# one damage, one command: (case id, command, setup, needle)
SINGLE: list[tuple[str, str, Setup, str]] = [
    (
        "export-config-without-decembert-section",
        "finetune",
        _exports(_config_json(lambda d: d.pop("decembert"))),
        "config.json: no 'decembert' section",
    ),
    (
        "export-config-not-an-object",
        "evaluate",
        _exports(lambda f: (f / "config.json").write_text("[1, 2]")),
        "config.json: expected a JSON object",
    ),
    (
        "export-hidden-size-0",
        "finetune",
        _exports(_config_json(lambda d: d.update(hidden_size=0))),
        "hidden_size: expected a positive integer, got 0",
    ),
    (
        "export-hidden-size-0-evaluate",
        "evaluate",
        _exports(_config_json(lambda d: d.update(hidden_size=0))),
        "hidden_size: expected a positive integer, got 0",
    ),
    (
        "export-heads-not-dividing",
        "export",
        _exports(_config_json(lambda d: d.update(num_attention_heads=3))),
        "num_attention_heads: 3 does not divide hidden_size 64",
    ),
    ("export-head-tensor-shape", "evaluate", _exports(_head_tensor_resized), "has shape (3, 3)"),
    (
        "export-config-section-a-list",
        "visualize",
        _exports(_config_json(lambda d: d["decembert"].update(config=[1]))),
        "decembert.config: expected",
    ),
    (
        "checkpoint-hidden-size-0",
        "finetune",
        _checkpoints(lambda p: p["meta"]["bert_config"].update(hidden_size=0)),
        "meta.bert_config.hidden_size: expected a positive integer, got 0",
    ),
    ("checkpoint-model-a-list", "export", _checkpoints(lambda p: p.update(model=[1, 2])), "model: expected"),
    ("checkpoint-meta-a-list", "visualize", _checkpoints(lambda p: p.update(meta=[1])), "meta: expected"),
    ("checkpoint-step-a-string", "export", _checkpoints(lambda p: p.update(step="x")), "step: expected"),
    (
        "checkpoint-config-without-model",
        "export",
        _checkpoints(lambda p: p["config"].pop("model")),
        "config.model: expected",
    ),
    (
        "checkpoint-task-not-a-string",
        "evaluate",
        _checkpoints(lambda p: p["meta"].update(task=["msrvtt-qa"])),
        "meta.task: expected",
    ),
]

CASES = [(f"{damage}-{command}", command, setup, needle) for damage, setup, needle in SHARED for command in COMMANDS]
CASES += SINGLE


@pytest.mark.parametrize(("command", "setup", "needle"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_damaged_model_is_one_error_naming_the_file_and_field(
    models: dict[str, Path], tmp_path: Path, command: str, setup: Setup, needle: str
) -> None:
    work = tmp_path / "w"
    work.mkdir()
    setup(work, models)
    corpus = models["corpus"]
    video = sorted((corpus / "features" / "2d").glob("*.npy"))[0].stem
    args = [a.replace(W, str(work)).replace(C, str(corpus)).replace("{video}", video) for a in COMMANDS[command]]
    before = tree(work)
    line = assert_one_error(run_cli(args, work, timeout=TIMEOUT), needle)
    assert str(work) in line, line  # it names the file
    assert tree(work) == before  # refused before anything was written


# ---- recipe state and results files


def _recipe(table: str, *, keep: str = "") -> list[str]:
    """`recipe TABLE --run` with every step skipped but `keep` (whose state entry the case writes)."""
    from decembert_cli.recipes import build

    steps = [s.name for s in build(table, Path("data")).steps if s.name != keep]
    return ["recipe", table, "--root", f"{W}/data", "--runs", f"{W}/runs", "--run", *_skips(steps)]


def _skips(names: list[str]) -> list[str]:
    return [x for n in names for x in ("--skip", n)]


def _state(done: object) -> Callable[[Path], None]:
    def make(w: Path) -> None:
        (w / "runs").mkdir()
        (w / "runs" / "recipe-state.json").write_text(json.dumps({"done": done}))

    return make


def _state_fifo(w: Path) -> None:
    (w / "runs").mkdir()
    os.mkfifo(w / "runs" / "recipe-state.json")


def _qa_metrics(record: object) -> Callable[[Path], None]:
    def make(w: Path) -> None:
        folder = w / "runs" / "msrvtt-qa" / "eval-test"
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps(record))

    return make


def _pretrain_log(text: str) -> Callable[[Path], None]:
    def make(w: Path) -> None:
        (w / "runs" / "pretrain-full").mkdir(parents=True)
        (w / "runs" / "pretrain-full" / "metrics.jsonl").write_text(text)

    return make


RECIPES: list[tuple[str, str, str, Callable[[Path], None], str]] = [
    (
        "state-entry-a-string",
        "table5",
        "features:howto100m",
        _state({"features:howto100m": "yes"}),
        "done.features:howto100m: expected",
    ),
    (
        "state-command-a-number",
        "table5",
        "features:howto100m",
        _state({"features:howto100m": {"command": 5, "seconds": 1}}),
        "done.features:howto100m.command: expected a list of strings",
    ),
    ("state-fifo", "table5", "", _state_fifo, "not a regular file"),
    (
        "results-metric-a-string",
        "table5",
        "",
        _qa_metrics({"split": "test", "metrics": {"accuracy": "high"}}),
        "metrics.accuracy: expected a number",
    ),
    ("results-metrics-a-list", "table5", "", _qa_metrics({"metrics": [1, 2]}), "metrics: expected"),
    (
        "results-log-value-a-string",
        "table6",
        "",
        _pretrain_log('{"step": 1, "split": "val", "vtm_acc": "good"}\n'),
        "vtm_acc: expected a number",
    ),
]


@pytest.mark.parametrize(("table", "keep", "setup", "needle"), [c[1:] for c in RECIPES], ids=[c[0] for c in RECIPES])
def test_a_damaged_recipe_file_is_one_error_naming_it(
    tmp_path: Path, table: str, keep: str, setup: Callable[[Path], None], needle: str
) -> None:
    work = tmp_path / "w"
    work.mkdir()
    setup(work)
    args = [a.replace(W, str(work)) for a in _recipe(table, keep=keep)]
    before = tree(work)
    line = assert_one_error(run_cli(args, work, timeout=TIMEOUT), needle)
    assert str(work / "runs") in line, line
    assert tree(work) == before


# ---- seeds, and the other files a user names (a config, a predictions file)


def test_a_seed_beyond_the_generators_range_is_refused_by_pretrain(models: dict[str, Path], tmp_path: Path) -> None:
    args = ["pretrain", "--data", "sample", "--config", "tiny", *_sets(f"data.root={models['corpus']}")]
    dims = (f"model.feature_dim_2d={DIM}", f"model.feature_dim_3d={DIM}")
    args += [*_sets(f"seed={2**70}", "data.workers=0", *dims), "--out", str(tmp_path / "out")]
    assert_one_error(run_cli(args, tmp_path, timeout=TIMEOUT), f"seed: {2**70} is out of range")


def test_a_negative_seed_is_refused_by_finetune(models: dict[str, Path], tmp_path: Path) -> None:
    args = [
        "finetune",
        "msrvtt-qa",
        *_sets("model.arch=tiny", "model.init=none", f"task.root={models['corpus']}/msrvtt"),
    ]
    args += [*_sets("seed=-1"), "--out", str(tmp_path / "out")]
    assert_one_error(
        run_cli(args, tmp_path, timeout=TIMEOUT), "seed: -1 is out of range; use a value in [0, 4294967295]"
    )


@pytest.mark.parametrize("what", ["config", "predictions"])
def test_a_fifo_named_as_a_config_or_predictions_file_is_refused_at_once(
    models: dict[str, Path], tmp_path: Path, what: str
) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    if what == "config":
        args = ["pretrain", "--data", "sample", "--config", str(fifo), "--out", str(tmp_path / "out")]
    else:
        args = [
            "evaluate",
            "msrvtt-caption",
            "--predictions",
            str(fifo),
            *_sets(f"task.root={models['corpus']}/msrvtt"),
        ]
    line = assert_one_error(run_cli(args, tmp_path, timeout=TIMEOUT), "not a regular file")
    assert str(fifo) in line


# ---- plugins that break


BREAKS = {
    "exits": "import sys\nsys.exit(0)\n",
    "interrupted": "raise KeyboardInterrupt\n",
    "markup": "raise RuntimeError('[/red] a reason with [bold]brackets')\n",
    "not_a_class": "Plugin = 42\n",
}


@pytest.mark.parametrize("name", list(BREAKS))
def test_a_broken_task_plugin_is_listed_with_its_reason_and_the_others_still_list(tmp_path: Path, name: str) -> None:
    env = plugin_env(tmp_path / "plugins", "decembert.tasks", {name: BREAKS[name]})
    done = run_cli(["tasks"], tmp_path, env=env, timeout=TIMEOUT)
    assert_one_error(done, name.replace("_", "-"))
    listed = done.stdout
    assert "msrvtt-qa" in listed and "youcook2-caption" in listed and "broken-pkg" in listed, listed
    reason = {"exits": "SystemExit", "interrupted": "KeyboardInterrupt", "markup": "[/red]", "not_a_class": "class"}
    assert reason[name] in listed, listed


def test_naming_a_broken_task_is_one_error_and_a_healthy_task_still_evaluates(
    models: dict[str, Path], tmp_path: Path
) -> None:
    env = plugin_env(tmp_path / "plugins", "decembert.tasks", {"exits": BREAKS["exits"]})
    done = run_cli(["finetune", "exits", "--out", str(tmp_path / "out")], tmp_path, env=env, timeout=TIMEOUT)
    assert_one_error(done, "task 'exits' from package broken-pkg 0.1 failed to load (SystemExit: 0)")
    args = ["evaluate", "msrvtt-qa", "--checkpoint", str(models["qa"]), *_sets(f"task.root={models['corpus']}/msrvtt")]
    healthy = run_cli([*args, "--out", str(tmp_path / "eval")], tmp_path, env=env, timeout=TIMEOUT)
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert (tmp_path / "eval" / "metrics.json").is_file()


def test_a_corpus_plugin_that_is_not_callable_is_one_error(tmp_path: Path) -> None:
    env = plugin_env(tmp_path / "plugins", "decembert.corpora", {"flat": "Plugin = 42\n"})
    done = run_cli(
        ["pretrain", "--data", "flat", "--config", "tiny", "--out", str(tmp_path / "out")], tmp_path, env=env
    )
    assert_one_error(done, "corpus 'flat' from package broken-pkg 0.1 is an int, which is not callable")
