"""msrvtt-qa: vocabulary, out-of-vocabulary rules, metrics by hand, and finetune/evaluate through the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import torch
from typer.testing import CliRunner

from decembert_cli.app import app
from decembert_cli.config import ModelConfig
from decembert_cli.data.batch import VideoTextBatch
from decembert_cli.protocols import HeadOutput
from decembert_tasks.qa import MSRVTTQA, MSRVTTQAConfig, QAMetric

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

runner = CliRunner()
DIM = 16


@pytest.fixture(scope="module")
def sample_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("qa") / "corpus"
    result = runner.invoke(
        app, ["sample-data", str(root), "--videos", "12", "--clips", "40", "--feature-dim", str(DIM), "--no-render"]
    )
    assert result.exit_code == 0, result.output
    return root


def _sets(*pairs: str) -> list[str]:
    return [x for p in pairs for x in ("--set", p)]


def _model(**kw: Any) -> ModelConfig:
    return ModelConfig(arch="tiny", init="none", feature_dim_2d=DIM, feature_dim_3d=DIM, **kw)


def test_metric_by_hand_out_of_vocabulary_answers_count_as_wrong() -> None:
    metric = QAMetric(["couch", "man", "run"])
    logits = torch.tensor([[5.0, 0, 0], [0, 5.0, 0], [0, 0, 5.0], [5.0, 0, 0]])  # predicts couch, man, run, couch
    extras: dict[str, Any] = {
        "answer": torch.tensor([0, 0, 2, -1]),
        "answer_text": ["couch", "couch", "run", "sofa"],
        "qid": torch.tensor([1, 2, 3, 4]),
        "qtype": ["what", "who", "what", "what"],
        "video_id": ["video1"] * 4,
        "question": ["q"] * 4,
    }
    batch = VideoTextBatch(*(torch.zeros(1),) * 7, extras=extras)
    metric.update(HeadOutput({"logits": logits}), batch)
    out = metric.compute()
    assert out["accuracy"] == 50.0  # 2 of 4: the out-of-vocabulary "sofa" counts, as wrong
    assert out["accuracy_what"] == pytest.approx(200 / 3) and out["accuracy_who"] == 0.0 and out["oov_share"] == 25.0
    assert [p["prediction"] for p in metric.predictions()] == ["couch", "man", "run", "couch"]


def test_training_drops_out_of_vocabulary_answers_evaluation_keeps_them(
    sample_root: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    config = MSRVTTQAConfig(root=str(sample_root / "msrvtt"), answers=5)
    task = MSRVTTQA(config)
    adapter = task.adapter()
    vocab = adapter.vocabulary()
    assert len(vocab) == 5
    train = adapter.dataset("train", tokenizer, _model(), train=True)
    assert 0 < len(train) < len(adapter.items("train")) and all(q.answer in vocab for q in train.items)
    test = adapter.dataset("test", tokenizer, _model(), train=False)
    assert len(test) == len(adapter.items("test"))
    answers = [test[(0, i)].extras["answer"] for i in range(len(test))]
    assert -1 in answers and all(
        a == (vocab.index(q.answer) if q.answer in vocab else -1) for a, q in zip(answers, test.items)
    )
    sample = test[(0, 0)]
    kinds = [int(seg.kind) for seg in sample.segments]
    assert kinds[-1] == 0 and 1 in kinds  # the question last (ASR type), dense captions before it
    (sample_root / "msrvtt" / "features" / "2d" / "video39.npy").rename(sample_root / "moved.npy")
    try:
        from decembert_cli.errors import DecembertError

        with pytest.raises(DecembertError, match="lack features .* every evaluation question counts"):
            adapter.dataset("test", tokenizer, _model(), train=False)
    finally:
        (sample_root / "moved.npy").rename(sample_root / "msrvtt" / "features" / "2d" / "video39.npy")


def test_finetune_then_evaluate_through_the_cli(sample_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "qa"
    sets = _sets(
        f"task.root={sample_root / 'msrvtt'}",
        f"model.feature_dim_2d={DIM}",
        f"model.feature_dim_3d={DIM}",
        "model.arch=tiny",
        "model.init=none",
        "train.max_steps=4",
        "train.batch_size=8",
        "train.device=cpu",
    )
    result = runner.invoke(app, ["finetune", "msrvtt-qa", *sets, "--out", str(run)])
    assert result.exit_code == 0, result.output
    trained = result.output
    payload = torch.load(run / "checkpoints" / "step-00000004.pt", weights_only=True)
    assert payload["meta"]["task"] == "msrvtt-qa" and payload["meta"]["task_version"] == "1.0"
    assert len(payload["meta"]["task_state"]["answers"]) > 10
    result = runner.invoke(app, ["evaluate", "msrvtt-qa", "--checkpoint", str(run)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "eval-test" / "metrics.json").read_text())
    questions = json.loads((sample_root / "msrvtt" / "test_qa.json").read_text())
    assert (
        metrics["split"] == "test" and metrics["items"] == len(questions) and 0 <= metrics["metrics"]["accuracy"] <= 100
    )
    lines = (run / "eval-test" / "predictions.jsonl").read_text().splitlines()
    assert sorted(json.loads(x)["id"] for x in lines) == sorted(q["id"] for q in questions)

    # one scoring path: fine-tuning's validation is evaluate on the val split (same items, metric and units)
    logged = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    (validation,) = [
        {k: v for k, v in x.items() if k not in ("step", "split", "percent")} for x in logged if x.get("split") == "val"
    ]
    evaluated = runner.invoke(
        app, ["evaluate", "msrvtt-qa", "--checkpoint", str(run), "--split", "val", "--batch-size", "8"]
    )
    assert evaluated.exit_code == 0, evaluated.output
    on_val = json.loads((run / "eval-val" / "metrics.json").read_text())
    assert on_val["items"] == len(json.loads((sample_root / "msrvtt" / "val_qa.json").read_text()))
    assert validation == on_val["metrics"]  # the same numbers, in percent (oov_share 62.5, not 0.625)
    assert f"validation at step 4: accuracy {validation['accuracy']:.2f}" in trained

    # a checkpoint of another task, or of an incompatible plugin version, is refused with one message
    from decembert_cli.checkpoint import save_checkpoint

    for change, needle in (
        ({"task": "msrvtt-retrieval"}, "fine-tuned for task 'msrvtt-retrieval', not 'msrvtt-qa'"),
        ({"task_version": "2.3"}, "was made by msrvtt-qa 2.3"),
        # relabelled: its tensors are not a pre-training model's, which the checkpoint's check finds first
        ({"kind": "pretrain"}, "bad.pt: no tensor mlm.bias"),
    ):
        bad = dict(payload)
        bad.pop("format")
        bad["meta"] = {**payload["meta"], **change}
        save_checkpoint(tmp_path / "bad.pt", bad)
        result = runner.invoke(app, ["evaluate", "msrvtt-qa", "--checkpoint", str(tmp_path / "bad.pt")])
        assert result.exit_code == 2 and needle in result.output, result.output


def test_finetune_starts_from_the_pretrained_encoder(sample_root: Path, tmp_path: Path) -> None:
    from decembert_cli.engine.finetune import prepare

    pre = tmp_path / "pre"
    sets = _sets(
        f"data.root={sample_root}",
        f"model.feature_dim_2d={DIM}",
        f"model.feature_dim_3d={DIM}",
        "data.workers=0",
        "train.batch_size=8",
        "train.max_steps=2",
        "train.device=cpu",
    )
    result = runner.invoke(app, ["pretrain", "--data", "sample", "--config", "tiny", *sets, "--out", str(pre)])
    assert result.exit_code == 0, result.output
    setup = prepare("msrvtt-qa", None, [f"task.root={sample_root / 'msrvtt'}"], tmp_path / "ft", pre)
    state = torch.load(pre / "checkpoints" / "step-00000002.pt", weights_only=True)["model"]
    mine = setup.job.model.encoder.state_dict()
    assert setup.config.model.arch == "tiny" and setup.config.model.feature_dim_2d == DIM  # from the checkpoint
    assert all(torch.equal(mine[k[len("encoder.") :]], v) for k, v in state.items() if k.startswith("encoder."))
    result = runner.invoke(
        app, ["finetune", "msrvtt-qa", "--checkpoint", str(tmp_path / "ft-none"), "--set", f"task.root={sample_root}"]
    )
    assert result.exit_code == 2 and "not found" in result.output


def test_a_train_section_in_a_config_file_keeps_the_fine_tuning_defaults(tmp_path: Path) -> None:
    from decembert_cli.config import load_config
    from decembert_cli.engine.finetune import config_class

    (tmp_path / "ft.yaml").write_text("train:\n  lr: 5.0e-5\ntask:\n  answers: 1000\n")
    cfg = load_config(config_class(MSRVTTQA), str(tmp_path / "ft.yaml"))
    assert (cfg.train.lr, cfg.train.epochs, cfg.train.validate_every, cfg.task.answers) == (5e-5, 10.0, 0, 1000)


def test_print_config_shows_the_task_keys_without_reading_data(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["finetune", "msrvtt-qa", "--print-config", "--set", "task.answers=7", "--out", str(tmp_path / "run")]
    )
    assert result.exit_code == 0, result.output
    assert "answers: 7" in result.output and "epochs: 10.0" in result.output and not (tmp_path / "run").exists()


def test_train_fraction_cuts_the_training_split_only(sample_root: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    root = str(sample_root / "msrvtt")
    full, part = (
        MSRVTTQA(MSRVTTQAConfig(root=root)).adapter(),
        MSRVTTQA(MSRVTTQAConfig(root=root, train_fraction=0.25)).adapter(),
    )
    train_full, train_part = (a.dataset("train", tokenizer, _model(), train=True) for a in (full, part))
    videos_full, videos_part = ({q.video_id for q in d.items} for d in (train_full, train_part))
    assert videos_part < videos_full and len(videos_part) == -(-len(videos_full) // 4)  # ceil(25%) of the videos
    assert all(q.video_id in videos_part for q in train_part.items)  # every question of a kept video
    for split in ("val", "test"):  # scored splits are never cut, even when read as training data
        assert len(part.dataset(split, tokenizer, _model(), train=True)) == len(
            full.dataset(split, tokenizer, _model(), train=True)
        )


def test_training_videos_without_features_are_reported_or_stop_with_strict(
    sample_root: Path, tokenizer: PreTrainedTokenizerBase, capsys: pytest.CaptureFixture[str]
) -> None:
    from decembert_cli.errors import DecembertError

    root = sample_root / "msrvtt"
    video = MSRVTTQA(MSRVTTQAConfig(root=str(root))).adapter().items("train")[0].video_id
    moved = root / "features" / "2d" / f"{video}.npy"
    moved.rename(sample_root / "moved.npy")
    try:
        data = MSRVTTQA(MSRVTTQAConfig(root=str(root))).adapter().dataset("train", tokenizer, _model(), train=True)
        assert video not in {q.video_id for q in data.items}
        err = capsys.readouterr().err
        assert "note: train split: 1 of" in err and f"(first: {video}); their items are left out" in err
        strict = MSRVTTQA(MSRVTTQAConfig(root=str(root), require_features=True)).adapter()
        with pytest.raises(
            DecembertError, match=rf"train split: 1 of \d+ videos lack features .*first: {video}.*run without --strict"
        ):
            strict.dataset("train", tokenizer, _model(), train=True)
        result = CliRunner().invoke(
            app,
            [
                "finetune",
                "msrvtt-qa",
                "--strict",
                "--set",
                f"task.root={root}",
                "--set",
                "model.arch=tiny",
                "--set",
                "model.init=none",
                "--out",
                str(sample_root.parent / "strict-run"),
            ],
        )
        assert (
            result.exit_code == 2
            and "lack features" in result.output
            and not (sample_root.parent / "strict-run").exists()
        )
    finally:
        (sample_root / "moved.npy").rename(moved)
