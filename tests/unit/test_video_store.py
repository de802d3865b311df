"""The video store: one reader and one settings class for pre-training, the tasks and plugins."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from decembert_cli.config import DataConfig, TaskSettings, VideoSettings
from decembert_cli.data.clip_table import ClipTable, clip_window
from decembert_cli.data.corpus import PretrainDataset
from decembert_cli.data.howto100m import BadVideo
from decembert_cli.data.sample.corpus import generate
from decembert_cli.data.scan import DataReport, open_howto100m
from decembert_cli.data.tokenizer import tokenize_captions
from decembert_cli.data.video_store import VideoStore, dataset_file
from decembert_cli.errors import DecembertError
from decembert_cli.model import build_tokenizer
from decembert_cli.registry import tasks

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

DIM = 16


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(
        tmp_path_factory.mktemp("store") / "sample", videos=3, clips=12, feature_dim_2d=DIM, feature_dim_3d=DIM
    )


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerBase:
    from decembert_cli.config import ModelConfig

    return build_tokenizer(ModelConfig(arch="tiny", init="none"))


def test_every_task_and_pretraining_share_the_video_settings_and_their_defaults() -> None:
    shared = {f.name: f.default for f in dataclasses.fields(VideoSettings)}
    configs = [DataConfig] + [tasks.load(name).Config for name in tasks.available()]
    for config in configs:
        assert issubclass(config, VideoSettings), config
        defaults = {f.name: f.default for f in dataclasses.fields(config) if f.name in shared}
        assert defaults == shared, f"{config.__name__} redeclares a video setting with another default"
    assert all(issubclass(tasks.load(name).Config, TaskSettings) for name in tasks.available())


def test_pretraining_reads_a_clip_through_the_store(root: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    config = DataConfig(root=str(root))
    records = open_howto100m(config, DataReport(), (DIM, DIM))
    record = records[0]
    window = clip_window(record.captions.start[1], record.captions.end[1], record.seconds)
    store = VideoStore(TaskSettings(root=str(root)), (DIM, DIM))
    for ours, theirs in zip(record.features(window), store.features(record.video_id, window)):
        np.testing.assert_array_equal(ours, theirs)
    assert len(record.features(window)[0]) == window[1] - window[0]
    picked = record.dense_captions(window, np.random.default_rng(0))
    assert picked == store.dense(record.video_id, window, np.random.default_rng(0)) and picked
    sample = PretrainDataset(ClipTable.from_records(records, tokenizer), tokenizer, config, seed=0)[0]
    assert sample.video_2d.shape[1] == DIM


def test_dense_captions_off_or_missing_give_none(root: Path) -> None:
    off = VideoStore(TaskSettings(root=str(root), use_dense=False), (DIM, DIM))
    assert off.dense_dir is None and off.dense("sample_0000", None, None) == []
    store = VideoStore(TaskSettings(root=str(root)), (DIM, DIM))
    assert store.dense("no_such_video", None, None) == []
    whole = store.dense("sample_0000", None, None)
    assert 0 < len(whole) <= TaskSettings().max_dense_captions


def test_a_bad_video_is_badvideo_for_pretraining_and_a_named_error_for_tasks(root: Path, tmp_path: Path) -> None:
    store = VideoStore(TaskSettings(root=str(root)), (DIM, DIM))
    with pytest.raises(BadVideo):
        store.read_features("missing_video")
    with pytest.raises(DecembertError, match=r"video missing_video \(.*features/2d\)"):
        store.features("missing_video")
    (tmp_path / "dense_captions").mkdir()
    (tmp_path / "dense_captions" / "v.json").write_text("{not json")
    broken = VideoStore(TaskSettings(root=str(tmp_path)), (DIM, DIM))
    with pytest.raises(BadVideo):
        broken.read_dense("v", None, None)
    with pytest.raises(DecembertError, match="video v:"):
        broken.dense("v", None, None)


def test_settings_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(DecembertError, match=r"task.root is not set: --set task.root=DIR"):
        VideoStore(TaskSettings())
    with pytest.raises(DecembertError, match=r"data.root: folder .* not found"):
        VideoStore(DataConfig(root=str(tmp_path / "nowhere")), section="data")
    with pytest.raises(DecembertError, match=r"data.features_2d: folder .* not found"):
        VideoStore(DataConfig(root=str(tmp_path)), section="data").require_folders()
    assert dataset_file(TaskSettings(root=str(tmp_path)), "a.json") == tmp_path / "a.json"
    assert dataset_file(TaskSettings(root=str(tmp_path)), str(tmp_path / "b" / "c.json")) == tmp_path / "b" / "c.json"


def test_tokenize_captions_keeps_every_caption_and_cuts_long_ones(tokenizer: PreTrainedTokenizerBase) -> None:
    ids = tokenize_captions(tokenizer, ["cut the onion", "   ", "one two three four five six"], 4)
    assert ids[1] == [tokenizer.unk_token_id]
    assert len(ids[2]) == 4 and ids[0] == tokenizer("cut the onion", add_special_tokens=False)["input_ids"]
    assert tokenize_captions(tokenizer, [], 4) == []
