"""Bad inputs through the CLI as a user would meet them: every command, run as a subprocess.

Each case must end with exit status 2, exactly one `error:` line that names the problem, no Python
traceback, and no file created outside the folder the case allows (`out`)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from decembert_cli.checkpoint import FORMAT
from decembert_cli.data.sample.corpus import generate

from .cli import assert_one_error, run_cli

DIM = 16
W = "{w}"  # the case's working folder
C = "{c}"  # a small sample corpus (shared, read-only)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("robust") / "sample", videos=12, feature_dim_2d=DIM, feature_dim_3d=DIM)


def _write(name: str, text: str) -> Callable[[Path], None]:
    def make(w: Path) -> None:
        (w / name).parent.mkdir(parents=True, exist_ok=True)
        (w / name).write_text(text)

    return make


def _fake_run(w: Path) -> None:  # a run folder: a log and a damaged checkpoint
    (w / "run" / "checkpoints").mkdir(parents=True)
    (w / "run" / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    (w / "run" / "checkpoints" / "step-00000001.pt").write_bytes(b"PK\x03\x04 not really a checkpoint")


def _foreign_pickle(w: Path) -> None:
    torch.save({"format": FORMAT, "model": os.stat_result((0,) * 10)}, w / "evil.pt")


def _howto(captions: str) -> Callable[[Path], None]:
    def make(w: Path) -> None:
        root = w / "h100m"
        for stream in ("2d", "3d"):
            (root / "features" / stream).mkdir(parents=True)
            np.save(root / "features" / stream / "v1.npy", np.zeros((30, DIM), np.float16))
        (root / "caption.json").write_text(captions)

    return make


PRE = [
    "pretrain",
    "--data",
    "sample",
    "--config",
    "tiny",
    "--set",
    f"data.root={C}",
    "--set",
    f"model.feature_dim_2d={DIM}",
    "--set",
    f"model.feature_dim_3d={DIM}",
    "--set",
    "train.max_steps=1",
    "--set",
    "data.workers=0",
    "--out",
    f"{W}/out",
]
HOWTO = [
    "pretrain",
    "--data",
    "howto100m",
    "--config",
    "tiny",
    "--set",
    f"data.root={W}/h100m",
    "--set",
    f"model.feature_dim_2d={DIM}",
    "--set",
    f"model.feature_dim_3d={DIM}",
    "--out",
    f"{W}/out",
]
QA = ["finetune", "msrvtt-qa", "--set", "model.arch=tiny", "--set", "model.init=none", "--out", f"{W}/out"]
CAPTION_EVAL = [
    "evaluate",
    "msrvtt-caption",
    "--set",
    f"task.root={C}/msrvtt",
    "--set",
    "task.meteor=false",
    "--out",
    f"{W}/out",
]
IMPORT = ["dense-caption", f"{W}/dc.json", "--backend", "import", "--out", f"{W}/out"]
JOHNSON = json.dumps(
    {"results": [{"img_name": "v1/1.jpg", "captions": ["a cup"], "boxes": [[1, 2, 3, 4]], "scores": [1.0]}]}
)

# (case id, argv, setup, what the error line must say)
CASES: list[tuple[str, list[str], Callable[[Path], None] | None, str]] = [
    # configuration
    ("lr-negative", [*PRE, "--set", "train.lr=-1"], None, "train.lr: -1 is out of range"),
    ("lr-nan", [*PRE, "--set", "train.lr=.nan"], None, "train.lr: expected a finite number"),
    ("lr-400-digits", [*PRE, "--set", "train.lr=" + "9" * 400], None, "train.lr"),
    ("dropout-one", [*PRE, "--set", "model.dropout=1"], None, "model.dropout: 1 is out of range"),
    ("mask-prob", [*PRE, "--set", "data.mask_prob=2"], None, "data.mask_prob: 2 is out of range"),
    ("batch-zero", [*PRE, "--set", "train.batch_size=0"], None, "train.batch_size: 0 is out of range"),
    ("warmup-negative", [*PRE, "--set", "loss.constrained_warmup=-1"], None, "loss.constrained_warmup"),
    ("unknown-key", [*PRE, "--set", "train.learning_rate=1"], None, "unknown key 'train.learning_rate'"),
    ("set-without-value", [*PRE, "--set", "train.lr"], None, "expected KEY=VALUE"),
    ("wrong-type", [*PRE, "--set", "train.batch_size=many"], None, "train.batch_size: expected an integer"),
    ("literal", [*PRE, "--set", "model.arch=huge"], None, "model.arch: 'huge' is not allowed"),
    ("config-missing", [*PRE, "--config", f"{W}/none.yaml"], None, "none.yaml"),
    ("config-bad-yaml", [*PRE, "--config", f"{W}/bad.yaml"], _write("bad.yaml", "train: [1, 2\n"), "not valid YAML"),
    ("config-a-list", [*PRE, "--config", f"{W}/list.yaml"], _write("list.yaml", "- a\n- b\n"), "must be a mapping"),
    (
        "config-range-line",
        [*PRE, "--config", f"{W}/c.yaml"],
        _write("c.yaml", "seed: 1\ntrain:\n  lr: -2\n"),
        "line 3: train.lr: -2 is out of range",
    ),
    ("text-budget", [*PRE, "--set", "data.neighbours=10"], None, "data.neighbours=10"),
    # pre-training corpora and runs
    ("unknown-corpus", ["pretrain", "--data", "nope", "--out", f"{W}/out"], None, "nope"),
    ("howto-no-root", ["pretrain", "--data", "howto100m", "--out", f"{W}/out"], None, "data.root"),
    ("howto-bad-json", HOWTO, _howto('{"v1": {"start": [1, 2}'), "caption.json, line 1, column"),
    ("howto-deep-json", HOWTO, _howto('{"v1": ' + "[" * 100000 + "]" * 100000 + "}"), "nested too deeply"),
    (
        "howto-huge-number",
        HOWTO,
        _howto('{"v1": {"start": [' + "9" * 400 + '], "end": [2], "text": ["a"]}}'),
        "400-digit number",
    ),
    ("howto-not-object", HOWTO, _howto('["v1"]'), "expected an object"),
    ("resume-nothing", [*PRE, "--resume"], None, "no checkpoint to resume from"),
    ("run-exists", PRE[:-1] + [f"{W}/run"], _fake_run, "already holds a run"),
    ("resume-damaged", PRE[:-1] + [f"{W}/run", "--resume"], _fake_run, "no intact checkpoint"),
    # feature extraction and dense captions
    (
        "extract-bad-decoder",
        ["extract-features", f"{W}/v.txt", "--out", f"{W}/out", "--random-init", "--decoder", "bogus"],
        _write("v.txt", ""),
        "--decoder bogus",
    ),
    (
        "extract-bad-layout",
        ["extract-features", f"{W}/v.txt", "--out", f"{W}/out", "--random-init", "--layout", "bogus"],
        _write("v.txt", ""),
        "layout 'bogus'",
    ),
    (
        "extract-unknown-backbone",
        ["extract-features", f"{W}/v.txt", "--out", f"{W}/out", "--random-init", "--backbone-2d", "no_such_net"],
        _write("v.txt", ""),
        "no_such_net",
    ),
    (
        "extract-out-is-a-file",
        ["extract-features", f"{W}/v.txt", "--out", f"{W}/v.txt", "--random-init"],
        _write("v.txt", ""),
        "v.txt",
    ),
    ("densecap-unknown-backend", [*IMPORT[:3], "nope", *IMPORT[4:]], _write("dc.json", JOHNSON), "nope"),
    ("densecap-import-model", [*IMPORT, "--model", "x"], _write("dc.json", JOHNSON), "the import backend has no model"),
    ("densecap-import-option", [*IMPORT, "--option", "colour=red"], _write("dc.json", JOHNSON), "takes only"),
    (
        "densecap-import-regex",
        [*IMPORT, "--option", "pattern=("],
        _write("dc.json", JOHNSON),
        "not a regular expression",
    ),
    ("densecap-shard", [*IMPORT, "--shard", "3/2"], _write("dc.json", JOHNSON), "shard"),
    # fine-tuning and evaluation
    ("unknown-task", ["finetune", "msrvtt-qq", "--out", f"{W}/out"], None, "msrvtt-qq"),
    ("task-root-unset", QA, None, "task.root is not set"),
    ("task-root-missing", [*QA, "--set", f"task.root={W}/nowhere"], None, "nowhere"),
    (
        "task-fraction-zero",
        [*QA, "--set", f"task.root={C}/msrvtt", "--set", "task.train_fraction=0"],
        None,
        "task.train_fraction: 0 is out of range",
    ),
    (
        "task-video-epoch",
        [*QA, "--set", f"task.root={C}/msrvtt", "--set", "train.epoch_unit=video"],
        None,
        "train.epoch_unit = video",
    ),
    (
        "finetune-garbage-checkpoint",
        [*QA, "--checkpoint", f"{W}/garbage.pt", "--set", f"task.root={C}/msrvtt"],
        _write("garbage.pt", "not a checkpoint"),
        "not a readable decembert checkpoint",
    ),
    (
        "finetune-foreign-pickle",
        [*QA, "--checkpoint", f"{W}/evil.pt", "--set", f"task.root={C}/msrvtt"],
        _foreign_pickle,
        "not a readable",
    ),
    ("finetune-resume-no-out", ["finetune", "msrvtt-qa", "--resume"], None, "--resume needs --out"),
    (
        "evaluate-empty-run",
        ["evaluate", "msrvtt-qa", "--checkpoint", f"{W}/empty"],
        lambda w: (w / "empty").mkdir(),
        "without checkpoints",
    ),
    (
        "predictions-list",
        [*CAPTION_EVAL, "--predictions", f"{W}/p.jsonl"],
        _write("p.jsonl", '["video39", "a man"]\n'),
        "line 1: expected a JSON object",
    ),
    (
        "predictions-torn",
        [*CAPTION_EVAL, "--predictions", f"{W}/p.jsonl"],
        _write("p.jsonl", '{"video_id": "video39", "capt'),
        "line 1, column",
    ),
    (
        "predictions-window-strings",
        [*CAPTION_EVAL, "--predictions", f"{W}/p.jsonl"],
        _write("p.jsonl", '{"video_id": "video39", "window": ["a", "b"], "caption": "x"}\n'),
        '"window" must be',
    ),
    (
        "predictions-unknown-clip",
        [*CAPTION_EVAL, "--predictions", f"{W}/p.jsonl"],
        _write("p.jsonl", '{"video_id": "video9999", "window": null, "caption": "x"}\n'),
        "no clip video9999",
    ),
    (
        "predictions-for-qa",
        ["evaluate", "msrvtt-qa", "--predictions", f"{W}/p.jsonl", "--set", f"task.root={C}/msrvtt"],
        _write("p.jsonl", "{}\n"),
        "cannot score a predictions file",
    ),
    # reading runs
    ("visualize-no-run", ["visualize", "run", f"{W}/nowhere", "--out", f"{W}/out"], None, "not found"),
    (
        "visualize-bad-log",
        ["visualize", "run", f"{W}/run", "--out", f"{W}/out"],
        _write("run/metrics.jsonl", '{"step": 1}\n{"step": 2,,}\n{"step": 3}\n'),
        "line 2, column",
    ),
    ("check-bad-arch", ["check", "--set", "model.arch=huge"], None, "model.arch: 'huge' is not allowed"),
    ("data-check-unknown-task", ["data", "check", "msrvtt-qq"], None, "msrvtt-qq"),
]


def _tree(folder: Path) -> set[Path]:
    return set(folder.rglob("*"))


@pytest.mark.parametrize(("argv", "setup", "needle"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_bad_input_is_one_clear_error(
    corpus: Path, tmp_path: Path, argv: list[str], setup: Callable[[Path], None] | None, needle: str
) -> None:
    work = tmp_path / "w"
    work.mkdir()
    if setup is not None:
        setup(work)
    before = _tree(tmp_path)
    args = [a.replace(W, str(work)).replace(C, str(corpus)) for a in argv]
    done = run_cli(args, work)
    assert_one_error(done, needle)
    assert "weights_only=False" not in done.stdout + done.stderr
    created = _tree(tmp_path) - before
    allowed = work / "out"
    assert all(
        p == allowed or allowed in p.parents or p == work / "run" or work / "run" in p.parents for p in created
    ), sorted(created)


def test_the_suite_covers_at_least_forty_cases_over_every_command() -> None:
    assert len(CASES) >= 40 and len({c[0] for c in CASES}) == len(CASES)
    commands = {c[1][0] for c in CASES}
    assert {
        "pretrain",
        "extract-features",
        "dense-caption",
        "finetune",
        "evaluate",
        "visualize",
        "check",
        "data",
    } <= commands
