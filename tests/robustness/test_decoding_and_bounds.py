"""Video decoding never kills the process, work is bounded, damaged feature and caption files are one clear error.

Every case runs the CLI as a subprocess (a segfault in a decoder shows as a negative exit status there,
not as a dead test run): file names that are not UTF-8 (OpenCV segfaults on them; PyAV reads them), names
FFmpeg would read as a protocol, intervals and counts out of range, damaged stream.json files, features
stored as strings, and damaged metrics logs and dense-caption records given to `visualize`."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from decembert_cli.data.sample.corpus import generate
from tests.videos import TINY_BACKBONES, write_video

from .cli import assert_one_error, run_cli

DIM = 16
TIMEOUT = 120  # a case that loops forever fails instead of hanging the suite
NOT_UTF8 = os.fsdecode(b"caf\xe9")  # a Latin-1 name: 'caf\udce9' in Python, segfaults OpenCV
TINY = TINY_BACKBONES


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _ran(done) -> None:  # noqa: ANN001 - a CompletedProcess
    """The command ended by itself (no signal: a segfault is -11) and without a traceback."""
    output = done.stdout + done.stderr
    assert done.returncode >= 0, f"killed by signal {-done.returncode}\n{output}"
    assert "Traceback" not in output, output


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_video(tmp_path_factory.mktemp("clip") / "v.avi", 24, 48)  # 2 s, 96 x 64


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("bounds") / "sample", videos=12, feature_dim_2d=DIM, feature_dim_3d=DIM)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-video rendered sample corpus (the oracle captions it), moved into a folder named in Latin-1."""
    base = tmp_path_factory.mktemp("rendered")
    root = generate(base / "c", videos=1, render=True, features="none", clips=1)
    moved = base / NOT_UTF8
    root.rename(moved)  # (written first: OpenCV's writer segfaults on such a name too)
    return moved


# ---------------------------------------------------------------------------------------------------
# decoding: names that are not UTF-8, names FFmpeg reads as a protocol


def test_extract_features_decodes_a_folder_named_in_latin1_with_pyav(tmp_path: Path, clip: Path) -> None:
    folder = tmp_path / NOT_UTF8
    folder.mkdir()
    shutil.copy(clip, folder / "v.avi")
    done = run_cli(["extract-features", str(folder), "--out", str(tmp_path / "out"), *TINY], tmp_path, timeout=TIMEOUT)
    _ran(done)
    assert done.returncode == 0, done.stderr
    assert [(r["video_id"], r["decoder"]) for r in _lines(tmp_path / "out" / "videos.jsonl")] == [("v", "pyav")]


def test_extract_features_with_opencv_only_logs_a_latin1_name_as_a_failure(tmp_path: Path, clip: Path) -> None:
    folder = tmp_path / NOT_UTF8
    folder.mkdir()
    shutil.copy(clip, folder / "v.avi")
    argv = ["extract-features", str(folder), "--out", str(tmp_path / "out"), "--decoder", "opencv", *TINY]
    done = run_cli(argv, tmp_path, timeout=TIMEOUT)
    _ran(done)
    assert done.returncode == 0, done.stderr
    (failure,) = _lines(tmp_path / "out" / "failures.jsonl")
    assert failure["kind"] == "name not UTF-8" and "--decoder pyav" in failure["reason"]


def test_dense_caption_decodes_a_folder_named_in_latin1_with_pyav(tmp_path: Path, rendered: Path) -> None:
    argv = ["dense-caption", str(rendered / "videos"), "--backend", "oracle", "--out", str(tmp_path / "out")]
    done = run_cli(argv, tmp_path, timeout=TIMEOUT)
    _ran(done)
    assert done.returncode == 0, done.stderr
    assert "1 captioned, 0 already done, 0 failed of 1 videos" in done.stderr


def test_visualize_video_decodes_a_file_named_in_latin1_with_pyav(tmp_path: Path, clip: Path) -> None:
    video = tmp_path / f"{NOT_UTF8}.avi"
    shutil.copy(clip, video)
    done = run_cli(["visualize", "video", str(video), "--out", str(tmp_path / "v.png")], tmp_path, timeout=TIMEOUT)
    _ran(done)
    assert done.returncode == 0 and (tmp_path / "v.png").is_file(), done.stderr


def test_sample_data_rendering_into_a_latin1_folder_is_one_error(tmp_path: Path) -> None:
    """OpenCV's video writer segfaults on such a path as its reader does: refused before it is called."""
    done = run_cli(["sample-data", str(tmp_path / NOT_UTF8), "--videos", "2", "--render"], tmp_path, timeout=TIMEOUT)
    assert_one_error(done, "not valid UTF-8")


def _extract_argv(w: Path) -> list[str]:
    return ["extract-features", str(w / "in"), "--out", str(w / "out"), *TINY]


def _caption_argv(w: Path) -> list[str]:
    return ["dense-caption", str(w / "in"), "--backend", "oracle", "--out", str(w / "out")]


@pytest.mark.parametrize("argv", [_extract_argv, _caption_argv], ids=["extract-features", "dense-caption"])
def test_a_video_file_named_in_latin1_is_a_failure_entry_saying_so(
    tmp_path: Path, clip: Path, argv: Callable[[Path], list[str]]
) -> None:
    (tmp_path / "in").mkdir()
    shutil.copy(clip, tmp_path / "in" / f"{NOT_UTF8}.avi")  # its id would be 'caf\udce9'
    done = run_cli(argv(tmp_path), tmp_path, timeout=TIMEOUT)
    _ran(done)
    assert done.returncode == 0, done.stderr
    (failure,) = _lines(tmp_path / "out" / "failures.jsonl")
    assert failure["kind"] == "unsafe id" and "not valid UTF-8" in failure["reason"], failure


@pytest.mark.parametrize(
    ("argv", "made"),
    [
        (["extract-features", "pipe:0.avi", "--out", "out", *TINY], "out/2d/pipe:0.npy"),
        (["visualize", "video", "pipe:0.avi", "--out", "v.png"], "v.png"),
    ],
    ids=["extract-features", "visualize-video"],
)
def test_a_relative_name_ffmpeg_would_read_as_a_protocol_is_the_file(
    tmp_path: Path, clip: Path, argv: list[str], made: str
) -> None:
    shutil.copy(clip, tmp_path / "pipe:0.avi")  # FFmpeg's pipe: protocol, relative to the working folder
    done = run_cli(argv, tmp_path, timeout=TIMEOUT)
    _ran(done)
    assert done.returncode == 0 and (tmp_path / made).is_file(), done.stdout + done.stderr


# ---------------------------------------------------------------------------------------------------
# bounded work: intervals and counts


def _interval_argv(command: str, w: Path, value: str) -> list[str]:
    if command == "dense-caption":  # no video: the interval alone must be refused
        (w / "none.txt").write_text("")
        return ["dense-caption", str(w / "none.txt"), "--backend", "oracle", "--interval", value, "--out", str(w / "o")]
    return ["visualize", "video", str(w / "v.avi"), "--every", value, "--out", str(w / "v.png")]


@pytest.mark.parametrize("value", ["0", "1e-9", "5e-324", "nan", "inf"])
@pytest.mark.parametrize(("command", "option"), [("dense-caption", "--interval"), ("visualize", "--every")])
def test_an_interval_out_of_range_is_one_error_naming_the_range(
    tmp_path: Path, clip: Path, command: str, option: str, value: str
) -> None:
    shutil.copy(clip, tmp_path / "v.avi")
    done = run_cli(_interval_argv(command, tmp_path, value), tmp_path, timeout=TIMEOUT)
    line = assert_one_error(done, f"{option}: ")
    assert "[0.04, 86400]" in line, line


@pytest.mark.parametrize(
    ("setting", "needle"),
    [
        ("data.dense_interval=1e-9", "use a value in [0.04, 86400]"),
        ("data.fps_3d=1e-300", "use a value in [1.15741e-05, 25]"),
        ("data.fps_3d=100", "use a value in [1.15741e-05, 25]"),
    ],
    ids=["dense-interval", "fps-3d-tiny", "fps-3d-huge"],
)
def test_an_interval_or_rate_setting_out_of_range_is_refused(tmp_path: Path, setting: str, needle: str) -> None:
    line = assert_one_error(run_cli(["check", "--set", setting], tmp_path, timeout=TIMEOUT), setting.split("=")[0])
    assert needle in line, line


@pytest.mark.parametrize(
    "argv",
    [
        ["extract-features", "none.txt", "--out", "o", *TINY, "--batch-size", "1000000000"],
        ["extract-features", "none.txt", "--out", "o", *TINY, "--readers", "1000000"],
        ["extract-features", "none.txt", "--out", "o", *TINY[:-1], "1000000"],  # --size-3d
        ["dense-caption", "none.txt", "--backend", "oracle", "--out", "o", "--batch-size", "1000000000"],
        ["visualize", "video", "v.avi", "--out", "v.png", "--most", "1000000000"],
    ],
    ids=["extract-batch-size", "extract-readers", "extract-size-3d", "densecap-batch-size", "visualize-most"],
)
def test_a_count_without_bound_is_refused(tmp_path: Path, clip: Path, argv: list[str]) -> None:
    shutil.copy(clip, tmp_path / "v.avi")
    (tmp_path / "none.txt").write_text("")
    done = run_cli(argv, tmp_path, timeout=TIMEOUT)
    _ran(done)
    option = argv[-2]
    assert done.returncode == 2 and f"Invalid value for '{option}'" in done.stderr, done.stdout + done.stderr


# ---------------------------------------------------------------------------------------------------
# damaged feature folders


def _features(corpus: Path, w: Path) -> tuple[Path, Path]:
    """A copy of the corpus' feature folders in `w` (the corpus itself stays as it is)."""
    for stream in ("2d", "3d"):
        shutil.copytree(corpus / "features" / stream, w / stream)
    return w / "2d", w / "3d"


def _sample_settings(corpus: Path, w: Path, dir_2d: Path, dir_3d: Path) -> list[str]:
    argv = []
    for key, value in (
        ("data.root", corpus),
        ("data.features_2d", dir_2d),
        ("data.features_3d", dir_3d),
        ("data.index", w / "index"),
        ("model.feature_dim_2d", DIM),
        ("model.feature_dim_3d", DIM),
    ):
        argv += ["--set", f"{key}={value}"]
    return argv


_MISSING = object()


def _stream_file(**fields: object) -> str:
    meta = {"format": "decembert.features/1", "stream": "3d", "layout": "decembert", "rate": 1.0, "dim": DIM}
    meta.update(fields)
    return json.dumps({k: v for k, v in meta.items() if v is not _MISSING})


@pytest.mark.parametrize(
    ("stream_json", "field"),
    [
        (_stream_file(rate=_MISSING), "rate"),
        (_stream_file(rate=0), "rate"),
        (_stream_file(rate=float("nan")), "rate"),  # json.dumps writes NaN, json.loads reads it
        (_stream_file(rate="fast"), "rate"),
        (_stream_file(dim="wide"), "dim"),
    ],
    ids=["rate-missing", "rate-zero", "rate-nan", "rate-a-word", "dim-a-word"],
)
def test_a_damaged_stream_json_is_one_error_naming_file_and_field(
    tmp_path: Path, corpus: Path, stream_json: str, field: str
) -> None:
    dir_2d, dir_3d = _features(corpus, tmp_path)
    (dir_3d / "stream.json").write_text(stream_json)
    argv = ["data", "index", "sample", "--config", "tiny", "--workers", "1"]
    done = run_cli([*argv, *_sample_settings(corpus, tmp_path, dir_2d, dir_3d)], tmp_path, timeout=TIMEOUT)
    assert_one_error(done, f"{dir_3d / 'stream.json'}: {field}")


@pytest.mark.parametrize("indexed", [False, True], ids=["found-when-indexing", "found-in-a-loader-worker"])
def test_features_stored_as_strings_skip_their_video(tmp_path: Path, corpus: Path, indexed: bool) -> None:
    """Strings where numbers belong: skipped when the index is built, or (an index built before the damage)
    when a data-loader worker reads the rows. The damage keeps each file's size and mtime, so the index's
    stamps cannot see it (a changed stamp is refused at the start: test_corpus_index) and the worker must."""
    dir_2d, dir_3d = _features(corpus, tmp_path)
    settings = _sample_settings(corpus, tmp_path, dir_2d, dir_3d)
    if indexed:
        _ran(run_cli(["data", "index", "sample", "--config", "tiny", "--workers", "1", *settings], tmp_path))
    # 9 of the 11 training videos (sample_0006 is the validation one): the first batches meet one for certain
    damaged = [f"sample_{i:04d}" for i in range(10) if i != 6]
    for video_id in damaged:
        path = dir_2d / f"{video_id}.npy"
        before, features = path.stat(), np.load(path)
        np.save(path, np.full(features.shape, b"5", dtype=f"S{features.dtype.itemsize}"))  # bytes as wide as a number
        assert path.stat().st_size == before.st_size
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    train = ["--set", "train.max_steps=2", "--set", "train.batch_size=8", "--set", f"data.workers={int(indexed)}"]
    argv = ["pretrain", "--data", "sample", "--config", "tiny", *settings, *train, "--out", str(tmp_path / "run")]
    done = run_cli(argv, tmp_path, timeout=TIMEOUT)
    _ran(done)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "are not numbers (dtype |S" in output and any(v in output for v in damaged), output


@pytest.mark.parametrize("bad", ["strings", "objects"])
def test_visualize_features_stored_as_strings_or_objects_is_one_error(tmp_path: Path, clip: Path, bad: str) -> None:
    (tmp_path / "f" / "2d").mkdir(parents=True)
    array = np.full((2, 4), "0.5x") if bad == "strings" else np.array([[None, "a"], [1, 2]], dtype=object)
    np.save(tmp_path / "f" / "2d" / "v.npy", array, allow_pickle=True)
    shutil.copy(clip, tmp_path / "v.avi")
    argv = ["visualize", "video", "v.avi", "--features", "f", "--out", "v.png"]
    assert_one_error(run_cli(argv, tmp_path, timeout=TIMEOUT), "v.npy")


# ---------------------------------------------------------------------------------------------------
# visualize: damaged metrics logs and dense-caption records


def test_visualize_run_leaves_out_metrics_rows_without_a_step(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    rows = [{"step": 1, "loss": 2.0}, {"loss": 1.5}, {"step": 2, "loss": 1.0}, {"step": None, "loss": 0.5}]
    (tmp_path / "run" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    done = run_cli(["visualize", "run", "run", "--out", "c.png"], tmp_path, timeout=TIMEOUT)
    _ran(done)
    assert done.returncode == 0 and (tmp_path / "c.png").is_file(), done.stderr
    assert '2 of 4 rows have no numeric "step"' in done.stderr, done.stderr


def _record(frames: object, interval: object = 1.0) -> str:
    return json.dumps({"format": "decembert.densecap/1", "video_id": "v", "interval": interval, "frames": frames})


REGION = {"caption": "a cup", "box": [1, 2, 30, 40], "score": None}


@pytest.mark.parametrize(
    ("record", "needle"),
    [
        (_record([{"time": 0.0, "regions": [{**REGION, "box": ["a", "b", "c", "d"]}]}]), "frame 0, region 0"),
        (_record([{"time": 0.0, "regions": [{**REGION, "box": [1, 2, 3]}]}]), "frame 0, region 0"),
        (_record([{"time": 0.0, "regions": [REGION]}, {"time": 1.0, "regions": "a cup"}]), "frame 1"),
        (_record([{"regions": [REGION]}]), "frame 0"),
        (_record([{"time": 0.0, "regions": [REGION]}], interval=float("nan")), "interval"),
    ],
    ids=["box-of-words", "box-of-three", "regions-not-a-list", "frame-without-time", "interval-nan"],
)
def test_visualize_a_damaged_dense_caption_record_is_one_error(
    tmp_path: Path, clip: Path, record: str, needle: str
) -> None:
    shutil.copy(clip, tmp_path / "v.avi")
    (tmp_path / "v.json").write_text(record)
    done = run_cli(["visualize", "video", "v.avi", "--densecap", "v.json", "--out", "v.png"], tmp_path, timeout=TIMEOUT)
    line = assert_one_error(done, "v.json")
    assert needle in line, line
