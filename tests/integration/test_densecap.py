"""dense-caption end to end: the oracle on rendered sample videos, checked against their pixels; SIGKILL and rerun."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from decembert_cli.app import app
from decembert_cli.io import LOCK_FILE
from tests.florence_tiny import save_tiny_florence2
from tests.videos import write_video


def test_oracle_captions_the_rendered_sample_corpus_and_pretraining_reads_them(tmp_path: Path) -> None:
    from decembert_cli.data.densecap import read_dense_captions
    from decembert_cli.data.sample.corpus import _dense_frames, generate, plans
    from decembert_cli.data.sample.video import background
    from decembert_cli.data.video import Decoded, frame_grid, open_video, sample

    root = generate(tmp_path / "corpus", videos=3, render=True, features="none", clips=2)
    assert not (root / "dense_captions").exists()  # left to dense-caption
    for folder, count in ((root, 3), (root / "msrvtt", 2)):  # the corpus' videos and the downstream clips
        result = CliRunner().invoke(
            app,
            ["dense-caption", str(folder / "videos"), "--backend", "oracle", "--out", str(folder / "dense_captions")],
        )
        assert result.exit_code == 0, result.output
        assert f"{count} captioned, 0 already done, 0 failed of {count} videos" in result.output
    checked = 0
    for video_id, plan in plans(root).items():
        folder = root if video_id.startswith("sample_") else root / "msrvtt"
        record = json.loads((folder / "dense_captions" / f"{video_id}.json").read_text())
        assert record["backend"] == "oracle" and (record["width"], record["height"]) == (160, 120)
        # the same captions the synthetic-feature corpus writes in the paper's layout
        assert [[r["caption"] for r in f["regions"]] for f in record["frames"]] == list(_dense_frames(plan))
        video = open_video(folder / "videos" / f"{video_id}.mp4")
        bg = background(0, plan["index"])[:, :, ::-1].astype(int)  # rendered as BGR
        for item, frame in zip(sample(video, [frame_grid(2.0)], Decoded()), record["frames"]):
            differs = np.abs(item.pixels[0].astype(int) - bg).max(axis=2) > 25  # the object's pixels
            boxes = {tuple(r["box"]) for r in frame["regions"]} - {(0.0, 0.0, 160.0, 120.0)}
            assert len(boxes) == (1 if differs.sum() > 50 else 0), (video_id, frame["time"])
            if boxes:
                x1, y1, x2, y2 = boxes.pop()
                ys, xs = np.nonzero(differs)
                # holds it
                assert x1 - 3 <= xs.min() and xs.max() <= x2 + 3 and y1 - 3 <= ys.min() and ys.max() <= y2 + 3
                assert x2 - x1 <= xs.max() - xs.min() + 6 and y2 - y1 <= ys.max() - ys.min() + 6  # and is tight
                checked += 1
        video.close()
    assert checked > 20
    # as pre-training reads it
    frames, interval = read_dense_captions(root / "dense_captions" / "sample_0000.json", 2.0)
    assert interval == 2.0 and all("<unk>" not in c for f in frames for c in f)


@pytest.fixture(scope="module")
def tiny_florence(tmp_path_factory) -> Path:
    return save_tiny_florence2(tmp_path_factory.mktemp("florence2"))


def test_killed_and_rerun_every_video_is_captioned_exactly_once(tiny_florence: Path, tmp_path: Path) -> None:
    (tmp_path / "videos").mkdir()
    for i in range(8):
        write_video(tmp_path / "videos" / f"v{i}.avi", 24, 24 * 5, size=(64, 48))
    out = tmp_path / "dc"
    command = [
        sys.executable,
        "-m",
        "decembert_cli",
        "dense-caption",
        str(tmp_path / "videos"),
        "--out",
        str(out),
        "--model",
        str(tiny_florence),
        "--batch-size",
        "1",
        "--num-beams",
        "1",
        "--max-new-tokens",
        "120",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob("v*.json"))) < 2 and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = {p.stem: p.stat().st_mtime_ns for p in out.glob("v*.json")}
    assert 2 <= len(first) < 8, f"the kill came too late or too early ({len(first)} finished)"
    rerun = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{8 - len(first)} captioned, {len(first)} already done" in rerun.stderr
    assert {
        p.stem: p.stat().st_mtime_ns for p in out.glob("v*.json") if p.stem in first
    } == first  # not captioned again
    assert sorted(p.stem for p in out.glob("v*.json")) == [f"v{i}" for i in range(8)]
    ids = [json.loads(line)["video_id"] for line in (out / "videos.jsonl").read_text().splitlines()]
    assert sorted(ids) == [f"v{i}" for i in range(8)]  # each video logged exactly once
    hidden = [p for p in out.rglob("*") if p.name.startswith(".") and p.name != LOCK_FILE]
    assert not hidden, "temporary files left behind"
    for i in range(8):
        record = json.loads((out / f"v{i}.json").read_text())
        assert [f["time"] for f in record["frames"]] == [0.0, 2.0, 4.0]


def test_a_video_whose_frames_break_the_captioner_is_failed_and_not_stored(tmp_path: Path) -> None:
    from decembert_cli.densecap.backends import Frame
    from decembert_cli.densecap.pipeline import CaptionOptions, caption_videos
    from decembert_cli.densecap.regions import Region

    class Fragile:
        def meta(self) -> dict:
            return {"backend": "fragile", "model": None, "model_sha256": None}

        def caption(self, frames: list[Frame]) -> list[list[Region]]:
            if any(f.video_id == "bad" and f.time == 0.0 for f in frames):
                raise ValueError("cannot caption this frame")
            return [[Region("a thing", (0.0, 0.0, 1.0, 1.0))] for _ in frames]

    (tmp_path / "v").mkdir()
    for name in ("bad", "good"):
        write_video(tmp_path / "v" / f"{name}.avi", 24, 24 * 7)  # 4 frames at 0, 2, 4, 6 s
    summary = caption_videos([tmp_path / "v"], Fragile(), CaptionOptions(out=tmp_path / "dc", batch_size=2))
    assert (summary.captioned, dict(summary.failed)) == (1, {"captioner error": 1})
    assert not (tmp_path / "dc" / "bad.json").exists() and (tmp_path / "dc" / "good.json").is_file()
    failure = json.loads((tmp_path / "dc" / "failures.jsonl").read_text().splitlines()[0])
    assert failure["video_id"] == "bad" and "cannot caption this frame" in failure["reason"]
