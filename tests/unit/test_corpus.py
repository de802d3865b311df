"""Pre-training corpora: bad-input handling, the held-out split and sample construction (rates included)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import shutil
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from decembert_cli.config import DataConfig
from decembert_cli.data.batch import IGNORE_INDEX, EncoderSample, TokenType
from decembert_cli.data.clip_table import ClipTable, split_videos
from decembert_cli.data.corpus import PretrainDataset, validation_indices
from decembert_cli.data.sample.corpus import generate, sample
from decembert_cli.data.scan import DataReport, open_howto100m
from decembert_cli.data.tokenizer import tokenize_captions
from decembert_cli.errors import DecembertError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

DIM = 16
DIMS = (DIM, DIM)


@pytest.fixture(scope="module")
def sample_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("corpus") / "sample", videos=24, feature_dim_2d=DIM, feature_dim_3d=DIM)


def _config(root: Path, **changes: object) -> DataConfig:
    return dataclasses.replace(DataConfig(root=str(root)), **changes)


def _broken_copy(sample_root: Path, tmp_path: Path) -> Path:
    """The sample corpus plus one video for each kind of bad input the issue lists."""
    root = tmp_path / "broken"
    shutil.copytree(sample_root, root)
    captions = json.loads((root / "caption.json").read_text())
    good = captions["sample_0000"]
    f2 = np.load(root / "features/2d/sample_0000.npy")
    f3 = np.load(root / "features/3d/sample_0000.npy")

    def add(video: str, entry: dict, *, f2_array: np.ndarray | None = f2, f3_array: np.ndarray | None = f3) -> None:
        captions[video] = entry
        if f2_array is not None:
            np.save(root / f"features/2d/{video}.npy", f2_array)
        if f3_array is not None:
            np.save(root / f"features/3d/{video}.npy", f3_array)
        shutil.copy(root / "dense_captions/sample_0000.npy", root / f"dense_captions/{video}.npy")

    add("bad_missing3d", good, f3_array=None)
    add("bad_width", good, f2_array=np.zeros((f2.shape[0], DIM + 1), np.float16))
    add("bad_unequal", {**good, "end": good["end"][:-1]})
    add("bad_fewclips", {"start": [1.0], "end": [3.0], "text": ["just one line"]})
    add(
        "fix_lines",
        {
            "start": [4.0, 0.5, 8.0, 9.0],
            "end": [6.0, 2.0, 9.0, 10.0],
            "text": ["stir the pan", "cut the onion", "", "\u266a \u266a"],
        },
    )
    add("bad_truncated", good)
    data = (root / "features/2d/bad_truncated.npy").read_bytes()
    (root / "features/2d/bad_truncated.npy").write_bytes(data[: len(data) // 2])
    (root / "caption.json").write_text(json.dumps(captions))
    return root


def test_bad_videos_are_skipped_and_counted(sample_root: Path, tmp_path: Path) -> None:
    root = _broken_copy(sample_root, tmp_path)
    report = DataReport()
    records = open_howto100m(_config(root, videos_csv=""), report, DIMS)
    ids = {r.video_id for r in records}
    assert "fix_lines" in ids and not any(v.startswith("bad_") for v in ids)
    assert report.videos_seen == 24 + 6 and report.videos_used == 24 + 1
    assert report.skipped == {
        "3D feature file missing": 1,
        "2D features of the wrong width": 1,
        "caption lists of unequal length": 1,
        "too few clips": 1,
        "2D feature file unreadable or truncated": 1,
    }
    assert report.fixed == {
        "videos with unsorted caption starts (sorted)": 1,
        "empty caption lines (dropped)": 1,
        "caption lines without a letter or digit (dropped)": 1,
    }
    fixed = next(r for r in records if r.video_id == "fix_lines")
    assert fixed.captions.text == ["cut the onion", "stir the pan"]  # nothing replaced, nothing invented
    assert "bad_missing3d" in report.examples["3D feature file missing"]


def test_strict_stops_at_the_first_bad_video(sample_root: Path, tmp_path: Path) -> None:
    root = _broken_copy(sample_root, tmp_path)
    with pytest.raises(DecembertError, match=r"video bad_\w+: .*--strict"):
        open_howto100m(_config(root, videos_csv=""), DataReport(strict=True), DIMS)


def test_videos_csv_restricts_the_corpus(sample_root: Path, tmp_path: Path) -> None:
    root = _broken_copy(sample_root, tmp_path)  # bad videos are not in HowTo100M_v1.csv
    report = DataReport()
    records = open_howto100m(_config(root), report, DIMS)
    assert len(records) == 24 and not report.skipped
    with pytest.raises(DecembertError, match="data.videos_csv"):
        open_howto100m(_config(root, videos_csv="nope.csv"), DataReport(), DIMS)


def test_configuration_errors_name_the_key(sample_root: Path, tmp_path: Path) -> None:
    with pytest.raises(DecembertError, match="data.root is not set"):
        open_howto100m(DataConfig(), DataReport(), DIMS)
    with pytest.raises(DecembertError, match="data.features_3d"):
        open_howto100m(_config(sample_root, features_3d="missing"), DataReport(), DIMS)
    with pytest.raises(DecembertError, match="no captions"):
        open_howto100m(_config(tmp_path), DataReport(), DIMS)


def test_dense_captions_missing_for_a_video_skips_it_unless_dense_is_off(sample_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "c"
    shutil.copytree(sample_root, root)
    (root / "dense_captions/sample_0003.npy").unlink()
    report = DataReport()
    assert len(open_howto100m(_config(root), report, DIMS)) == 23
    assert report.skipped == {"dense captions missing": 1}
    assert len(open_howto100m(_config(root, use_dense=False), DataReport(), DIMS)) == 24


def test_split_is_by_video_deterministic_and_capped(sample_root: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    records = open_howto100m(_config(sample_root), DataReport(), DIMS)
    table = ClipTable.from_records(records, tokenizer)
    train, val = split_videos(table, 10000)
    assert len(val) == 2 and len(train) == 22  # at most a tenth of the corpus
    assert not set(train) & set(val) and sorted([*train, *val]) == list(range(24))
    # the held-out videos are those first by sha1 of their id, whatever the order of the table
    by_hash = sorted(records, key=lambda r: hashlib.sha1(r.video_id.encode()).hexdigest())
    assert {table.video_ids[v] for v in val} == {r.video_id for r in by_hash[:2]}
    reversed_table = ClipTable.from_records(records[::-1], tokenizer)
    again = split_videos(reversed_table, 10000)[1]
    assert {reversed_table.video_ids[v] for v in again} == {table.video_ids[v] for v in val}
    assert table.video_ids[split_videos(table, 1)[1][0]] == by_hash[0].video_id
    assert len(split_videos(table, 0)[1]) == 0


def _dataset(root: Path, tokenizer: PreTrainedTokenizerBase, **changes: object) -> PretrainDataset:
    config = _config(root, **changes)
    records = sample(config, DataReport(), DIMS)  # the in-memory path (test_corpus_index: the same as the index's)
    return PretrainDataset(ClipTable.from_records(records, tokenizer), tokenizer, config, seed=3)


def test_validation_items_are_spread_and_interleaved_across_videos(
    sample_root: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    """Validation's video-use check swaps each sample's video for the previous item's: that must be another video
    (in clip order it was mostly the next clip of the same video, which shows the same objects)."""
    data = _dataset(sample_root, tokenizer)
    n = len(data)
    assert validation_indices(n, 10**6) == list(range(n))  # without offsets: clip order, as before
    for limit in (10**6, n // 3):
        order = validation_indices(n, limit, data.clip_offsets)
        assert sorted(order) == validation_indices(n, limit)  # the same items, only reordered
        videos = [data.locate(i)[0] for i in order]
        assert all(a != b for a, b in zip(videos, videos[1:], strict=False))  # 24 videos of similar length
        by_video = [data.locate(i) for i in order]
        for v in set(videos):  # each video's clips in their order, spread over the whole list
            places = [k for k, (w, _c) in enumerate(by_video) if w == v]
            assert [by_video[k][1] for k in places] == sorted(by_video[k][1] for k in places)
            assert places[0] < len(order) / 2 < places[-1] or len(places) == 1


def test_mlm_and_negative_rates(sample_root: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    data = _dataset(sample_root, tokenizer, mask_unit="token")  # the paper: each token at mask_prob
    selected: Counter[TokenType] = Counter()
    tokens: Counter[TokenType] = Counter()
    kinds: Counter[str | None] = Counter()
    n = 0
    for epoch in range(30):
        for index in range(len(data)):
            sample, info = data.build(epoch, index)
            kinds[info.negative] += 1
            n += 1
            for seg in sample.segments:
                tokens[seg.kind] += len(seg.ids)
                selected[seg.kind] += sum(label != IGNORE_INDEX for label in seg.labels or [])
            if n >= 6000:
                break
        if n >= 6000:
            break
    for kind in (TokenType.ASR, TokenType.DENSE):
        assert tokens[kind] > 20000
        assert abs(selected[kind] / tokens[kind] - 0.20) < 0.01, kind
    negatives = kinds["same-video"] + kinds["other-video"]  # binomial: 4 standard deviations of a rate of 1/2
    assert abs(negatives / n - 0.50) < 4 * (0.25 / n) ** 0.5
    assert abs(kinds["same-video"] / negatives - 0.5) < 4 * (0.25 / negatives) ** 0.5


def test_mask_replace_setting_reaches_the_samples(sample_root: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    def masked_inputs(data: PretrainDataset) -> Counter[str]:
        seen: Counter[str] = Counter()
        for index in range(0, len(data)):
            for seg in data.build(0, index)[0].segments:
                for token, label in zip(seg.ids, seg.labels or []):
                    if label != IGNORE_INDEX:
                        seen["mask" if token == data.mask_id else "kept" if token == label else "random"] += 1
        return seen

    paper = masked_inputs(_dataset(sample_root, tokenizer))
    assert paper["mask"] > 500 and paper["kept"] == paper["random"] == 0  # the paper: every selected token is [MASK]
    bert = masked_inputs(_dataset(sample_root, tokenizer, mask_replace="bert"))
    total = sum(bert.values())
    assert (
        abs(bert["mask"] / total - 0.8) < 0.05
        and 0.05 < bert["random"] / total < 0.15
        and 0.05 < bert["kept"] / total < 0.15
    )


def _masked_words(data: PretrainDataset, tokenizer: PreTrainedTokenizerBase, epochs: int = 3) -> dict[str, float]:
    """Over every sample of a few epochs: the share of text tokens masked, the share of masked words cut
    (some of their pieces masked, others not), and the share of masked concepts (content words) that
    stay visible elsewhere in the same sample's text."""
    from decembert_cli.data.masking import WordPieces

    pieces = WordPieces.of(tokenizer)
    tokens = masked = words = cut = concepts = visible = 0
    for epoch in range(epochs):
        for index in range(len(data)):
            segments = data.build(epoch, index)[0].segments
            shown: set[tuple[int, ...]] = set()
            hidden: set[tuple[int, ...]] = set()
            for seg in segments:
                labels = seg.labels or []
                original = [label if label != IGNORE_INDEX else token for token, label in zip(seg.ids, labels)]
                tokens += len(original)
                masked += sum(label != IGNORE_INDEX for label in labels)
                for a, b in pieces.words(original):
                    chosen = [labels[i] != IGNORE_INDEX for i in range(a, b)]
                    word = tuple(original[a:b])
                    if any(chosen):
                        words += 1
                        cut += not all(chosen)
                    if pieces.is_concept(word):
                        (hidden if all(chosen) else shown).add(word)
            concepts += len(hidden)
            visible += len(hidden & shown)
    return {"share": masked / tokens, "cut": cut / max(words, 1), "visible": visible / max(concepts, 1)}


def test_mask_units_keep_the_share_and_what_they_promise(sample_root: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    token = _masked_words(_dataset(sample_root, tokenizer, mask_unit="token"), tokenizer)
    word = _masked_words(_dataset(sample_root, tokenizer, mask_unit="word"), tokenizer)
    concept = _masked_words(_dataset(sample_root, tokenizer, mask_unit="concept"), tokenizer)
    for unit in (token, word, concept):  # data.mask_prob keeps meaning the share of masked tokens
        assert abs(unit["share"] - 0.20) < 0.02, unit
    assert word["cut"] == concept["cut"] == 0.0  # whole words only
    assert concept["visible"] == 0.0  # a masked concept is masked at every mention
    assert token["visible"] > 0.3  # token masking leaves most masked words readable elsewhere in the text


def test_mlm_on_negatives_off_masks_negatives_alike_but_scores_nothing_of_their_asr(
    sample_root: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    config = _config(sample_root)
    table = ClipTable.from_records(sample(config, DataReport(), DIMS), tokenizer)
    scored = PretrainDataset(table, tokenizer, config, seed=3)
    unscored = PretrainDataset(table, tokenizer, config, seed=3, mlm_on_negatives=False)
    negatives = 0
    for index in range(len(scored)):
        (a, info), (b, _) = scored.build(0, index), unscored.build(0, index)
        assert [s.ids for s in a.segments] == [s.ids for s in b.segments]  # the same inputs, [MASK]s included
        for sa, sb in zip(a.segments, b.segments):
            if info.negative is not None and sa.kind == TokenType.ASR:
                negatives += 1
                assert set(sb.labels or []) == {IGNORE_INDEX}
            else:
                assert sa.labels == sb.labels
    assert negatives > 50


def test_segments_keep_their_text_before_masking_for_vtm(sample_root: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    """Every segment's `original` is its caption before masking (loss.vtm_input = unmasked reads it), also for the
    negatives whose masked ASR is not scored; the collated unmasked ids hold no [MASK]."""
    config = _config(sample_root)
    table = ClipTable.from_records(sample(config, DataReport(), DIMS), tokenizer)
    for mlm_on_negatives in (True, False):
        data = PretrainDataset(table, tokenizer, config, seed=5, mlm_on_negatives=mlm_on_negatives)
        samples = [data.build(0, index)[0] for index in range(0, len(data), 3)]
        masked = 0
        for s in samples:
            for seg in s.segments:
                assert seg.original is not None and len(seg.original) == len(seg.ids)
                assert data.mask_id not in seg.original
                for t, o, lab in zip(seg.ids, seg.original, seg.labels or []):
                    assert t == o or t == data.mask_id
                    assert lab in (IGNORE_INDEX, o)
                    masked += t != o
        batch = data.collate(samples)
        assert masked > 100 and batch.unmasked_ids is not None
        assert not (batch.unmasked_ids == data.mask_id).any()
        changed = batch.unmasked_ids != batch.text_ids
        assert (batch.text_ids[changed] == data.mask_id).all() and int(changed.sum()) == masked


def test_video_negatives_keep_the_text_and_replace_the_video(
    sample_root: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    """data.negatives = video: a negative's text (dense and ASR captions) is the clip's own, its features are
    another clip's; so no rule on the text alone can tell negatives from positives."""

    def originals(sample: EncoderSample) -> list[list[int]]:
        return [
            [lab if lab != IGNORE_INDEX else t for t, lab in zip(seg.ids, seg.labels or [])] for seg in sample.segments
        ]

    config = _config(sample_root, negatives="video", mask_prob=0.0)
    table = ClipTable.from_records(sample(config, DataReport(), DIMS), tokenizer)
    video = PretrainDataset(table, tokenizer, config, seed=3, shuffle_candidates=False)
    plain = PretrainDataset(
        table, tokenizer, dataclasses.replace(config, negative_prob=0.0), seed=3, shuffle_candidates=False
    )
    kinds: Counter[str] = Counter()
    for index in range(len(video)):
        drawn, info = video.build(0, index)
        own, _ = plain.build(0, index)
        kinds[str(info.negative)] += 1
        if info.negative is None:
            continue
        assert info.negative.endswith(" video") and drawn.vtm_label == 0
        assert originals(drawn) == originals(own)  # the same text
        if info.negative.startswith("other-video"):
            n = min(len(drawn.video_2d), len(own.video_2d))
            assert not np.allclose(drawn.video_2d.numpy()[:n], own.video_2d.numpy()[:n])
    assert kinds["same-video video"] > 20 and kinds["other-video video"] > 20 and kinds["None"] > 50
    both = PretrainDataset(table, tokenizer, dataclasses.replace(config, negatives="both"), seed=3)
    mixed = Counter(str(both.build(0, i)[1].negative).endswith(" video") for i in range(len(both)))
    assert mixed[True] > 20 and mixed[False] > 100  # positives and ASR negatives, and video negatives


def test_a_video_negative_whose_video_is_bad_becomes_an_asr_negative(
    sample_root: Path, tokenizer: PreTrainedTokenizerBase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The label stays true: the sample is still a negative, its ASR captions now another clip's."""
    from decembert_cli.data.howto100m import BadVideo

    config = _config(sample_root, negatives="video")
    table = ClipTable.from_records(sample(config, DataReport(), DIMS), tokenizer)
    data = PretrainDataset(table, tokenizer, config, seed=3)
    index, info = next(
        (i, info) for i in range(len(data)) if (info := data.build(0, i)[1]).negative == "other-video video"
    )
    read = table.features
    # make every video but the clip's own unreadable (the negative's among them)
    own_row = int(data.videos[info.video])

    def features(row: int, window: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        if row != own_row:
            raise BadVideo("unreadable", "unreadable feature file")
        return read(row, window)

    monkeypatch.setattr(table, "features", features)
    drawn, again = data.build(0, index)
    assert again.negative == "other-video" and drawn.vtm_label == 0  # an ASR negative, still labelled 0
    assert again.source[0] != info.video and len(data.bad_videos) == 1


def test_sample_construction_follows_the_paper(sample_root: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    data = _dataset(sample_root, tokenizer, neighbours=2)
    seen_aligned = 0
    for index in range(0, len(data), 3):
        sample, info = data.build(0, index)
        assert data.table.records is not None
        record = data.table.records[int(data.videos[info.video])]
        first, end = data.table.window(int(data.videos[info.video]), info.clip)
        assert first == math.floor(record.captions.start[info.clip])
        assert sample.video_2d.shape == (end - first, DIM) and end > first
        asr = [s for s in sample.segments if s.kind == TokenType.ASR]
        dense = [s for s in sample.segments if s.kind == TokenType.DENSE]
        assert [s.candidate for s in asr] == list(range(len(asr)))
        assert sample.segments[: len(dense)] == dense  # [dense captions][ASR captions]
        frames = [f for f in range(math.ceil(first / 2), math.ceil(end / 2))] or [first // 2]
        assert len(dense) <= 2 * len(frames)
        source_video, source_clip = info.source
        captions = data.table.records[int(data.videos[source_video])].captions
        lo, hi = max(0, source_clip - 2), min(len(captions) - 1, source_clip + 2)
        assert len(asr) == hi - lo + 1
        # the candidates are s_{i-k} .. s_{i+k} in a shuffled order; offsets say which slot holds which
        assert sorted(sample.candidate_offsets) == list(range(lo - source_clip, hi - source_clip + 1))
        for seg, offset in zip(asr, sample.candidate_offsets):
            (expected,) = tokenize_captions(
                data.tokenizer, [captions.text[source_clip + offset]], data.config.max_caption_tokens
            )
            assert [t if label == IGNORE_INDEX else label for t, label in zip(seg.ids, seg.labels)] == expected
        if info.negative is None:
            assert sample.vtm_label == 1 and sample.candidate_offsets[sample.own_candidate] == 0
            if sample.aligned >= 0:
                assert record.aligned_to[info.clip + sample.candidate_offsets[sample.aligned]] == info.clip
                seen_aligned += 1
        elif info.negative == "same-video":
            assert sample.vtm_label == 0 and source_video == info.video and abs(source_clip - info.clip) > 2
        else:
            assert sample.vtm_label == 0 and source_video != info.video and sample.aligned == -1
    assert seen_aligned > 0


def test_candidates_are_shuffled_per_sample_and_share_positions(
    sample_root: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    data = _dataset(sample_root, tokenizer, neighbours=1, negative_prob=0.0)
    in_order = PretrainDataset(data.table, tokenizer, data.config, seed=3, shuffle_candidates=False)
    own_slots: Counter[int] = Counter()
    samples = []
    for index in range(0, len(data), 2):
        sample = data.build(0, index)[0]
        if len(sample.candidate_offsets) == 3:
            own_slots[sample.own_candidate] += 1
            samples.append(sample)
        # time order without shuffling
        assert in_order.build(0, index)[0].candidate_offsets == sorted(sample.candidate_offsets)
    assert all(n > 0.25 * sum(own_slots.values()) for n in own_slots.values()) and len(own_slots) == 3
    batch = data.collate(samples[:8])
    for b in range(8):
        slot_start = {}
        for t in range(batch.text_ids.shape[1]):
            c = int(batch.caption_id[b, t])
            if c >= 0:
                slot_start.setdefault(c, int(batch.text_pos[b, t]))
        # every candidate starts at the same position
        assert len(slot_start) == 3 and len(set(slot_start.values())) == 1
        dense = batch.text_type[b] == int(TokenType.DENSE)
        assert int(batch.text_pos[b][dense].max()) < min(slot_start.values())  # dense captions come first, sequentially
        assert batch.candidate_offset[b].tolist() == samples[b].candidate_offsets


def test_an_epoch_of_videos_draws_one_clip_per_video(sample_root: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    config = _config(sample_root)
    records = sample(config, DataReport(), DIMS)
    table = ClipTable.from_records(records, tokenizer)
    by_video = PretrainDataset(table, tokenizer, config, seed=3, epoch_unit="video")
    by_clip = PretrainDataset(table, tokenizer, config, seed=3)
    assert len(by_video) == len(records) and len(by_clip) == sum(len(r.captions) for r in records) > 8 * len(by_video)
    drawn = {e: [by_video.clip_index(e, v) for v in range(len(records))] for e in range(4)}
    for clips in drawn.values():
        assert [by_video.locate(c)[0] for c in clips] == list(range(len(records)))  # item v draws a clip of video v
    assert len({tuple(c) for c in drawn.values()}) > 1  # another clip per video each epoch
    assert drawn[0] == [by_video.clip_index(0, v) for v in range(len(records))]  # deterministic
    first = by_video[(1, 0)]
    same = by_clip.build(1, drawn[1][0])[0]
    assert [s.ids for s in first.segments] == [s.ids for s in same.segments]  # the item is that clip's sample
    assert [by_clip.clip_index(2, c) for c in range(5)] == list(range(5))


def test_samples_are_deterministic_per_epoch_and_index(sample_root: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    data = _dataset(sample_root, tokenizer)
    a, b = data.build(2, 5)[0], data.build(2, 5)[0]
    assert [s.ids for s in a.segments] == [s.ids for s in b.segments]
    assert any([s.ids for s in data.build(e, 5)[0].segments] != [s.ids for s in a.segments] for e in range(3, 8))


def test_ablation_switches_change_the_samples(sample_root: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    no_neighbours = _dataset(sample_root, tokenizer, neighbours=0, negative_prob=0.0)
    no_dense = _dataset(sample_root, tokenizer, use_dense=False)
    for index in range(0, 40, 4):
        asr = [s for s in no_neighbours.build(0, index)[0].segments if s.kind == TokenType.ASR]
        assert len(asr) == 1 and asr[0].candidate == 0
        assert not [s for s in no_dense.build(0, index)[0].segments if s.kind == TokenType.DENSE]


def test_text_budget_is_checked(sample_root: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    with pytest.raises(DecembertError, match="data.neighbours=10 with data.max_caption_tokens=40"):
        _dataset(sample_root, tokenizer, neighbours=10)


def test_rolling_overlap_is_trimmed_for_raw_captions_only(sample_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "raw"
    shutil.copytree(sample_root, root)
    captions = json.loads((root / "caption.json").read_text())
    entry = captions["sample_0000"]
    entry["text"][1] = entry["text"][0].split()[-1] + " " + entry["text"][1]  # a rolling-subtitle repeat
    (root / "caption.json").unlink()
    (root / "raw_caption.json").write_text(json.dumps(captions))
    original = captions["sample_0000"]["text"][1].split(" ", 1)[1]

    def second_line(**changes: object) -> str:
        records = open_howto100m(_config(root, **changes), DataReport(), DIMS)
        return next(r for r in records if r.video_id == "sample_0000").captions.text[1]

    assert second_line() == original  # auto: raw_caption.json is trimmed
    assert second_line(trim_overlap="off") != original
    assert second_line(trim_overlap="on", captions="raw_caption.json") == original


def _sequence_length(sample: EncoderSample) -> int:
    """Video tokens (collate keeps at most 100), [CLS], every caption with its [SEP]."""
    return min(sample.video_2d.shape[0], 100) + 1 + sum(len(s.ids) + 1 for s in sample.segments)


def test_item_lengths_are_the_samples_lengths_without_the_random_parts(
    sample_root: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    """Without dense captions (read per sample) and negatives (another clip's captions), the estimate
    is exact; with them it still orders items by length (length-aware batching needs no more)."""
    exact = _dataset(sample_root, tokenizer, use_dense=False, negative_prob=0.0)
    lengths = exact.item_lengths()
    assert lengths.dtype == np.uint16 and len(lengths) == len(exact)
    assert [int(x) for x in lengths] == [_sequence_length(exact[i]) for i in range(len(exact))]
    full = _dataset(sample_root, tokenizer)
    estimate = full.item_lengths().astype(float)
    actual = np.array([_sequence_length(full[(0, i)]) for i in range(len(full))], dtype=float)
    assert np.corrcoef(estimate, actual)[0, 1] > 0.7
    by_video = PretrainDataset(exact.table, tokenizer, exact.config, seed=3, epoch_unit="video").item_lengths()
    first = exact.clip_count(0)
    assert len(by_video) == len(exact.videos) and by_video[0] == round(float(lengths[:first].mean()))
