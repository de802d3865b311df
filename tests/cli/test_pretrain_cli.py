"""`decembert sample-data` and `decembert pretrain` end to end through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from decembert_cli.app import app

runner = CliRunner()
DIM = 16


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli") / "sample"
    result = runner.invoke(app, ["sample-data", str(root), "--videos", "12", "--feature-dim", str(DIM)])
    assert result.exit_code == 0, result.output
    assert "sample corpus written: 12 videos" in result.output
    return root


def _args(corpus: Path, out: Path, *extra: str) -> list[str]:
    sets = [
        f"data.root={corpus}",
        f"model.feature_dim_2d={DIM}",
        f"model.feature_dim_3d={DIM}",
        "data.workers=0",
        "train.batch_size=8",
        "train.max_steps=4",
        "train.log_every=2",
        "train.device=cpu",
    ]
    return [
        "pretrain",
        "--data",
        "sample",
        "--config",
        "tiny",
        *[x for s in sets for x in ("--set", s)],
        "--out",
        str(out),
        *extra,
    ]


def test_pretrain_runs_and_reports_table6(corpus: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, _args(corpus, tmp_path / "run"))
    assert result.exit_code == 0, result.output
    for label in (
        "MLM accuracy, ASR tokens",
        "MLM accuracy, dense-caption tokens",
        "video-text matching accuracy",
        "alignment accuracy",
    ):
        assert label in result.output
    run = tmp_path / "run"
    assert (run / "config.yaml").is_file() and (run / "checkpoints" / "step-00000004.pt").is_file()
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if "split" not in r] == [2, 4]
    assert lines[-1]["split"] == "val" and lines[-1]["percent"] is True and 0 <= lines[-1]["vtm_acc"] <= 100
    assert json.loads((run / "data_report.json").read_text())["videos_used"] == 12

    again = runner.invoke(app, _args(corpus, run))
    assert again.exit_code == 2 and "already holds a run; pass --resume" in again.output
    resumed = runner.invoke(app, _args(corpus, run, "--resume"))
    assert resumed.exit_code == 0, resumed.output

    with open(run / "metrics.jsonl", "a", encoding="utf-8") as handle:
        handle.write('{"step": 5, "loss": 1.')  # a crash mid-write
    shown = runner.invoke(app, ["visualize", "run", str(run), "--out", str(tmp_path / "curves")])
    assert shown.exit_code == 0 and "incomplete last line" in shown.output, shown.output
    again = runner.invoke(app, _args(corpus, run, "--resume"))
    assert again.exit_code == 0 and "incomplete last line" in again.output, again.output
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]  # the torn line is gone
    assert [r["step"] for r in rows if "split" not in r] == [2, 4]


def test_lambda_zero_still_reports_the_constrained_loss(corpus: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, _args(corpus, tmp_path / "run", "--set", "loss.constrained_lambda=0"))
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert "loss_constrained" not in lines[0] and "constrained_loss" in lines[-1]


def test_lambda_warmup_and_epoch_unit_reach_the_run(corpus: Path, tmp_path: Path) -> None:
    sets = [
        "loss.constrained_lambda=2",
        "loss.constrained_warmup=4",
        "train.max_steps=4",
        "train.log_every=1",
        "train.epoch_unit=video",
        "train.validate_every=2",
    ]
    result = runner.invoke(app, _args(corpus, tmp_path / "run", *[x for s in sets for x in ("--set", s)]))
    assert result.exit_code == 0, result.output
    assert "items per epoch: one per video" in " ".join(result.output.split())
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in lines if "split" not in r]
    assert [r["weight_constrained"] for r in train] == [0.5, 1.0, 1.5, 2.0]  # lambda ramps over 4 steps
    assert all(r["weight_mlm"] == r["weight_vtm"] == 1.0 for r in train)
    # 11 of the 12 videos train: an epoch is 11 items, one step of 8 (the rest is dropped)
    assert [r["epoch"] for r in train] == [1.0, 2.0, 3.0, 4.0]
    val = [r for r in lines if r.get("split") == "val"]
    assert {"entropy", "argmax_u_offset+0", "alignment_prev_caption"} <= set(val[-1])


def test_a_collapse_is_a_warning_in_the_log_and_on_screen(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from decembert_cli.model import pretraining

    monkeypatch.setattr(pretraining, "COLLAPSE_ENTROPY", 1e9)  # any entropy counts as "near zero"
    monkeypatch.setattr(pretraining, "COLLAPSE_SHARE", 0.0)  # any share counts as "one offset takes all"
    result = runner.invoke(app, _args(corpus, tmp_path / "run"))
    assert result.exit_code == 0, result.output
    assert "warning at step 4: constrained attention collapsed" in " ".join(result.output.split())
    last = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["split"] == "val" and last["warning"].startswith("constrained attention collapsed")


def test_finetuning_refuses_the_video_epoch(corpus: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "finetune",
            "msrvtt-qa",
            "--config",
            "tiny",
            "--set",
            f"task.root={corpus / 'msrvtt'}",
            "--set",
            "train.epoch_unit=video",
            "--out",
            str(tmp_path / "ft"),
        ],
    )
    assert result.exit_code == 2 and "train.epoch_unit = video" in result.output


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--data", "nope"], "unknown corpus 'nope'; installed: howto100m, sample"),
        (["--set", "data.neighbours=-1"], "data.neighbours: -1 is out of range; use a value >= 0"),
        (["--set", "train.batch_size=7", "--set", "train.accumulation=2"], "train.batch_size=7 must be a multiple"),
        (["--set", "train.batch_size=100000"], "fewer than train.batch_size=100000"),
        (["--set", "train.device=gpu"], "train.device=gpu is not a device name"),
        (["--set", "train.precision=fp16"], "train.precision=fp16 needs a GPU"),
        (["--data", "howto100m", "--set", "data.root={tmp}/nothing"], "data.root: folder {tmp}/nothing not found"),
    ],
)
def test_pretrain_user_errors(corpus: Path, tmp_path: Path, extra: list[str], needle: str) -> None:
    extra = [x.replace("{tmp}", str(tmp_path)) for x in extra]
    result = runner.invoke(app, _args(corpus, tmp_path / "run") + extra)
    assert result.exit_code == 2, result.output
    assert needle.replace("{tmp}", str(tmp_path)) in " ".join(result.output.split())
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_howto100m_needs_a_root(tmp_path: Path) -> None:
    result = runner.invoke(app, ["pretrain", "--data", "howto100m", "--config", "tiny", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "data.root is not set" in result.output
