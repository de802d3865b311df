"""extract-features end to end: counts, store files, bad input, resume after SIGKILL, shards, disk full."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from decembert_cli.errors import DecembertError
from decembert_cli.features import pipeline as P
from decembert_cli.features.backbones import build_2d, build_3d
from decembert_cli.io import LOCK_FILE
from tests.videos import TINY_BACKBONES, write_video

TINY = TINY_BACKBONES


@pytest.fixture(scope="module")
def backbones():
    return build_2d("resnet18", "random", size=32), build_3d("resnext3d-tiny", "random", size=32)


def _options(out: Path, **kw) -> P.ExtractOptions:
    return P.ExtractOptions(out=out, batch_size=kw.pop("batch_size", 8), readers=kw.pop("readers", 2), **kw)


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("videos")
    write_video(folder / "a.avi", 24, 120)  # 5 s
    (folder / "sub").mkdir()
    write_video(folder / "sub" / "b.mp4", 30, 96, fourcc="mp4v")  # 3.2 s, in a subfolder
    write_video(folder / "c.avi", 25, 8, (33, 17))  # 0.32 s, odd size
    (folder / "empty.mp4").touch()
    (folder / "garbage.mkv").write_bytes(os.urandom(5000))
    whole = write_video(folder / "whole.avi", 24, 240).read_bytes()
    (folder / "whole.avi").unlink()
    (folder / "truncated.avi").write_bytes(whole[: len(whole) // 3])
    (folder / "notes.txt").write_text("not a video")
    return folder


def test_extract_a_folder_with_bad_files(videos, backbones, tmp_path):
    out = tmp_path / "store"
    summary = P.extract([videos], *backbones, _options(out))
    assert (summary.videos, summary.extracted, summary.already_done) == (6, 3, 0)
    assert summary.failed == Counter({"empty file": 1, "cannot decode": 1, "truncated": 1})
    assert summary.ignored_files == [str(videos / "notes.txt")]
    failures = {f["video_id"]: f for f in _lines(out / "failures.jsonl")}
    assert set(failures) == {"empty", "garbage", "truncated"}
    assert "decoded of the 10.0 s the container reports" in failures["truncated"]["reason"]
    counts = {"a": 5, "b": 3, "c": 1}
    for video_id, seconds in counts.items():
        f2, f3 = np.load(out / "2d" / f"{video_id}.npy"), np.load(out / "3d" / f"{video_id}.npy")
        assert f2.shape == (seconds, 512) and f3.shape == (seconds, 256) and f2.dtype == np.float16
        assert np.isfinite(f2).all() and np.isfinite(f3).all()
    logged = {v["video_id"]: v for v in _lines(out / "videos.jsonl")}
    assert {k: v["features_2d"] for k, v in logged.items()} == counts
    meta = json.loads((out / "3d" / "stream.json").read_text())
    assert meta["format"] == "decembert.features/1" and meta["rate"] == 1.0 and meta["backbone"] == "resnext3d-tiny"
    assert meta["clip_frames"] == 16 and meta["resolution"] == 32 and len(meta["weights_sha256"]) == 64
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]  # no temp files left

    # a rerun skips what is finished and rewrites nothing
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.npy")}
    again = P.extract([videos], *backbones, _options(out))
    assert (again.extracted, again.already_done, sum(again.failed.values())) == (0, 3, 3)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.npy")} == stamps
    assert len(_lines(out / "videos.jsonl")) == 3
    assert sorted(f["video_id"] for f in _lines(out / "failures.jsonl")) == [
        "empty",
        "garbage",
        "truncated",
    ]  # retried, listed once


def test_same_features_whatever_the_batching(videos, backbones, tmp_path):
    one = P.extract(
        [videos / "a.avi"], *backbones, _options(tmp_path / "one", batch_size=1, readers=1, dtype="float32")
    )
    many = P.extract(
        [videos / "a.avi"], *backbones, _options(tmp_path / "many", batch_size=64, readers=2, dtype="float32")
    )
    assert one.extracted == many.extracted == 1
    for stream in ("2d", "3d"):
        np.testing.assert_allclose(
            np.load(tmp_path / "one" / stream / "a.npy"),
            np.load(tmp_path / "many" / stream / "a.npy"),
            rtol=1e-4,
            atol=1e-5,
        )


def test_howto100m_layout_and_the_corpus_reads_both(videos, backbones, tmp_path):
    from decembert_cli.config.schema import DataConfig
    from decembert_cli.data.scan import DataReport, open_howto100m

    P.extract([videos / "a.avi"], *backbones, _options(tmp_path / "ours"))
    P.extract([videos / "a.avi"], *backbones, _options(tmp_path / "h100m", layout="howto100m", l2_normalise=True))
    f3 = np.load(tmp_path / "h100m" / "3d" / "a.npy").astype(np.float32)
    assert f3.shape[0] == 120 // 16  # whole 16-frame clips at 24 fps: 7 of them (1.5/s)
    np.testing.assert_allclose(np.linalg.norm(f3, axis=1), 1.0, atol=2e-3)
    assert json.loads((tmp_path / "h100m" / "3d" / "stream.json").read_text())["rate"] == 1.5
    captions = {"a": {"start": [0.0, 2.0], "end": [2.0, 4.5], "text": ["first we cut", "then we stir"]}}
    seconds = {}
    for name in ("ours", "h100m"):
        root = tmp_path / name
        (root / "caption.json").write_text(json.dumps(captions))
        config = DataConfig(root=str(root), features_2d="2d", features_3d="3d", use_dense=False, videos_csv="")
        (record,) = open_howto100m(config, DataReport(), (512, 256))
        f2, f3 = record.features((0, record.seconds))
        seconds[name] = (record.seconds, f2.shape, f3.shape, record.store.fps_3d)
    assert seconds["ours"] == (5, (5, 512), (5, 256), 1.0)
    assert seconds["h100m"] == (5, (5, 512), (5, 256), 1.5)
    wrong = DataConfig(root=str(tmp_path / "ours"), features_2d="2d", features_3d="3d", use_dense=False, videos_csv="")
    with pytest.raises(DecembertError, match="the 2D features are 512-d .*set --set model.feature_dim_2d=512"):
        open_howto100m(wrong, DataReport(), (2048, 256))


def test_settings_must_match_the_features_already_there(videos, backbones, tmp_path):
    P.extract([videos / "c.avi"], *backbones, _options(tmp_path))
    other = build_3d("resnext3d-tiny", "random", size=48)
    with pytest.raises(DecembertError, match=r"3d/stream.json was written with resolution = 32, this run has 48"):
        P.extract([videos / "c.avi"], backbones[0], other, _options(tmp_path))
    with pytest.raises(
        DecembertError, match=r"2d/stream.json was written with dtype = 'float16', this run has 'float32'"
    ):
        P.extract([videos / "c.avi"], *backbones, _options(tmp_path, dtype="float32"))


def test_list_files_unsafe_ids_and_shards(videos, backbones, tmp_path):
    listing = tmp_path / "videos.csv"
    listing.write_text(
        "video_id,path\n"
        f"first,{videos / 'a.avi'}\n"
        f"../escape,{videos / 'c.avi'}\n"
        f".hidden,{videos / 'c.avi'}\n"
        f"first,{videos / 'c.avi'}\n"
        f"second,{videos / 'sub' / 'b.mp4'}\n"
        f"third,{videos / 'c.avi'}\n"
    )
    out = tmp_path / "store"
    done = []
    for i in range(2):
        summary = P.extract(
            [listing], *backbones, _options(out, shard=(i, 2)), on_video=lambda v, s: done.append((v, s))
        )
        assert summary.extracted >= 1
    assert sorted(v for v, s in done if s == "done") == ["first", "second", "third"]
    assert sorted(p.stem for p in (out / "2d").glob("*.npy")) == ["first", "second", "third"]
    assert not (tmp_path / "escape.npy").exists() and not list(tmp_path.glob("*.npy"))
    failures = _lines(out / "failures.shard-0000-of-0002.jsonl") + _lines(out / "failures.shard-0001-of-0002.jsonl")
    assert Counter(f["kind"] for f in failures) == Counter({"unsafe id": 2, "duplicate id": 1})
    assert (out / "videos.shard-0000-of-0002.jsonl").exists() and (out / "videos.shard-0001-of-0002.jsonl").exists()
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,c\n")
    with pytest.raises(DecembertError, match=r"bad.csv, line 1: expected `path` or `video_id,path`"):
        P.extract([bad], *backbones, _options(tmp_path / "x"))


def test_a_4k_video_and_an_unwritable_output(backbones, tmp_path):
    big = write_video(tmp_path / "uhd.mp4", 24, 12, (3840, 2160), fourcc="mp4v")
    summary = P.extract([big], *backbones, _options(tmp_path / "store"))
    assert summary.extracted == 1 and np.load(tmp_path / "store" / "2d" / "uhd.npy").shape == (1, 512)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(DecembertError, match=r"cannot write into .*a-file/store .*choose a writable --out folder"):
        P.extract([big], *backbones, _options(blocker / "store"))


def test_disk_full_stops_with_one_error_and_corrupts_nothing(videos, backbones, tmp_path, monkeypatch):
    import decembert_cli.io as io_module

    out = tmp_path / "store"
    P.extract([videos / "c.avi"], *backbones, _options(out))
    before = {p.name: p.read_bytes() for p in (out / "2d").glob("*.npy")}
    real_fsync = os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(io_module.os, "fsync", full)
    with pytest.raises(
        DecembertError, match=r"cannot write .*\.npy: No space left on device; the previous file, if any, is unchanged"
    ):
        P.extract([videos], *backbones, _options(out))
    monkeypatch.setattr(io_module.os, "fsync", real_fsync)
    assert {p.name: p.read_bytes() for p in (out / "2d").glob("*.npy")} == before
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]
    summary = P.extract([videos], *backbones, _options(out))  # with space again, the rest is done
    assert (summary.extracted, summary.already_done) == (2, 1)


def test_sigkill_then_rerun_extracts_every_video_exactly_once(tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    for i in range(10):
        write_video(folder / f"v{i:02d}.avi", 24, 24 * 8, (128, 96))
    out = tmp_path / "store"
    command = [
        sys.executable,
        "-m",
        "decembert_cli",
        "extract-features",
        str(folder),
        "--out",
        str(out),
        *TINY,
        "--size-2d",
        "96",
        "--size-3d",
        "64",
        "--readers",
        "1",
        "--batch-size",
        "4",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((out / "2d").glob("v*.npy"))) < 2 and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = len(list((out / "2d").glob("v*.npy")))
    assert 2 <= finished < 10, f"the kill came too late or too early ({finished} finished)"
    rerun = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{10 - finished} extracted, {finished} already done" in rerun.stderr
    for stream, width in (("2d", 512), ("3d", 256)):
        files = sorted((out / stream).glob("*.npy"))
        assert [p.stem for p in files] == [f"v{i:02d}" for i in range(10)]
        for path in files:
            assert np.load(path).shape == (8, width)
    hidden = [p for p in out.rglob("*") if p.name.startswith(".") and p.name != LOCK_FILE]
    assert not hidden, "temporary files left behind"
    ids = [v["video_id"] for v in _lines(out / "videos.jsonl")]
    assert sorted(ids) == [f"v{i:02d}" for i in range(10)]  # each video logged exactly once


def test_the_sample_corpus_signal_survives_rendering_and_extraction(tmp_path):
    """Rendered sample videos -> demo backbones -> a linear probe still reads each second's object and action."""
    from benchmarks.sample_probe import probe
    from decembert_cli.data.sample.corpus import generate

    root = generate(tmp_path / "corpus", videos=16, render=True, features="none")
    b2, b3 = build_2d("resnet18", "random", size=112), build_3d("resnext3d-tiny", "random", size=64)
    summary = P.extract([root / "videos"], b2, b3, _options(root / "features", batch_size=32))
    assert summary.extracted == 16
    result = probe(root)
    assert result["2d_object"]["ratio"] > 8, result  # measured 12x chance with 8 training videos
    assert result["3d_action"]["ratio"] > 1.5, result
