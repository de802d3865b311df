"""`dense-caption --backend import`: other tools' dense captions round-trip into our store."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from decembert_cli.app import app
from decembert_cli.data.densecap import read_dense_captions
from decembert_cli.data.feature_store import npy_bytes
from decembert_cli.densecap.backends import captioners
from decembert_cli.densecap.pipeline import CaptionOptions, import_captions
from decembert_cli.errors import DecembertError

# Two videos, frames every 2 s, regions as (caption, x1, y1, x2, y2, score).
TRUTH = {
    "video7": [
        [("a red car", 10, 20, 110, 70, 4.5), ("a <unk> on the road", 0, 0, 320, 240, 1.25)],
        [("a red car", 12, 20, 112, 70, 3.0)],
        [],
        [("a man wearing a hat", 200, 5, 260, 90, -0.5)],
    ],
    "video8": [
        [("a white plate", 30, 40, 90, 100, 2.0)],
        [("a white plate", 31, 40, 91, 100, 2.5), ("a fork", 5, 6, 7, 8, 0.1)],
    ],
}


def _johnson(names) -> dict:  # noqa: ANN001
    results = []
    for video, frames in TRUTH.items():
        for n, regions in enumerate(frames):
            results.append(
                {
                    "img_name": names(video, n),
                    "captions": [r[0] for r in regions],
                    "boxes": [[r[1], r[2], r[3] - r[1], r[4] - r[2]] for r in regions],
                    "scores": [r[5] for r in regions],
                }
            )
    return {"opt": {"num_to_draw": 10}, "results": results}


def _yang(names) -> dict:  # noqa: ANN001
    return {
        names(video, n): {
            "captions": [r[0] for r in regions],
            "boxes": [list(r[1:5]) for r in regions],
            "logprobs": [r[5] for r in regions],
        }
        for video, frames in TRUTH.items()
        for n, regions in enumerate(frames)
    }


def _store(out: Path, video: str) -> dict:
    return json.loads((out / f"{video}.json").read_text())


def _regions(record: dict) -> list[list[tuple]]:
    return [[(r["caption"], *r["box"], r["score"]) for r in f["regions"]] for f in record["frames"]]


def _run(inputs: list[Path], out: Path, **options: str):  # noqa: ANN202
    importer = captioners.load("import")(None, torch.device("cpu"), None, options)
    return import_captions(inputs, importer, CaptionOptions(out=out))


@pytest.mark.parametrize("fmt", ["johnson", "yang"])
def test_densecap_json_round_trips_into_the_store(tmp_path: Path, fmt: str) -> None:
    names = lambda video, n: f"frames/{video}/{n + 1:06d}.jpg"  # noqa: E731  ffmpeg's %06d numbering, from 1
    (tmp_path / "dc.json").write_text(json.dumps(_johnson(names) if fmt == "johnson" else _yang(names)))
    summary = _run([tmp_path / "dc.json"], tmp_path / "store")
    assert (summary.captioned, summary.frames, sum(summary.failed.values())) == (2, 6, 0)
    for video, frames in TRUTH.items():
        record = _store(tmp_path / "store", video)
        assert record["format"] == "decembert.densecap/1" and record["backend"] == "import"
        assert record["imported_from"].startswith("densecap")
        assert [f["time"] for f in record["frames"]] == [2.0 * n for n in range(len(frames))]
        assert _regions(record) == [
            [(r[0], *map(float, r[1:6])) for r in f] for f in frames
        ]  # xywh -> xyxy for Johnson's
        captions, interval = read_dense_captions(tmp_path / "store" / f"{video}.json", 2.0)  # what pre-training reads
        assert interval == 2.0 and len(captions) == len(frames)
    assert read_dense_captions(tmp_path / "store" / "video7.json", 2.0)[0][0] == ["a red car", "a on the road"]


def test_the_papers_npy_round_trips_and_reads_as_the_npy_does(tmp_path: Path) -> None:
    frames = np.empty(3, dtype=object)
    frames[:] = [["a <unk> on a table", "a red bowl"], ["a red bowl", "a white wall"], []]
    (tmp_path / "npy").mkdir()
    (tmp_path / "npy" / "vid_a.npy").write_bytes(npy_bytes(frames))
    summary = _run([tmp_path / "npy"], tmp_path / "store")
    assert summary.captioned == 1
    record = _store(tmp_path / "store", "vid_a")
    assert [f["time"] for f in record["frames"]] == [0.0, 2.0, 4.0]
    assert [[r["caption"] for r in f["regions"]] for f in record["frames"]] == [list(f) for f in frames]
    assert all(r["box"] is None and r["score"] is None for f in record["frames"] for r in f["regions"])
    assert read_dense_captions(tmp_path / "store" / "vid_a.json", 2.0) == read_dense_captions(
        tmp_path / "npy" / "vid_a.npy", 2.0
    )


def test_other_namings_through_the_pattern_and_frame_base(tmp_path: Path) -> None:
    (tmp_path / "flat.json").write_text(json.dumps(_yang(lambda video, n: f"/data/{video}_{n:04d}.png")))
    _run([tmp_path / "flat.json"], tmp_path / "a", frame_base="0")
    assert [f["time"] for f in _store(tmp_path / "a", "video7")["frames"]] == [0.0, 2.0, 4.0, 6.0]
    (tmp_path / "timed.json").write_text(json.dumps(_yang(lambda video, n: f"{video}@{n * 2.5:.1f}s.jpg")))
    _run([tmp_path / "timed.json"], tmp_path / "b", pattern=r"(?P<video>\w+)@(?P<time>[\d.]+)s")
    assert [f["time"] for f in _store(tmp_path / "b", "video8")["frames"]] == [0.0, 2.5]
    with pytest.raises(DecembertError, match="name the groups"):
        _run([tmp_path / "timed.json"], tmp_path / "c", pattern=r"(?P<video>\w+)")


def test_unreadable_entries_become_failures_and_a_rerun_imports_nothing_twice(tmp_path: Path) -> None:
    data = _johnson(lambda video, n: f"{video}/{n + 1}.jpg")
    data["results"].append({"img_name": "cover.jpg", "captions": [], "boxes": [], "scores": []})
    data["results"][-2]["boxes"] = data["results"][-2]["boxes"][:1]  # video8's last frame: 1 box for 2 captions
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "dc.json").write_text(json.dumps(data))
    (tmp_path / "in" / "garbage.json").write_text("{not json")
    (tmp_path / "in" / "other.json").write_text(json.dumps({"some": "thing"}))
    (tmp_path / "in" / "README.txt").write_text("notes")
    out = tmp_path / "store"
    summary = _run([tmp_path / "in"], out)
    assert summary.captioned == 1 and summary.ignored_files == [str(tmp_path / "in" / "README.txt")]
    failures = {f["video_id"]: f for f in map(json.loads, (out / "failures.jsonl").read_text().splitlines())}
    assert {k: f["kind"] for k, f in failures.items()} == {
        "dc": "unmatched image name",
        "video8": "bad entry",
        "garbage": "unreadable",
        "other": "unknown format",
    }
    assert "'cover.jpg'" in failures["dc"]["reason"] and "2 captions" in failures["video8"]["reason"]
    before = (out / "video7.json").stat().st_mtime_ns
    again = _run([tmp_path / "in"], out)
    assert (again.captioned, again.already_done) == (0, 1)
    assert (out / "video7.json").stat().st_mtime_ns == before
    assert [json.loads(line)["video_id"] for line in (out / "videos.jsonl").read_text().splitlines()] == ["video7"]
    assert sorted(json.loads(line)["video_id"] for line in (out / "failures.jsonl").read_text().splitlines()) == sorted(
        failures
    )


def test_shards_split_the_videos_and_the_command_runs_the_import(tmp_path: Path) -> None:
    (tmp_path / "dc.json").write_text(json.dumps(_yang(lambda video, n: f"{video}/{n + 1}.jpg")))
    runner = CliRunner()
    for shard in ("0/2", "1/2"):
        result = runner.invoke(
            app,
            [
                "dense-caption",
                str(tmp_path / "dc.json"),
                "--backend",
                "import",
                "--out",
                str(tmp_path / "s"),
                "--shard",
                shard,
            ],
        )
        assert result.exit_code == 0, result.output
    assert sorted(p.stem for p in (tmp_path / "s").glob("video*.json")) == ["video7", "video8"]
    logged = [
        json.loads(line)["video_id"]
        for name in ("videos.shard-0000-of-0002.jsonl", "videos.shard-0001-of-0002.jsonl")
        for line in (tmp_path / "s" / name).read_text().splitlines()
    ]
    assert sorted(logged) == ["video7", "video8"]
    bad = runner.invoke(
        app,
        [
            "dense-caption",
            str(tmp_path / "dc.json"),
            "--backend",
            "import",
            "--model",
            "x",
            "--out",
            str(tmp_path / "t"),
        ],
    )
    assert bad.exit_code == 2 and "the import backend has no model" in bad.output


def test_densecap_base_names_take_the_video_from_the_file_or_the_option(tmp_path: Path) -> None:
    data = {
        "results": [
            {"img_name": f"{n:06d}.jpg", "captions": ["a cup"], "boxes": [[1, 2, 3, 4]], "scores": [1.0]}
            for n in (1, 2)
        ]
    }
    (tmp_path / "video9.json").write_text(json.dumps(data))  # run_model.lua keeps only the base name
    _run([tmp_path / "video9.json"], tmp_path / "a")
    assert [f["time"] for f in _store(tmp_path / "a", "video9")["frames"]] == [0.0, 2.0]
    _run([tmp_path / "video9.json"], tmp_path / "b", video="clip_x")
    assert (tmp_path / "b" / "clip_x.json").is_file()


@pytest.mark.parametrize(
    ("options", "names", "bad_id"),
    [
        ({"pattern": r"(?P<video>.+)/(?P<frame>\d+)\.jpg"}, lambda video, n: f"../{video}/{n + 1}.jpg", "../video7"),
        (
            {"pattern": r"(?P<video>.+)/(?P<frame>\d+)\.jpg"},
            lambda video, n: f"/tmp/{video}/{n + 1}.jpg",
            "/tmp/video7",
        ),
        ({"pattern": r"(?P<video>[^/]+)/(?P<frame>\d+)\.jpg"}, lambda video, n: f".{video}/{n + 1}.jpg", ".video7"),
        ({"video": "../escape"}, lambda video, n: f"{n + 1 + 10 * (video == 'video8'):06d}.jpg", "../escape"),
    ],
)
def test_unsafe_video_ids_fail_and_nothing_is_written_outside_out(tmp_path: Path, options, names, bad_id: str) -> None:  # noqa: ANN001
    work = tmp_path / "work"
    work.mkdir()
    source = work / "in.json"
    source.write_text(json.dumps(_johnson(names)))
    out = work / "deep" / "store"
    before = {p for p in tmp_path.rglob("*")}
    summary = _run([source], out, **options)
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert bad_id in {f["video_id"] for f in failures} and summary.failed["unsafe id"] >= 1
    created = {p for p in tmp_path.rglob("*")} - before
    assert all(out in p.parents or p == out or p in out.parents for p in created), created  # nothing outside --out
    assert not Path("/tmp/video7.json").exists()


def test_one_bad_entry_fails_that_video_only(tmp_path: Path) -> None:
    data = _johnson(lambda video, n: f"{video}/{n + 1}.jpg")
    data["results"][-1]["boxes"][0][0] = 10**400  # video8: a box too large for any image
    data["results"].append({"img_name": "video5/" + "9" * 400 + ".jpg", "captions": [], "boxes": [], "scores": []})
    (tmp_path / "dc.json").write_text(json.dumps(data))
    (tmp_path / "deep.json").write_text("[" * 100000 + "]" * 100000)
    summary = _run([tmp_path / "dc.json", tmp_path / "deep.json"], tmp_path / "out")
    # the good video of the file still imported
    assert summary.captioned == 1 and (tmp_path / "out" / "video7.json").is_file()
    failures = {
        f["video_id"]: f for f in map(json.loads, (tmp_path / "out" / "failures.jsonl").read_text().splitlines())
    }
    assert failures["video8"]["kind"] == "bad entry" and failures["dc"]["kind"] == "unmatched image name"
    assert failures["deep"]["kind"] == "unreadable" and "nested too deeply" in failures["deep"]["reason"]
