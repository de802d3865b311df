"""The persistent corpus index: the same samples as the in-memory path, staleness, updates, resuming."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import torch

from decembert_cli.config import DataConfig
from decembert_cli.data import corpus_index
from decembert_cli.data.batch import TokenType
from decembert_cli.data.clip_table import ClipTable, split_videos
from decembert_cli.data.corpus import PretrainDataset, open_corpus
from decembert_cli.data.corpus_index import COLUMNS, DENSE_COLUMNS, howto100m, open_index
from decembert_cli.data.densecap import read_dense_captions
from decembert_cli.data.sample.corpus import sample
from decembert_cli.data.scan import DataReport
from decembert_cli.data.tokenizer import tokenize_captions
from decembert_cli.errors import DecembertError
from tests.unit import test_corpus as corpus_tests
from tests.unit.test_corpus import DIMS, _broken_copy, _config

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

sample_root = corpus_tests.sample_root  # the same 24-video corpus (a module-scoped fixture)


def _copy(sample_root: Path, tmp_path: Path, name: str = "c") -> Path:
    root = tmp_path / name
    shutil.copytree(sample_root, root, ignore=shutil.ignore_patterns("decembert-index"))
    return root


def _arrays(folder: Path) -> dict[str, np.ndarray]:
    manifest = json.loads((folder / "manifest.json").read_text())
    stamps = (corpus_index.STAMPS, corpus_index.DENSE_STAMPS)
    return {c: np.load(folder / manifest["version"] / f"{c}.npy") for c in (*COLUMNS, *stamps)}


def _dense(folder: Path) -> list[tuple[float, list[list[tuple[int, ...]]]]]:
    """Each video's dense captions in the index as (interval, frames of WordPiece-id tuples): what a sample reads
    (the table of distinct captions depends on how the build was cut into parts)."""
    manifest = json.loads((folder / "manifest.json").read_text())
    d = {c: np.load(folder / manifest["version"] / f"{c}.npy") for c in DENSE_COLUMNS}
    caption = [
        tuple(d["dense_tokens"][a:b].tolist()) for a, b in zip(d["dense_token_offsets"], d["dense_token_offsets"][1:])
    ]
    frames = [
        [caption[r] for r in d["dense_refs"][a:b]] for a, b in zip(d["dense_ref_offsets"], d["dense_ref_offsets"][1:])
    ]
    return [
        (float(d["dense_interval"][v]), frames[d["dense_frame_offsets"][v] : d["dense_frame_offsets"][v + 1]])
        for v in range(len(d["dense_interval"]))
    ]


def _same_index(a: Path, b: Path) -> bool:
    """The same columns, stamps and dense captions."""
    x, y = _arrays(a), _arrays(b)
    return all(np.array_equal(x[c], y[c]) for c in x) and _dense(a) == _dense(b)


def _batches(table: ClipTable, tokenizer: PreTrainedTokenizerBase, config: DataConfig, unit: str) -> list[Any]:
    train, val = split_videos(table, 3)
    out = []
    for videos, epoch in ((train, 1), (val, 2**31 - 1)):
        data = PretrainDataset(table, tokenizer, config, videos=videos, seed=5, epoch_unit=unit)
        keys = [(epoch, i) for i in range(len(data))]
        for first in range(0, len(keys), 8):
            out.append(data.collate([data[k] for k in keys[first : first + 8]]))
    return out


@pytest.mark.parametrize("unit", ["clip", "video"])
def test_the_index_gives_the_batches_of_the_in_memory_path(
    sample_root: Path, tmp_path: Path, tokenizer: PreTrainedTokenizerBase, unit: str
) -> None:
    config = _config(_copy(sample_root, tmp_path))
    memory = ClipTable.from_records(sample(config, DataReport(), DIMS), tokenizer)
    indexed, _report, _ = open_index(sample, config, DIMS, tokenizer, name="sample")
    assert isinstance(indexed.tokens, np.memmap) and indexed.records is None  # nothing per clip in Python objects
    assert list(indexed.video_ids) == list(memory.video_ids) and (indexed.aligned >= 0).any()
    a, b = _batches(memory, tokenizer, config, unit), _batches(indexed, tokenizer, config, unit)
    assert len(a) == len(b) >= 4
    for x, y in zip(a, b, strict=True):
        for field in dataclasses.fields(x):
            u, v = getattr(x, field.name), getattr(y, field.name)
            assert torch.equal(u, v) if isinstance(u, torch.Tensor) else u == v, field.name


def test_the_index_report_is_the_scan_report(sample_root: Path, tmp_path: Path, tokenizer: Any) -> None:
    root = _broken_copy(sample_root, tmp_path)
    scanned = DataReport()
    howto100m(_config(root, videos_csv=""), scanned, DIMS)
    table, report = open_corpus("howto100m", _config(root, videos_csv=""), DIMS, tokenizer, strict=False)
    assert report.as_dict() == scanned.as_dict() and len(table) == scanned.videos_used == 25
    with pytest.raises(DecembertError, match=r"video bad_\w+: .*--strict"):
        open_corpus("howto100m", _config(root, videos_csv=""), DIMS, tokenizer, strict=True)


def test_workers_and_parts_do_not_change_the_index(sample_root: Path, tmp_path: Path, tokenizer: Any) -> None:
    root = _copy(sample_root, tmp_path)
    one = open_index(howto100m, _config(root, index="one"), DIMS, tokenizer, workers=1)[2]
    two = open_index(howto100m, _config(root, index="two"), DIMS, tokenizer, workers=2, part_videos=5)[2]
    assert _same_index(one, two)


def test_a_stale_or_foreign_index_is_refused_and_an_update_adds_only_new_videos(
    sample_root: Path, tmp_path: Path, tokenizer: Any
) -> None:
    root = _copy(sample_root, tmp_path)
    config = _config(root)
    (root / "features/3d/sample_0005.npy").rename(tmp_path / "held-back.npy")  # sample_0005 skipped: no 3D features
    table, report, folder = open_index(howto100m, config, DIMS, tokenizer)
    assert len(table) == 23 and report["skipped"] == {"3D feature file missing": 1}
    (tmp_path / "held-back.npy").rename(root / "features/3d/sample_0005.npy")
    with pytest.raises(
        DecembertError, match=r"out of date: data.features_3d \(changed\).*decembert data index howto100m"
    ):
        open_index(howto100m, config, DIMS, tokenizer)
    table, report, _ = open_index(howto100m, config, DIMS, tokenizer, mode="update")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["examined"] == 1 and len(table) == 24 and report["skipped"] == {}
    fresh = open_index(howto100m, _config(root, index="fresh"), DIMS, tokenizer)[2]
    assert _same_index(folder, fresh)
    assert [p.name for p in folder.iterdir() if p.name.startswith("v")] == [manifest["version"]]  # old one removed

    with pytest.raises(DecembertError, match=r"other settings \(min_clips: 2 -> 3\).*--rebuild"):
        open_index(howto100m, _config(root, min_clips=3), DIMS, tokenizer, mode="update")
    other = _copy(sample_root, tmp_path, "other")
    (other / "caption.json").write_text((other / "caption.json").read_text() + " ")
    with pytest.raises(DecembertError, match="indexes another corpus"):
        open_index(howto100m, _config(other, index=str(folder)), DIMS, tokenizer)


def test_an_update_merged_in_short_runs_and_chunks_gives_the_fresh_index(
    sample_root: Path, tmp_path: Path, tokenizer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An update copies the previous version in runs of at most RUN_ROWS videos and its distinct dense captions
    in chunks (bounded temporaries); cut small here, the index is the one a fresh build gives."""
    monkeypatch.setattr(corpus_index, "RUN_ROWS", 2)
    monkeypatch.setattr(corpus_index, "_CHUNK", 5)
    root = _copy(sample_root, tmp_path)
    (root / "features/3d/sample_0011.npy").rename(tmp_path / "held-back.npy")
    folder = open_index(howto100m, _config(root), DIMS, tokenizer)[2]
    (tmp_path / "held-back.npy").rename(root / "features/3d/sample_0011.npy")
    assert len(open_index(howto100m, _config(root), DIMS, tokenizer, mode="update")[0]) == 24
    fresh = open_index(howto100m, _config(root, index="fresh"), DIMS, tokenizer)[2]
    assert _same_index(folder, fresh)


def test_a_corpus_moved_with_its_index_keeps_it(sample_root: Path, tmp_path: Path, tokenizer: Any) -> None:
    root = _copy(sample_root, tmp_path)
    open_index(howto100m, _config(root), DIMS, tokenizer)
    moved = tmp_path / "moved"
    shutil.copytree(root, moved)  # copies mtimes, as rsync -a does
    table, _, folder = open_index(howto100m, _config(moved), DIMS, tokenizer)
    assert folder == moved / "decembert-index" and len(table) == 24


def test_an_interrupted_build_resumes_without_redoing_finished_parts(
    sample_root: Path, tmp_path: Path, tokenizer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _copy(sample_root, tmp_path)
    real = corpus_index._index_part
    built: list[int] = []

    def interrupted(n: int) -> int:
        if len(built) == 3:
            raise KeyboardInterrupt  # as if killed after three parts
        built.append(n)
        return real(n)

    monkeypatch.setattr(corpus_index, "_index_part", interrupted)
    with pytest.raises(KeyboardInterrupt):
        open_index(howto100m, _config(root), DIMS, tokenizer, workers=1, part_videos=5)
    folder = root / "decembert-index"
    assert not (folder / "manifest.json").exists() and len(list((folder / "build").glob("part-*"))) == 3
    first = {p.name: p.stat().st_mtime_ns for p in (folder / "build").glob("part-*")}
    built.clear()
    monkeypatch.setattr(corpus_index, "_index_part", lambda n: built.append(n) or real(n))
    table, _, _ = open_index(howto100m, _config(root), DIMS, tokenizer, workers=1, part_videos=5)
    assert built == [3, 4] and len(table) == 24 and not (folder / "build").exists()
    parts = json.loads((folder / "manifest.json").read_text())["parts"]
    assert parts == {"built": 2, "reused from an interrupted build": 3}
    assert first  # the three finished parts were reused, not rebuilt
    fresh = open_index(howto100m, _config(root, index="fresh"), DIMS, tokenizer)[2]
    assert _same_index(folder, fresh)


def test_an_unwritable_index_folder_names_the_setting(sample_root: Path, tmp_path: Path, tokenizer: Any) -> None:
    root = _copy(sample_root, tmp_path)
    (tmp_path / "a-file").write_text("")
    with pytest.raises(DecembertError, match="cannot write the corpus index to .*data.index=DIR"):
        open_index(howto100m, _config(root, index=str(tmp_path / "a-file" / "index")), DIMS, tokenizer)


def test_a_run_without_dense_captions_reads_an_index_built_for_them(
    sample_root: Path, tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    """Table 6's rows with and without dense captions share one index (the same videos); an index built
    without the dense-caption check is refused to a run that needs dense captions."""
    root = _copy(sample_root, tmp_path)
    (root / "dense_captions" / "sample_0003.npy").unlink()  # a video without dense captions
    with_dense, _r, folder = open_index(sample, _config(root), DIMS, tokenizer, name="sample")
    without, _r, same = open_index(sample, _config(root, use_dense=False), DIMS, tokenizer, name="sample")
    assert same == folder and list(without.video_ids) == list(with_dense.video_ids)
    assert "sample_0003" not in list(without.video_ids)
    other = _config(root, use_dense=False, index=str(tmp_path / "no-dense-index"))
    open_index(sample, other, DIMS, tokenizer, name="sample")
    with pytest.raises(DecembertError, match="dense captions required"):
        open_index(sample, dataclasses.replace(other, use_dense=True), DIMS, tokenizer, name="sample")


def test_an_update_by_a_run_without_dense_captions_keeps_the_dense_index(
    sample_root: Path, tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    """An index with dense captions is not rewritten without them by an update from a run that reads none (the
    next run with them would have to rebuild it whole): refused, naming the way; the index is untouched."""
    root = _copy(sample_root, tmp_path)
    (root / "features/3d/sample_0005.npy").rename(tmp_path / "held-back.npy")
    _t, _r, folder = open_index(howto100m, _config(root), DIMS, tokenizer)
    before = (folder / "manifest.json").read_text()
    (tmp_path / "held-back.npy").rename(root / "features/3d/sample_0005.npy")
    with pytest.raises(DecembertError, match=r"holds dense captions and this run reads none.*decembert data index"):
        open_index(howto100m, _config(root, use_dense=False), DIMS, tokenizer, mode="update")
    assert (folder / "manifest.json").read_text() == before
    updated = open_index(howto100m, _config(root), DIMS, tokenizer, mode="update")[0]
    assert len(updated) == 24 and updated.dense is not None


def test_the_packed_id_check_is_safe_id() -> None:
    """`first_unsafe_id` (the index's ids, checked at once on opening) applies `io.safe_id`'s rule exactly."""
    from decembert_cli.data.clip_table import Strings, first_unsafe_id
    from decembert_cli.io import MAX_ID_BYTES, safe_id

    good = ["v1", "a.b", "x" * MAX_ID_BYTES, "café", "½", "ä" * (MAX_ID_BYTES // 2), "-_~ ok", "a\x80b"]
    bad = ["", ".x", "..", "a/b", "a\\b", "a\x00", "v\x1f", "v\x7f", "x" * (MAX_ID_BYTES + 1), "ä" * 101]
    for ids in ([*good], *([*good[:3], b, *good[3:]] for b in bad)):
        expected = next((i for i, v in enumerate(ids) if not safe_id(v)), None)
        assert first_unsafe_id(Strings.pack(ids)) == expected, ids
    blob = Strings.pack(["ab", "cd"])
    for damaged, row in (([0x61, 0xC3, 0xA4, 0x62], 0), ([0x61, 0x62, 0xA4, 0x64], 1), ([0x61, 0x62, 0x63, 0xC3], 1)):
        assert first_unsafe_id(Strings(np.array(damaged, np.uint8), blob.offsets)) == row
    rng = np.random.default_rng(0)
    alphabet = np.frombuffer("ab.é½/\x01".encode() + b"\xff", np.uint8)
    for _ in range(2000):  # random bytes cut anywhere: the row is the one safe_id finds
        data = rng.choice(alphabet, size=int(rng.integers(1, 12)))
        cuts = np.unique(rng.integers(1, max(len(data), 2), size=int(rng.integers(0, 4))))
        offsets = np.array([0, *(c for c in cuts if c < len(data)), len(data)], dtype=np.int64)
        pieces = [bytes(data[a:b]) for a, b in zip(offsets, offsets[1:], strict=False)]
        ok = [safe_id(p.decode("utf-8", "replace")) and "\ufffd" not in p.decode("utf-8", "replace") for p in pieces]
        expected = next((i for i, good in enumerate(ok) if not good), None)
        assert first_unsafe_id(Strings(data, offsets)) == expected, (pieces, expected)


class _WholeFileCaptions:
    """The reference: caption.json parsed whole with json.load, as the build read it before it streamed."""

    def __init__(self, path: Path) -> None:
        self._data = json.loads(Path(path).read_text(encoding="utf-8-sig"))

    def ids(self) -> list[str]:
        return sorted(self._data)

    def get(self, video_id: str) -> Any:
        from decembert_cli.data.howto100m import BadVideo, VideoCaptions

        entry = self._data.get(video_id)
        if not isinstance(entry, dict):
            raise BadVideo("caption entry is not an object", "malformed caption entry")
        missing = [k for k in ("start", "end", "text") if k not in entry]
        if missing:
            raise BadVideo(f"caption entry lacks {', '.join(missing)}", "malformed caption entry")
        for name in ("start", "end", "text"):
            if not isinstance(entry[name], list):
                raise BadVideo(f"'{name}' is not a list", "malformed caption entry")
        return VideoCaptions(video_id, entry["start"], entry["end"], entry["text"])


@pytest.mark.parametrize("corpus", ["sample", "bad records"])
def test_the_streamed_caption_json_gives_the_index_of_the_whole_file_parse(
    sample_root: Path, tmp_path: Path, tokenizer: Any, monkeypatch: pytest.MonkeyPatch, corpus: str
) -> None:
    """caption.json is scanned for offsets and read one entry at a time; the index (every column, the data
    report) is the one a build that parses the whole file gives, also with bad records, a BOM, pretty
    printing and an id given twice (the last entry wins, as in a JSON object)."""
    root = _copy(sample_root, tmp_path) if corpus == "sample" else _broken_copy(sample_root, tmp_path)
    if corpus == "bad records":
        captions = json.loads((root / "caption.json").read_text())
        first = next(iter(captions))
        captions.update(
            {
                "bad_types": {"start": "0", "end": [1.0], "text": ["a"]},
                "bad_nan": {"start": [float("nan")], "end": [1.0], "text": ["a b"]},
                "bad_not_an_object": [1, 2],
                "bad_no_text": {"start": [], "end": []},
            }
        )
        text = json.dumps(captions, indent=2, ensure_ascii=False)
        duplicate = json.dumps({"start": [0.0], "end": [1.0], "text": ["overridden"]})
        text = text[:-2] + f',\n  "{first}": {duplicate}\n}}'  # the id again at the end: the last one counts
        (root / "caption.json").write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    config = _config(root, index="streamed", videos_csv="")
    streamed, streamed_report, folder = open_index(howto100m, config, DIMS, tokenizer, workers=2, part_videos=7)
    monkeypatch.setattr(corpus_index, "open_captions", _WholeFileCaptions)
    whole, whole_report, reference = open_index(
        howto100m, _config(root, index="whole", videos_csv=""), DIMS, tokenizer, workers=1
    )
    a, b = _arrays(folder), _arrays(reference)
    assert all(np.array_equal(a[c], b[c]) for c in COLUMNS) and len(streamed) == len(whole) > 0
    assert streamed_report == whole_report
    if corpus == "bad records":
        assert streamed_report["skipped"].get("malformed caption entry", 0) >= 3
        assert first not in set(streamed.video_ids)  # its last entry has one line: too few clips


def test_a_feature_file_rewritten_in_place_is_noticed_and_an_update_reexamines_it(
    sample_root: Path, tmp_path: Path, tokenizer: Any
) -> None:
    """np.save over an existing file keeps the folder's mtime: the video's stamp (size, mtime of its feature
    files) notices it. A run's start is refused, naming it; the update re-examines only it and gives the
    index of a fresh build. An index written before stamps opens as before and gains them on update."""
    root = _copy(sample_root, tmp_path)
    config = _config(root)
    table, _, folder = open_index(howto100m, config, DIMS, tokenizer)
    row = list(table.video_ids).index("sample_0007")
    path = root / "features/2d/sample_0007.npy"
    before_mtime = (root / "features/2d").stat().st_mtime_ns
    features = np.load(path)
    np.save(path, features[: len(features) - 2])  # in place: the same file, two seconds shorter
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 2 * 10**9))  # (a later second)
    assert (root / "features/2d").stat().st_mtime_ns == before_mtime  # the folder did not change
    with pytest.raises(DecembertError, match=r"out of date: the feature, caption or dense-caption files of 1 video"):
        open_index(howto100m, config, DIMS, tokenizer)
    updated, _, _ = open_index(howto100m, config, DIMS, tokenizer, mode="update")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["examined"] == 1 and updated.seconds[row] == table.seconds[row] - 2
    fresh = open_index(howto100m, _config(root, index="fresh"), DIMS, tokenizer)[2]
    assert _same_index(folder, fresh)  # the stamps too

    version = folder / manifest["version"]
    (version / f"{corpus_index.STAMPS}.npy").unlink()  # as an index built before stamps
    np.save(path, features)
    open_index(howto100m, config, DIMS, tokenizer)  # no stamps: only the folders are compared, as before
    open_index(howto100m, config, DIMS, tokenizer, mode="update")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert (folder / manifest["version"] / f"{corpus_index.STAMPS}.npy").is_file()
    np.save(folder / manifest["version"] / f"{corpus_index.STAMPS}.npy", np.zeros(3, np.int64))
    with pytest.raises(DecembertError, match=r"stamps.npy: 3 entries, expected 24 .*damaged"):
        open_index(howto100m, config, DIMS, tokenizer)


def test_a_caption_csv_rewritten_in_place_is_noticed(sample_root: Path, tmp_path: Path, tokenizer: Any) -> None:
    root = _copy(sample_root, tmp_path)
    captions = json.loads((root / "caption.json").read_text())
    (root / "caption.json").unlink()
    folder = root / "howto100m_captions"
    folder.mkdir()
    for video_id, entry in captions.items():
        lines = [f"{s},{e},{t}" for s, e, t in zip(entry["start"], entry["end"], entry["text"], strict=True)]
        (folder / f"{video_id}.csv").write_text("start,end,text\n" + "\n".join(lines) + "\n")
    config = _config(root)
    open_index(howto100m, config, DIMS, tokenizer)
    csv = folder / "sample_0003.csv"
    with open(csv, "a") as handle:  # in place: the folder's mtime stays
        handle.write("9000,9001,one more line\n")
    os.utime(csv, ns=(csv.stat().st_atime_ns, csv.stat().st_mtime_ns + 2 * 10**9))
    with pytest.raises(DecembertError, match=r"rewritten in place \(e.g. sample_0003's\)"):
        open_index(howto100m, config, DIMS, tokenizer)


def test_dense_captions_are_read_from_the_index_tokenised_once(
    sample_root: Path, tmp_path: Path, tokenizer: PreTrainedTokenizerBase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The build reads and tokenises every dense-caption file once; drawing samples from the index then reads
    none (they are the in-memory path's samples: test_the_index_gives_the_batches_of_the_in_memory_path)."""
    root = _copy(sample_root, tmp_path)
    config = _config(root)
    table, _, folder = open_index(howto100m, config, DIMS, tokenizer, workers=1, part_videos=5)
    assert table.dense is not None and isinstance(table.dense.tokens, np.memmap)
    for v, (interval, frames) in zip(table.video_ids, _dense(folder), strict=True):
        expected, every = read_dense_captions(root / "dense_captions" / f"{v}.npy", 2.0)
        assert interval == every and len(frames) == len(expected) > 0
        assert frames == [[tuple(ids) for ids in tokenize_captions(tokenizer, f, 510)] for f in expected]

    def no_file(*args: object) -> None:
        raise AssertionError("a dense-caption file read while drawing samples")

    monkeypatch.setattr("decembert_cli.data.video_store.read_dense_captions", no_file)
    monkeypatch.setattr("decembert_cli.data.corpus_index.read_dense_captions", no_file)
    batch = _batches(open_index(howto100m, config, DIMS, tokenizer)[0], tokenizer, config, "clip")[0]
    assert (batch.text_type == TokenType.DENSE).any()  # dense captions in the batch, from the index


def test_a_dense_caption_file_rewritten_in_place_is_noticed(sample_root: Path, tmp_path: Path, tokenizer: Any) -> None:
    """A run with dense captions compares their files' stamps; one without them does not read them, so it does not."""
    root = _copy(sample_root, tmp_path)
    config = _config(root)
    _, _, folder = open_index(howto100m, config, DIMS, tokenizer)
    path = root / "dense_captions/sample_0004.npy"
    frames = np.load(path, allow_pickle=True)
    np.save(path, frames[:-1], allow_pickle=True)  # in place, one frame fewer
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 2 * 10**9))
    with pytest.raises(
        DecembertError, match=r"dense-caption files of 1 video\(s\) rewritten in place \(e.g. sample_0004"
    ):
        open_index(howto100m, config, DIMS, tokenizer)
    open_index(howto100m, _config(root, use_dense=False), DIMS, tokenizer)  # (reads no dense caption)
    updated = open_index(howto100m, config, DIMS, tokenizer, mode="update")[0]
    assert json.loads((folder / "manifest.json").read_text())["examined"] == 1
    row = list(updated.video_ids).index("sample_0004")
    assert len(_dense(folder)[row][1]) == len(frames) - 1
    assert _same_index(folder, open_index(howto100m, _config(root, index="fresh"), DIMS, tokenizer)[2])


def test_an_index_built_before_dense_captions_were_indexed_is_rebuilt_by_a_run_with_them(
    sample_root: Path, tmp_path: Path, tokenizer: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _copy(sample_root, tmp_path)
    config = _config(root)
    _, _, folder = open_index(howto100m, config, DIMS, tokenizer)
    manifest = json.loads((folder / "manifest.json").read_text())
    del manifest["fingerprint"]["settings"][corpus_index.DENSE_INDEXED]  # as the index of an earlier release
    for c in (*DENSE_COLUMNS, corpus_index.DENSE_STAMPS):
        (folder / manifest["version"] / f"{c}.npy").unlink()
    (folder / "manifest.json").write_text(json.dumps(manifest))
    without = open_index(howto100m, _config(root, use_dense=False), DIMS, tokenizer)[0]  # read as it is
    assert without.dense is None and json.loads((folder / "manifest.json").read_text()) == manifest
    table = open_index(howto100m, config, DIMS, tokenizer)[0]
    assert "rebuilding the corpus index" in capsys.readouterr().err
    assert table.dense is not None and len(table.dense.interval) == 24
    assert _same_index(folder, open_index(howto100m, _config(root, index="fresh"), DIMS, tokenizer)[2])


def _damage(name: str, change: Any) -> Any:
    def damage(version: Path) -> None:
        path = version / f"{name}.npy"
        array = np.load(path).copy()
        np.save(path, change(array))

    return damage


def _at(index: int, value: Any) -> Any:
    def change(array: np.ndarray) -> np.ndarray:
        array[index] = value
        return array

    return change


@pytest.mark.parametrize(
    ("name", "change"),
    [
        ("dense_refs", _at(0, 10**6)),
        ("dense_ref_offsets", _at(1, 10**6)),
        ("dense_frame_offsets", lambda a: a[:-1]),
        ("dense_interval", _at(0, np.nan)),
        ("dense_tokens", _at(0, 65000)),
        ("dense_token_offsets", _at(-1, 10**9)),
        ("dense_tokens", lambda a: a.astype(np.float32)),
    ],
    ids=["ref-outside", "ref-offsets-fall", "frames-short", "interval-nan", "token-outside", "offsets-beyond", "dtype"],
)
def test_a_damaged_dense_column_is_one_error_naming_it(
    sample_root: Path, tmp_path: Path, tokenizer: Any, name: str, change: Any
) -> None:
    root = _copy(sample_root, tmp_path)
    _, _, folder = open_index(howto100m, _config(root), DIMS, tokenizer)
    _damage(name, change)(folder / json.loads((folder / "manifest.json").read_text())["version"])
    with pytest.raises(DecembertError, match=rf"{name}.npy.*damaged, rebuild it"):
        open_index(howto100m, _config(root), DIMS, tokenizer)


def _rss_file_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no RssFile")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads Linux's /proc")
def test_released_columns_leave_the_process_rss(tmp_path: Path) -> None:
    """A merge reads every part and writes every column through memory maps; each touched page stays in the
    process' RSS until unmapped (6.4 GB for a 1.22M-video build), so the merge releases them as it goes."""
    path = tmp_path / "column.npy"
    np.save(path, np.ones(16 * 2**20 // 8 * 4, dtype=np.int64))  # 64 MB
    column = np.load(path, mmap_mode="r")
    written = np.lib.format.open_memmap(tmp_path / "out.npy", mode="w+", dtype=np.int64, shape=column.shape)
    before = _rss_file_mb()
    written[:] = column  # touches both
    assert _rss_file_mb() - before > 100
    corpus_index._release(column, written[10:])  # (a view releases its base's mapping)
    assert _rss_file_mb() - before < 20
    assert int(written[-1]) == 1 and int(np.load(tmp_path / "out.npy", mmap_mode="r").sum()) == len(column)


def test_value_scans_keep_about_a_chunk_of_a_column_mapped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The opening checks scan whole columns; each chunk is unmapped once read, so a scan holds about one chunk
    (at 1.22M videos the checks after the merge held every column: 4.2 GB PSS, over the 4 GB allowed)."""
    monkeypatch.setattr(corpus_index, "_CHUNK", 2**20)  # 8 MB of int64
    path = tmp_path / "offsets.npy"
    np.save(path, np.arange(2**23, dtype=np.int64))  # 64 MB, rising
    column = np.load(path, mmap_mode="r")
    before = _rss_file_mb()
    seen: list[float] = []

    def bad(chunk: np.ndarray) -> np.ndarray:
        seen.append(_rss_file_mb() - before)
        return chunk < 0

    assert corpus_index._first(column, bad) is None and len(seen) == 8
    assert max(seen) < 24, seen  # a chunk or two, not the column
    corpus_index._check_offsets(path, column, 2**23 - 1, "x")  # rising from 0 to its last entry
    assert _rss_file_mb() - before < 24


def test_an_index_with_dense_captions_is_checked_once_not_at_every_open(
    sample_root: Path, tmp_path: Path, tokenizer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The value checks run once per set of files (.verified.json); reading the table for the stamps with other
    columns than the run's reads made each open check everything twice."""
    root = _copy(sample_root, tmp_path)
    open_index(howto100m, _config(root), DIMS, tokenizer)
    checked: list[str] = []
    real = corpus_index._check_values
    monkeypatch.setattr(
        corpus_index, "_check_values", lambda folder, *a: checked.append(folder.name) or real(folder, *a)
    )
    for _ in range(2):
        open_index(howto100m, _config(root), DIMS, tokenizer)
        open_index(howto100m, _config(root, use_dense=False), DIMS, tokenizer)
    assert checked == []


def test_a_run_without_a_dense_caption_folder_draws_samples_without_them(
    sample_root: Path, tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    """data.dense_captions empty (no folder) with data.use_dense on: samples without dense captions, as from the
    files before they were indexed."""
    config = _config(_copy(sample_root, tmp_path), dense_captions="")
    table = open_index(howto100m, config, DIMS, tokenizer)[0]
    assert table.dense is None
    batch = _batches(table, tokenizer, config, "clip")[0]
    assert not (batch.text_type == TokenType.DENSE).any() and batch.text_ids.shape[0] == 8
