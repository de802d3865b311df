"""TensorBoard and W&B logging: the same scalars as metrics.jsonl, images of validation, resume, clear errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from decembert_cli.engine.loop import TrainResult
from decembert_cli.engine.pretrain import PretrainSetup, prepare, pretrain
from decembert_cli.engine.run_log import RunLog, scalars
from decembert_cli.errors import DecembertError
from decembert_cli.viz.attention import validation_pictures
from tests.integration.test_pretrain_engine import _config
from tests.integration.test_pretrain_engine import sample_root as sample_root  # the module's 12-video corpus


def _run(
    root: Path, out: Path, *extra: str, resume: bool = False, stop_after: int | None = None
) -> tuple[TrainResult, PretrainSetup]:
    """A pre-training run with the validation pictures `decembert pretrain` gives it."""
    config = _config(root, *extra)
    setup = prepare(config, "sample", out)
    setup.job.pictures = validation_pictures((config, setup.table, setup.shown_video, setup.tokenizer))
    return pretrain(setup, config, resume=resume, stop_after=stop_after, progress=False), setup


def _events(folder: Path) -> tuple[dict[str, dict[int, float]], list[str]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    values = {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in events.Tags()["scalars"]}
    return values, events.Tags()["images"]


def _jsonl(run_dir: Path) -> dict[str, dict[int, float]]:
    out: dict[str, dict[int, float]] = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        for tag, value in scalars(record).items():
            out.setdefault(tag, {})[record["step"]] = value
    return out


def test_tensorboard_holds_the_scalars_of_metrics_jsonl(sample_root: Path, tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    run = tmp_path / "run"
    _run(sample_root, run, "train.log_to=[jsonl,tensorboard]", "train.validate_every=3")
    values, images = _events(run / "tensorboard")
    expected = _jsonl(run)
    assert "train/loss" in expected and "val/vtm_acc" in expected and len(expected["train/loss"]) == 6
    assert values.keys() == expected.keys()
    for tag, points in expected.items():
        assert values[tag] == pytest.approx(points, rel=1e-6), tag  # event files keep float32
    assert sorted(images) == ["val/attention", "val/metrics"]  # the validation table and Figure 4


def test_a_resumed_run_continues_its_event_files_without_duplicates(sample_root: Path, tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    run = tmp_path / "run"
    _run(sample_root, run, "train.log_to=[tensorboard]", stop_after=3)
    _run(sample_root, run, "train.log_to=[tensorboard]", resume=True)
    values, _ = _events(run / "tensorboard")
    assert sorted(values["train/loss"]) == [1, 2, 3, 4, 5, 6]
    assert values["train/loss"] == pytest.approx(_jsonl(run)["train/loss"], rel=1e-6)


def test_wandb_offline_writes_its_run_folder(
    sample_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = tmp_path / "run"
    _run(sample_root, run, "train.log_to=[wandb]")
    assert list((run / "wandb").glob("offline-run-*/run-*.wandb")), sorted((run / "wandb").rglob("*"))


def test_unknown_or_missing_sinks_are_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DecembertError, match="train.log_to: unknown 'mlflow'"):
        RunLog(tmp_path, True, ("jsonl", "mlflow"))
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed: importing it raises ImportError
    with pytest.raises(
        DecembertError, match=r"includes wandb, but wandb is not installed: pip install 'decembert\[wandb\]'"
    ):
        RunLog(tmp_path, True, ("wandb",))


def test_shares_read_back_in_percent_whichever_way_the_line_was_written(tmp_path: Path) -> None:
    """Validation lines carry `"percent": true` (shares in per cent, as the paper and the tasks); a line
    written before that mark held pre-training shares as fractions and reads back the same."""
    from decembert_cli.engine.run_log import last_validation
    from decembert_cli.viz.report import read_log

    old = {"step": 4, "split": "val", "mlm_acc_asr": 0.25, "argmax_u_offset-1": 0.5, "loss_mlm": 0.5, "entropy": 0.5}
    new = {"step": 8, "split": "val", "percent": True, "mlm_acc_asr": 25.0, "argmax_u_offset-1": 50.0, "loss_mlm": 0.5}
    for line in (old, new):
        run = tmp_path / str(line["step"])
        run.mkdir()
        (run / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 0.75}) + "\n" + json.dumps(line) + "\n")
        found = last_validation(run)
        assert found["mlm_acc_asr"] == 25.0 and found["argmax_u_offset-1"] == 50.0 and found["loss_mlm"] == 0.5
        assert "percent" not in found and found.get("entropy", 0.5) == 0.5  # losses and the entropy keep their units
        rows = read_log(run)
        assert rows[0] == {"step": 1, "loss": 0.75} and rows[1]["mlm_acc_asr"] == 25.0
