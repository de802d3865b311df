"""Captioning tasks: next-token targets, MART paragraphs, finetune/evaluate and scoring a predictions file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch
from typer.testing import CliRunner

from decembert_cli.app import app
from decembert_cli.config import ModelConfig
from decembert_tasks.captioning import MSRVTTCaption, MSRVTTCaptionConfig, YouCook2Caption, YouCook2CaptionConfig

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

runner = CliRunner()
DIM = 16
MODEL = ModelConfig(arch="tiny", init="none", feature_dim_2d=DIM, feature_dim_3d=DIM, dropout=0.0)
needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="caption metrics need Java (.ci/run installs it)")


@pytest.fixture(scope="module")
def sample_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from decembert_cli.data.sample.corpus import generate

    return generate(
        tmp_path_factory.mktemp("cap") / "corpus", videos=8, clips=40, feature_dim_2d=DIM, feature_dim_3d=DIM
    )


def test_each_position_predicts_the_next_caption_token(sample_root: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    from decembert_cli.model import build_encoder

    task = MSRVTTCaption(MSRVTTCaptionConfig(root=str(sample_root / "msrvtt")))
    data = task.dataset("train", tokenizer, MODEL, train=True)
    samples = [data[(0, i)] for i in (0, 25, 50)]
    batch = data.collate(samples)
    encoder, _ = build_encoder(MODEL)
    head = task.head(encoder)
    captured = {}
    original = head.lm.forward
    head.lm.forward = lambda hidden: captured.setdefault("n", hidden.shape[0]) and original(hidden)
    out = head(encoder(batch, **head.encoder_kwargs(batch)), batch)
    caption_ids = [tokenizer(data.pairs[i][1], add_special_tokens=False)["input_ids"][:30] for i in (0, 25, 50)]
    assert captured["n"] == sum(len(c) + 1 for c in caption_ids)  # every caption token and the closing [SEP]
    for s, ids in zip(samples, caption_ids):
        assert s.segments[-1].ids == ids and all(seg.kind == 1 for seg in s.segments[:-1])  # dense captions first
    assert out.loss is not None and torch.isfinite(out.loss) and out.loss > 0


@needs_java
def test_one_caption_for_every_clip_shows_in_distinct_not_hidden_by_bleu(sample_root: Path) -> None:
    task = MSRVTTCaption(MSRVTTCaptionConfig(**MSRVTTCaption.sample_settings(sample_root)))
    metric = task.metric("val")
    n = len(metric.data.clips)
    for i, captions in enumerate(metric.data.captions):
        metric.add(i, captions[0])
    assert metric.compute()["distinct"] == pytest.approx(100.0 * len({c[0] for c in metric.data.captions}) / n)
    metric.reset()
    constant = metric.data.captions[0][0]
    for i in range(n):
        metric.add(i, constant)
    scores = metric.compute()
    assert scores["distinct"] == pytest.approx(100.0 / n)


@needs_java
def test_youcook2_paragraphs_equal_to_the_references_score_full_bleu(sample_root: Path) -> None:
    task = YouCook2Caption(YouCook2CaptionConfig(**YouCook2Caption.sample_settings(sample_root)))
    metric = task.metric("val")
    for i, captions in enumerate(metric.data.captions):
        metric.add(i, captions[0])
    scores = metric.compute()
    assert scores["BLEU@4"] == pytest.approx(100.0) and scores["ROUGE-L"] == pytest.approx(100.0)
    assert 0 <= scores["R@4"] < 100 and metric.protocol()["scoring"] == "MART paragraphs"
    metric.reset()
    metric.add(0, "chop the onion")  # every other video: no prediction, an empty paragraph
    partial = metric.compute()
    assert partial["BLEU@4"] < 1 and partial["R@4"] == 0.0  # R@4 averages over the videos with predictions (as MART)


@needs_java
def test_finetune_evaluate_and_score_the_predictions_file(sample_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "cap"
    sets = [
        f"task.root={sample_root / 'msrvtt'}",
        f"model.feature_dim_2d={DIM}",
        f"model.feature_dim_3d={DIM}",
        "model.arch=tiny",
        "model.init=none",
        "train.max_steps=3",
        "train.batch_size=8",
        "train.device=cpu",
        "task.beam_size=2",
        "task.max_length=5",
        "task.meteor=false",
    ]
    result = runner.invoke(
        app, ["finetune", "msrvtt-caption", *[x for s in sets for x in ("--set", s)], "--out", str(run)]
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["evaluate", "msrvtt-caption", "--checkpoint", str(run), "--batch-size", "3"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "eval-test" / "metrics.json").read_text())
    rows = [json.loads(x) for x in (run / "eval-test" / "predictions.jsonl").read_text().splitlines()]
    # every test clip, against its 20 references
    assert len(rows) == 8 and all(len(r["references"]) == 20 for r in rows)
    assert {"BLEU@4", "ROUGE-L", "CIDEr-D"} <= set(metrics["metrics"]) and "beam 2" in metrics["protocol"]["decoding"]
    again = runner.invoke(
        app,
        [
            "evaluate",
            "msrvtt-caption",
            "--predictions",
            str(run / "eval-test" / "predictions.jsonl"),
            "--set",
            f"task.root={sample_root / 'msrvtt'}",
            "--set",
            "task.meteor=false",
        ],
    )
    assert again.exit_code == 0, again.output
    rescored = json.loads((run / "eval-test" / "predictions.metrics.json").read_text())
    assert rescored["metrics"] == pytest.approx(metrics["metrics"])
    (tmp_path / "bad.jsonl").write_text(
        '{"video_id": "video39", "window": null, "caption": "x"}\n{"video_id": "video1234", "caption": "y"}\n'
    )
    bad = runner.invoke(
        app,
        [
            "evaluate",
            "msrvtt-caption",
            "--predictions",
            str(tmp_path / "bad.jsonl"),
            "--set",
            f"task.root={sample_root / 'msrvtt'}",
        ],
    )
    assert bad.exit_code == 2 and "bad.jsonl, line 2: no clip video1234" in bad.output


def test_missing_java_is_one_clear_message(monkeypatch: pytest.MonkeyPatch) -> None:
    from decembert_cli.errors import DecembertError
    from decembert_cli.metrics import captions

    monkeypatch.setattr(captions.shutil, "which", lambda name: None)
    with pytest.raises(DecembertError, match=r"need Java .*apt-get install default-jre-headless"):
        captions.caption_scores({"a": ["x"]}, {"a": "x"})


REAL_YOUCOOK2 = Path(__file__).parents[1] / "data" / "real-annotations" / "youcookii_annotations_trainval.json"


def _mart_paragraph(sentences: list[str], joiner: str) -> str:  # MART: joined, lowered, letters only
    return " ".join(
        "".join(c if c.isalpha() else " " for c in joiner.join(s.strip() for s in sentences)).lower().split()
    )


def test_real_youcook2_predictions_per_segment_score_as_pycocoevalcap_directly(tmp_path: Path) -> None:
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    root = tmp_path / "yc2"
    root.mkdir()
    shutil.copy(REAL_YOUCOOK2, root / REAL_YOUCOOK2.name)
    rows, refs, preds = [], {}, {}
    for video, v in json.loads(REAL_YOUCOOK2.read_text())["database"].items():
        if v["subset"] != "validation":
            continue
        annotations = sorted(enumerate(v["annotations"]), key=lambda p: (p[1]["segment"][0], p[0]))
        said = {
            a["id"]: " ".join(a["sentence"].split()[:4]) + " then" for _, a in annotations
        }  # an imperfect caption per segment
        rows += [
            {"video_id": video, "segment": a["id"], "window": a["segment"], "caption": said[a["id"]]}
            for _, a in annotations
        ]
        refs[video] = [_mart_paragraph([a["sentence"] for _, a in annotations], " ")]
        preds[video] = [_mart_paragraph([said[a["id"]] for _, a in annotations], ". ")]
    assert len(refs) == 457 and len(rows) == 3492  # YouCook2 validation: 457 videos with annotations, 3,492 segments
    direct = {f"BLEU@{n + 1}": 100 * b for n, b in enumerate(Bleu(4).compute_score(refs, preds, verbose=0)[0])}
    direct["ROUGE-L"] = 100 * Rouge().compute_score(refs, preds)[0]
    direct["CIDEr-D"] = 100 * Cider().compute_score(refs, preds)[0]

    path = tmp_path / "predictions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = [
        "evaluate",
        "youcook2-caption",
        "--predictions",
        str(path),
        "--set",
        f"task.root={root}",
        "--set",
        "task.meteor=false",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    scored = json.loads(path.with_name("predictions.metrics.json").read_text())
    # oJZUxU9szWA's two segments of one window both count
    assert scored["items"] == 3492 and scored["protocol"]["predicted"] == 3492
    for key in ("BLEU@4", "ROUGE-L", "CIDEr-D"):
        assert scored["metrics"][key] == pytest.approx(direct[key], rel=1e-9), key
    by_window = tmp_path / "by_window.jsonl"  # without segment ids, rows are matched by window
    by_window.write_text(
        "".join(json.dumps({k: r[k] for k in ("video_id", "window", "caption")}) + "\n" for r in rows[:5])
    )
    partial = runner.invoke(app, [*args[:2], "--predictions", str(by_window), *args[4:], "--allow-partial"])
    assert partial.exit_code == 0, partial.output  # 5 of 3,492 segments: the others score as empty
    for bad, message in (
        (["a list"], "line 1: expected a JSON object, got list"),
        ({"video_id": "x", "window": ["a", "b"], "caption": "c"}, 'line 1: "window" must be [start, end]'),
    ):
        by_window.write_text(json.dumps(bad) + "\n")
        result = runner.invoke(app, [*args[:2], "--predictions", str(by_window), *args[4:]])
        assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output, result.output
