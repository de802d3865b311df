"""Retrieval tasks: batched all-pairs scoring equals a one-pair-at-a-time loop, re-ranking, galleries, the VTM head."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from decembert_cli.app import app
from decembert_cli.config import ModelConfig
from decembert_cli.engine.finetune import TaskModel, score_split
from decembert_cli.metrics.retrieval import retrieval_metrics
from decembert_cli.model import build_encoder
from decembert_tasks.retrieval import MSRVTTRetrieval, MSRVTTRetrievalConfig, YouCook2Retrieval, YouCook2RetrievalConfig

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

runner = CliRunner()
DIM = 16
MODEL = ModelConfig(arch="tiny", init="none", feature_dim_2d=DIM, feature_dim_3d=DIM, dropout=0.0)


@pytest.fixture(scope="module")
def sample_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from decembert_cli.data.sample.corpus import generate

    return generate(
        tmp_path_factory.mktemp("ret") / "corpus", videos=8, clips=40, feature_dim_2d=DIM, feature_dim_3d=DIM
    )


def _model(task: MSRVTTRetrieval | YouCook2Retrieval) -> TaskModel:
    torch.manual_seed(0)
    encoder, _ = build_encoder(MODEL)
    return TaskModel(encoder, task.head(encoder)).eval()


def test_batched_scores_equal_one_pair_at_a_time(sample_root: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    task = MSRVTTRetrieval(MSRVTTRetrievalConfig(root=str(sample_root / "msrvtt")))
    data = task.dataset("test", tokenizer, MODEL, train=False)
    pairs = data.pairs
    # every test clip, one caption each (1k-A layout)
    assert len(pairs.texts) == len(pairs.clips) == 8 and len(data) == 64
    model = _model(task)
    metric = task.metric("test")
    score_split(task, model, data, metric, 24, torch.device("cpu"))  # batches cut across texts
    naive = np.zeros((8, 8))
    with torch.no_grad():
        for t in range(8):
            for c in range(8):
                batch = data.collate([data[(0, t * 8 + c)]])
                naive[t, c] = model.head(model.encoder(batch), batch).values["score"].item()
    np.testing.assert_allclose(metric.scores, naive, rtol=1e-4, atol=1e-5)  # padding in a batch changes nothing
    assert metric.compute() == retrieval_metrics(naive, np.arange(8))
    rows = metric.predictions()
    assert len(rows) == 8 and all(1 <= r["rank"] <= 8 for r in rows)
    assert metric.protocol() == {
        "split": "test",
        "scoring": "cross-encoder, every pair",
        "train_list": "7k",
        "texts": 8,
        "gallery": 8,
    }


def test_rerank_k(sample_root: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    full_task = MSRVTTRetrieval(MSRVTTRetrievalConfig(root=str(sample_root / "msrvtt")))
    model = _model(full_task)
    results = {}
    for k in (0, 8, 3):
        task = MSRVTTRetrieval(MSRVTTRetrievalConfig(root=str(sample_root / "msrvtt"), rerank_k=k))
        data = task.dataset("test", tokenizer, MODEL, train=False)
        metric = task.metric("test")
        score_split(task, model, data, metric, 16, torch.device("cpu"))
        results[k] = metric
    assert results[8].compute() == results[0].compute()  # K = gallery: every pair re-scored
    scores, full = results[3].scores, results[0].scores
    for t in range(8):
        top = np.argsort(-scores[t])[:3]
        assert (scores[t, top] > 1e5).all() and (np.delete(scores[t], top) <= 1).all()  # re-scored ones first
        np.testing.assert_allclose(scores[t, top] - 1e6, full[t, top], rtol=1e-4, atol=1e-4)
    assert "top 3" in results[3].protocol()["scoring"]


def test_youcook2_clips_are_segments_and_a_clip_list_sets_the_gallery(
    sample_root: Path, tokenizer: PreTrainedTokenizerBase, tmp_path: Path
) -> None:
    settings = YouCook2Retrieval.sample_settings(sample_root)
    task = YouCook2Retrieval(YouCook2RetrievalConfig(**settings))
    annotations = json.loads((sample_root / settings["annotations"]).read_text())["database"]
    val = [(v, a) for v, e in annotations.items() if e["subset"] == "validation" for a in e["annotations"]]
    pairs = task.read("val")
    assert len(pairs.clips) == len(val) and pairs.clip_of_text == list(range(len(val)))
    data = task.dataset("val", tokenizer, MODEL, train=False)
    (v, a) = val[0]
    start, end = a["segment"]
    assert data.videos[0][0].shape[0] == int(np.ceil(end)) - int(np.floor(start))  # features cut to the segment
    listed = [(v2, a2) for v2, a2 in val[::2]]
    (tmp_path / "validation_youcook.csv").write_text(
        "end,start,task,text,video_id\n"
        + "".join(f"{a2['segment'][1]},{a2['segment'][0]},113,{a2['sentence']},{v2}\n" for v2, a2 in listed)
    )
    restricted = YouCook2Retrieval(
        YouCook2RetrievalConfig(**settings, clip_list=str(tmp_path / "validation_youcook.csv"))
    )
    assert len(restricted.read("val").clips) == len(listed)
    assert task.metric("val").protocol()["gallery_source"] == "every val segment"
    # auto (the default): validation_youcook.csv in task.root sets the gallery, and the protocol says so
    root = tmp_path / "yc2"
    (root / "youcook2").mkdir(parents=True)
    (root / settings["annotations"]).write_text((sample_root / settings["annotations"]).read_text())
    (root / "validation_youcook.csv").write_text((tmp_path / "validation_youcook.csv").read_text())
    auto = YouCook2Retrieval(YouCook2RetrievalConfig(root=str(root), annotations=settings["annotations"]))
    assert len(auto.read("val").clips) == len(listed)
    assert auto.metric("val").protocol()["gallery_source"].endswith("validation_youcook.csv (clip list)")
    every = YouCook2Retrieval(
        YouCook2RetrievalConfig(root=str(root), annotations=settings["annotations"], clip_list="")
    )
    assert len(every.read("val").clips) == len(val)


def test_msrvtt_trains_on_the_7k_list_by_default(tmp_path: Path) -> None:
    videos = [
        {"video_id": f"video{n}", "split": split, "category": 0}
        for n, split in enumerate(["train"] * 4 + ["validate"] * 2 + ["test"] * 3)
    ]
    sentences = [{"video_id": v["video_id"], "caption": f"caption {n}", "sen_id": n} for n, v in enumerate(videos)]
    (tmp_path / "MSRVTT_data.json").write_text(json.dumps({"videos": videos, "sentences": sentences}))
    (tmp_path / "MSRVTT_train.9k.csv").write_text("video_id\n" + "".join(f"video{n}\n" for n in (0, 1, 2, 3, 4, 5, 6)))
    seven = MSRVTTRetrieval(MSRVTTRetrievalConfig(root=str(tmp_path)))
    assert [c.video_id for c in seven.read("train").clips] == [f"video{n}" for n in range(6)]  # train + validate
    nine = MSRVTTRetrieval(MSRVTTRetrievalConfig(root=str(tmp_path), train_list="9k"))
    assert len(nine.read("train").clips) == 7
    assert seven.has_split("train") and not MSRVTTRetrieval(
        MSRVTTRetrievalConfig(root=str(tmp_path), train_list="other.csv")
    ).has_split("train")


def test_train_fraction_keeps_a_fixed_share_of_the_training_videos(
    sample_root: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    root = str(sample_root / "msrvtt")
    full = MSRVTTRetrieval(MSRVTTRetrievalConfig(root=root)).dataset("train", tokenizer, MODEL, train=True)
    part = MSRVTTRetrieval(MSRVTTRetrievalConfig(root=root, train_fraction=0.25)).dataset(
        "train", tokenizer, MODEL, train=True
    )
    again = MSRVTTRetrieval(MSRVTTRetrievalConfig(root=root, train_fraction=0.25)).dataset(
        "train", tokenizer, MODEL, train=True
    )
    n = len(full.pairs.clips)
    assert len(part.pairs.clips) == int(np.ceil(0.25 * n)) < n
    assert [c.video_id for c in part.pairs.clips] == [
        c.video_id for c in again.pairs.clips
    ]  # the same share every time
    assert {c.video_id for c in part.pairs.clips} <= {c.video_id for c in full.pairs.clips}
    assert len(part.pairs.texts) == 20 * len(part.pairs.clips)  # every caption of a kept clip
    test = MSRVTTRetrieval(MSRVTTRetrievalConfig(root=root, train_fraction=0.25)).dataset(
        "test", tokenizer, MODEL, train=False
    )
    assert len(test.pairs.clips) == 8  # evaluation is never cut


def test_finetune_from_pretraining_starts_from_its_vtm_head_and_evaluates(sample_root: Path, tmp_path: Path) -> None:
    sets = [
        f"data.root={sample_root}",
        f"model.feature_dim_2d={DIM}",
        f"model.feature_dim_3d={DIM}",
        "data.workers=0",
        "train.batch_size=8",
        "train.max_steps=2",
        "train.device=cpu",
    ]
    result = runner.invoke(
        app,
        [
            "pretrain",
            "--data",
            "sample",
            "--config",
            "tiny",
            *[x for s in sets for x in ("--set", s)],
            "--out",
            str(tmp_path / "pre"),
        ],
    )
    assert result.exit_code == 0, result.output
    from decembert_cli.engine.finetune import prepare

    setup = prepare(
        "youcook2-retrieval",
        None,
        [f"task.{k}={v}" for k, v in YouCook2Retrieval.sample_settings(sample_root).items()],
        tmp_path / "ft",
        tmp_path / "pre",
    )
    vtm = torch.load(tmp_path / "pre" / "checkpoints" / "step-00000002.pt", weights_only=True)["model"][
        "vtm.classifier.1.weight"
    ]
    assert torch.equal(setup.job.model.head.vtm.classifier[1].weight, vtm)
    args = [
        "finetune",
        "msrvtt-retrieval",
        "--checkpoint",
        str(tmp_path / "pre"),
        "--set",
        f"task.root={sample_root / 'msrvtt'}",
        "--set",
        "train.max_steps=3",
        "--set",
        "train.batch_size=8",
        "--out",
        str(tmp_path / "msr"),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        app, ["evaluate", "msrvtt-retrieval", "--checkpoint", str(tmp_path / "msr"), "--rerank-k", "2"]
    )
    assert result.exit_code == 0, result.output
    assert "gallery 8" in result.output and "top 2" in result.output
    metrics = json.loads((tmp_path / "msr" / "eval-test" / "metrics.json").read_text())
    assert metrics["protocol"]["gallery"] == 8 and {"t2v_R@1", "t2v_MedR", "v2t_R@10"} <= set(metrics["metrics"])


def test_print_config_shows_the_papers_protocol_defaults() -> None:
    result = runner.invoke(app, ["finetune", "msrvtt-retrieval", "--print-config"])
    assert result.exit_code == 0, result.output
    assert "train_list: 7k" in result.output and "train_fraction: 1.0" in result.output
    result = runner.invoke(app, ["finetune", "youcook2-retrieval", "--print-config"])
    assert result.exit_code == 0 and "clip_list: auto" in result.output


def test_text_and_dense_caption_lengths_are_settings(sample_root: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    root = str(sample_root / "msrvtt")
    full = MSRVTTRetrieval(MSRVTTRetrievalConfig(root=root)).dataset("test", tokenizer, MODEL, train=False)
    short = MSRVTTRetrieval(MSRVTTRetrievalConfig(root=root, max_text_tokens=2, dense_caption_tokens=1)).dataset(
        "test", tokenizer, MODEL, train=False
    )
    assert max(len(ids) for ids in full.text_ids) > 2 and max(len(ids) for ids in short.text_ids) == 2
    assert [ids[:2] for ids in full.text_ids] == short.text_ids
    assert max(len(ids) for d in full.dense for ids in d) > 1
    assert all(len(ids) == 1 for d in short.dense for ids in d) and any(short.dense)
