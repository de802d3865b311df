"""The training engine on the sample corpus: exact resume, accumulation and 2-process DDP equal one process."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch

from decembert_cli import checkpoint as ckpt
from decembert_cli.config import Config, load_config
from decembert_cli.data.sample.corpus import generate
from decembert_cli.engine.loop import TrainResult
from decembert_cli.engine.pretrain import PretrainSetup, prepare, pretrain
from decembert_cli.errors import DecembertError

DIM = 16


@pytest.fixture(scope="module")
def sample_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("engine") / "sample", videos=12, feature_dim_2d=DIM, feature_dim_3d=DIM)


def _config(root: Path, *extra: str) -> Config:
    return load_config(
        Config,
        "tiny",
        [
            f"data.root={root}",
            f"model.feature_dim_2d={DIM}",
            f"model.feature_dim_3d={DIM}",
            "data.workers=0",
            "data.val_samples=16",
            "train.batch_size=8",
            "train.max_steps=6",
            "train.log_every=1",
            "train.validate_every=0",
            "train.checkpoint_every=3",
            "train.device=cpu",
            *extra,
        ],
    )


def _run(
    root: Path, out: Path, *extra: str, resume: bool = False, stop_after: int | None = None
) -> tuple[TrainResult, PretrainSetup]:
    config = _config(root, *extra)
    setup = prepare(config, "sample", out)
    return pretrain(setup, config, resume=resume, stop_after=stop_after, progress=False), setup


def _step_losses(run_dir: Path) -> dict[int, dict[str, float]]:
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: {k: v for k, v in r.items() if k.startswith("loss")} for r in lines if "split" not in r}


def _final_params(run_dir: Path) -> dict[str, torch.Tensor]:
    return ckpt.load_checkpoint(ckpt.list_checkpoints(run_dir)[-1])["model"]


def test_resume_continues_exactly(sample_root: Path, tmp_path: Path) -> None:
    whole, _ = _run(sample_root, tmp_path / "whole")
    assert whole.steps == 6 and whole.validation["vtm_acc"] >= 0  # validation ran at the end
    part, _ = _run(sample_root, tmp_path / "part", stop_after=3)
    assert part.steps == 3 and [p.name for p in ckpt.list_checkpoints(tmp_path / "part")] == ["step-00000003.pt"]
    assert max(_step_losses(tmp_path / "part")) == 3
    resumed, _ = _run(sample_root, tmp_path / "part", resume=True)
    assert resumed.steps == 6
    a, b = _step_losses(tmp_path / "whole"), _step_losses(tmp_path / "part")
    assert sorted(a) == sorted(b) == [1, 2, 3, 4, 5, 6]
    assert a == b  # same per-step losses (dropout on: RNG states are restored too)
    pa, pb = _final_params(tmp_path / "whole"), _final_params(tmp_path / "part")
    for name in pa:
        assert torch.equal(pa[name], pb[name]), name


def test_an_existing_run_is_never_overwritten(sample_root: Path, tmp_path: Path) -> None:
    _run(sample_root, tmp_path / "run", stop_after=3)
    before = {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}
    with pytest.raises(DecembertError, match="already holds a run; pass --resume"):
        _run(sample_root, tmp_path / "run")
    assert before == {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}
    with pytest.raises(DecembertError, match="no checkpoint to resume from"):
        _run(sample_root, tmp_path / "empty", resume=True)


def test_checkpoint_holds_what_resume_needs(sample_root: Path, tmp_path: Path) -> None:
    _run(sample_root, tmp_path / "run", "train.keep_checkpoints=1")
    paths = ckpt.list_checkpoints(tmp_path / "run")
    assert [p.name for p in paths] == ["step-00000006.pt"]  # older ones pruned
    state = ckpt.load_checkpoint(paths[0])
    assert {"model", "optimizer", "scheduler", "scaler", "step", "rng", "config", "meta"} <= set(state)
    bert_config = state["meta"].pop("bert_config")
    assert state["config"]["data"]["root"] and state["meta"] == {"kind": "pretrain", "corpus": "sample", "world": 1}
    # the encoder's own config
    assert bert_config["hidden_size"] == state["model"]["encoder.bert.embeddings.word_embeddings.weight"].shape[1]
    assert not list((tmp_path / "run" / "checkpoints").glob("*.tmp"))


NO_DROPOUT = ("model.dropout=0.0",)


def test_accumulation_matches_one_big_batch(sample_root: Path, tmp_path: Path) -> None:
    _run(sample_root, tmp_path / "one", *NO_DROPOUT)
    _run(sample_root, tmp_path / "acc", *NO_DROPOUT, "train.accumulation=4")
    _assert_same_training(tmp_path / "one", tmp_path / "acc")


def _assert_same_training(run_a: Path, run_b: Path) -> None:
    """Same per-step losses (to float precision) and the same final weights."""
    a, b = _step_losses(run_a), _step_losses(run_b)
    assert sorted(a) == sorted(b)
    for step in a:
        for key in a[step]:
            assert a[step][key] == pytest.approx(b[step][key], rel=1e-5, abs=1e-6), (step, key)
    pa, pb = _final_params(run_a), _final_params(run_b)
    for name in pa:
        assert torch.allclose(pa[name], pb[name], rtol=1e-4, atol=1e-5), name


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, root: str, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    _run(Path(root), Path(out), *NO_DROPOUT)


def test_two_process_gloo_ddp_matches_one_process(sample_root: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    _run(sample_root, tmp_path / "single", *NO_DROPOUT)
    torch.multiprocessing.spawn(_ddp_worker, args=(2, _free_port(), str(sample_root), str(tmp_path / "ddp")), nprocs=2)
    _assert_same_training(tmp_path / "single", tmp_path / "ddp")
    assert ckpt.load_checkpoint(ckpt.list_checkpoints(tmp_path / "ddp")[-1])["meta"]["world"] == 2


def test_resume_before_the_first_checkpoint_starts_again(sample_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n')  # a run killed before step 3's checkpoint
    result, _ = _run(sample_root, run, resume=True)
    assert result.steps == 6 and sorted(_step_losses(run)) == [1, 2, 3, 4, 5, 6]
    assert _step_losses(run)[1]["loss"] != 1.0


def test_worker_processes_load_the_same_data_and_validation_runs_periodically(
    sample_root: Path, tmp_path: Path
) -> None:
    _run(sample_root, tmp_path / "inline", *NO_DROPOUT)
    _run(sample_root, tmp_path / "workers", *NO_DROPOUT, "data.workers=2", "train.validate_every=2")
    _assert_same_training(tmp_path / "inline", tmp_path / "workers")
    lines = [json.loads(x) for x in (tmp_path / "workers" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if r.get("split") == "val"] == [2, 4, 6]


def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(
    sample_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reference = tmp_path / "reference"
    _run(sample_root, reference, *NO_DROPOUT)
    run = tmp_path / "run"
    _run(sample_root, run, *NO_DROPOUT)
    newest = ckpt.list_checkpoints(run)[-1]
    newest.write_bytes(newest.read_bytes()[:1000])  # step 6: truncated
    orphan = ckpt.checkpoint_dir(run) / ".step-00000006.pt.x1y2.tmp"  # a killed write's leftover
    orphan.write_bytes(b"partial")
    capsys.readouterr()
    result, _ = _run(sample_root, run, *NO_DROPOUT, resume=True)
    err = capsys.readouterr().err
    assert result.steps == 6 and "step-00000006.pt is not a readable decembert checkpoint" in err
    assert "resuming from an older checkpoint" in err and "removed 1 unfinished checkpoint file" in err
    assert "weights_only=False" not in err and not orphan.exists()
    _assert_same_training(reference, run)  # steps 4-6 were trained again from step 3, exactly


def test_a_checkpoint_without_what_resume_needs_is_a_clear_error(sample_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    _run(sample_root, run, "train.max_steps=3")
    state = ckpt.load_checkpoint(ckpt.list_checkpoints(run)[-1])
    del state["optimizer"], state["rng"]
    ckpt.save_checkpoint(ckpt.list_checkpoints(run)[-1], {k: v for k, v in state.items() if k != "format"})
    with pytest.raises(DecembertError, match=r"lacks optimizer, rng: it was not written by decembert"):
        _run(sample_root, run, "train.max_steps=3", resume=True)


def test_a_foreign_pickle_is_refused_without_weights_only_advice(tmp_path: Path) -> None:
    path = tmp_path / "step-00000001.pt"
    torch.save({"format": ckpt.FORMAT, "model": socket.AF_INET}, path)  # an object weights_only loading refuses
    with pytest.raises(ckpt.CorruptCheckpoint) as caught:
        ckpt.load_checkpoint(path)
    assert "not a readable decembert checkpoint" in str(caught.value) and "weights_only" not in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_video_found_bad_while_training_is_skipped_and_counted_unless_strict(
    sample_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    import numpy as np

    root = tmp_path / "corpus"
    shutil.copytree(sample_root, root)
    for name in ("sample_0000", "sample_0001"):  # NaN features: their headers look fine, so the corpus opens
        path = root / "features" / "2d" / f"{name}.npy"
        np.save(path, np.full_like(np.load(path), np.nan))
    result, _ = _run(root, tmp_path / "run", "train.max_steps=4", "train.validate_every=2")
    assert result.steps == 4
    err = capsys.readouterr().err
    assert err.count("note: video sample_0000 skipped for the rest of the run") >= 1 and "NaN" in err
    report = json.loads((tmp_path / "run" / "data_report.json").read_text())
    assert sum(report["skipped_while_training"].values()) == 2 and "sample_0001" in json.dumps(
        report["examples_while_training"]
    )
    with pytest.raises(DecembertError, match=r"video sample_000[01]: .*leave out --strict"):
        config = _config(root, "train.max_steps=4")
        pretrain(prepare(config, "sample", tmp_path / "strict", strict=True), config, progress=False)


def test_compiled_training_equals_eager_and_logs_throughput(sample_root: Path, tmp_path: Path) -> None:
    """train.compile (AOTAutograd graphs of forward and backward; backend aot_eager, which captures the
    graphs inductor would compile, without the minutes of C++ code generation on a CPU) gives the
    losses of the uncompiled run; the log has real tokens/s, and MFU once the peak is known."""
    common = ("model.dropout=0.0", "train.max_steps=3", "train.checkpoint_every=0")
    _run(sample_root, tmp_path / "plain", *common)
    _run(
        sample_root,
        tmp_path / "compiled",
        *common,
        "train.compile=true",
        "train.compile_backend=aot_eager",
        "train.peak_tflops=1",
    )
    plain, compiled = _step_losses(tmp_path / "plain"), _step_losses(tmp_path / "compiled")
    assert sorted(plain) == sorted(compiled) == [1, 2, 3]
    for step, losses in plain.items():
        assert compiled[step] == pytest.approx(losses, rel=1e-5, abs=1e-6), step
    lines = [json.loads(x) for x in (tmp_path / "compiled" / "metrics.jsonl").read_text().splitlines()]
    train_lines = [r for r in lines if "split" not in r]
    assert all(r["tokens_per_s"] > 0 and 0 < r["mfu"] < 1 for r in train_lines)
    plain_lines = [json.loads(x) for x in (tmp_path / "plain" / "metrics.jsonl").read_text().splitlines()]
    assert all("mfu" not in r and r["tflops_per_s"] > 0 for r in plain_lines if "split" not in r)  # CPU: no peak


def test_an_unknown_compile_backend_is_one_message_before_anything_is_written(
    sample_root: Path, tmp_path: Path
) -> None:
    with pytest.raises(DecembertError, match=r"train.compile_backend = 'nope'.*inductor"):
        _run(sample_root, tmp_path / "run", "train.compile=true", "train.compile_backend=nope")
    assert not (tmp_path / "run").exists()


def test_bucket_batches_changes_the_batches_of_a_run(sample_root: Path, tmp_path: Path) -> None:
    """train.bucket_batches reaches the sampler: the same run with it draws other batches, so other losses
    (tests/unit/test_sampler.py shows what the batches are)."""
    _run(sample_root, tmp_path / "plain", "train.max_steps=3", "train.checkpoint_every=0")
    _run(sample_root, tmp_path / "bucketed", "train.max_steps=3", "train.checkpoint_every=0", "train.bucket_batches=4")
    plain, bucketed = _step_losses(tmp_path / "plain"), _step_losses(tmp_path / "bucketed")
    assert sorted(plain) == sorted(bucketed) == [1, 2, 3]
    assert any(plain[s]["loss_mlm"] != bucketed[s]["loss_mlm"] for s in plain)


def test_grounding_settings_reach_the_datasets_and_the_model(sample_root: Path, tmp_path: Path) -> None:
    """loss.mlm_on_negatives, data.mask_unit, data.negatives and model.video_positions each reach what they change."""
    paper = ("loss.mlm_on_negatives=true", "data.mask_unit=token", "data.negatives=asr", "model.video_positions=shared")
    default = prepare(_config(sample_root, *paper), "sample", tmp_path / "a")
    changed = prepare(
        _config(
            sample_root,
            "loss.mlm_on_negatives=false",
            "data.mask_unit=concept",
            "data.negatives=video",
            "model.video_positions=separate",
        ),
        "sample",
        tmp_path / "b",
    )
    assert default.job.train_data.mlm_on_negatives and not changed.job.train_data.mlm_on_negatives
    assert default.job.val_data is not None and changed.job.val_data is not None
    assert not changed.job.val_data.mlm_on_negatives  # validation scores what training does
    assert (default.job.train_data.config.mask_unit, changed.job.train_data.config.mask_unit) == ("token", "concept")
    assert changed.job.train_data.config.negatives == "video"
    assert default.job.model.encoder.video_positions is None
    assert changed.job.model.encoder.video_positions is not None
