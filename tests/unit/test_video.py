"""Video decoding and time-grid sampling, checked against a naive decode-everything reference."""

from __future__ import annotations

import math

import numpy as np
import pytest

from decembert_cli.data import video as V
from tests.videos import read_index, rotate_mp4, write_vfr_video, write_video

DECODERS = ("opencv", "pyav")
SQUARE = (64, 64)  # grids of size 64 keep every pixel: the frame index stays readable


def _items(path, grids, decoder="auto"):
    decoded = V.Decoded()
    video = V.open_video(path, decoder)
    try:
        items = list(V.sample(video, grids, decoded))
    finally:
        video.close()
    by_stream = [sorted((i for i in items if i.stream == s), key=lambda i: i.k) for s in range(len(grids))]
    return by_stream, decoded


def _naive_frames(path):
    """Reference: decode every frame with PyAV, keep (pts seconds, index read from the pixels)."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = float(stream.average_rate or stream.guessed_rate)
        out = [
            (float(f.pts * stream.time_base), read_index(f.to_ndarray(format="rgb24")))
            for f in container.decode(stream)
        ]
    return out, rate


def _naive_index_at(frames, period, t):
    """The documented rule, written plainly: the first frame whose display period reaches past t."""
    for pts, index in frames:
        if t < pts + period:
            return index
    return frames[-1][1]


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("fps,frames", [(24, 240), (30, 301), (25, 8), (60, 150), (12.5, 100), (1, 7), (29.97, 300)])
def test_one_feature_per_second_of_video(tmp_path, decoder, fps, frames):
    path = write_video(tmp_path / "v.avi", fps, frames, SQUARE)
    grids = [V.image_grid(64), V.clip_grid(64, 16, 24), V.consecutive_clip_grid(64, 16, 24)]
    (i2, i3, ih), decoded = _items(path, grids, decoder)
    duration = frames / fps
    assert decoded.frames == frames and decoded.duration == pytest.approx(duration, abs=1e-3)
    expected = max(1, math.ceil(duration - 0.5 - 1e-9))
    assert len(i2) == len(i3) == expected
    assert abs(len(i2) - duration) <= 1  # the must-show: 1 feature/s within one
    assert len(ih) == max(1, math.floor((24 * duration + 1e-6 + 1) / 16))  # HowTo100M: whole 16-frame clips at 24 fps
    for items in (i2, i3, ih):
        assert [i.k for i in items] == list(range(len(items)))


@pytest.mark.parametrize("decoder", DECODERS)
def test_frames_come_from_the_requested_times(tmp_path, decoder):
    fps, frames = 30, 125
    path = write_video(tmp_path / "v.avi", fps, frames, SQUARE)
    (i2, i3), _ = _items(path, [V.image_grid(64), V.clip_grid(64, 16, 24)], decoder)
    for item in i2:
        assert read_index(item.pixels[0]) == math.floor((item.k + 0.5) * fps)
    for item in i3:
        got = [read_index(p) for p in item.pixels]
        want = [min(frames - 1, math.floor((item.k + 0.5 + (j - 7.5) / 24) * fps + 1e-9)) for j in range(16)]
        assert got == want


@pytest.mark.parametrize("decoder", DECODERS)
def test_variable_frame_rate_uses_timestamps(tmp_path, decoder):
    times = [0, 33, 66, 400, 433, 1000, 1500, 1533, 2600, 3100]
    path = write_vfr_video(tmp_path / "vfr.mp4", times, SQUARE)
    (i2, i3), decoded = _items(path, [V.image_grid(64), V.clip_grid(64, 16, 24)], decoder)
    frames, _ = _naive_frames(path)
    assert [p for p, _ in frames] == pytest.approx([t / 1000 for t in times])
    period = decoded.duration - frames[-1][0]  # the decoder's nominal frame period
    assert [read_index(i.pixels[0]) for i in i2] == [_naive_index_at(frames, period, k + 0.5) for k in range(len(i2))]
    assert len(i2) == max(1, math.ceil(decoded.duration - 0.5))
    for item in i3:
        want = [_naive_index_at(frames, period, max(0.0, t)) for t in V.clip_grid(64, 16, 24).times(item.k)]
        assert [read_index(p) for p in item.pixels] == want


@pytest.mark.parametrize("decoder", DECODERS)
def test_grayscale_odd_sizes_and_single_frames(tmp_path, decoder):
    gray = write_video(tmp_path / "gray.avi", 25, 30, (97, 63), gray=True)
    (items,), _ = _items(gray, [V.image_grid(32)], decoder)
    assert items[0].pixels.shape == (1, 32, 32, 3) and items[0].pixels.dtype == np.uint8
    assert np.array_equal(items[0].pixels[..., 0], items[0].pixels[..., 2])  # gray -> equal RGB channels
    (up,), _ = _items(gray, [V.image_grid(112)], decoder)  # upscaled from 63 px
    assert up[0].pixels.shape == (1, 112, 112, 3)
    one = write_video(tmp_path / "one.avi", 30, 1, SQUARE)
    (i2, i3, ih), decoded = _items(
        one, [V.image_grid(64), V.clip_grid(64, 16, 24), V.consecutive_clip_grid(64, 16, 24)], decoder
    )
    assert decoded.frames == 1 and [len(i2), len(i3), len(ih)] == [1, 1, 1]
    assert [read_index(p) for p in i3[0].pixels] == [0] * 16


def test_rotation_metadata_is_applied_by_both_decoders(tmp_path):
    import cv2

    src = tmp_path / "wide.mp4"
    writer = cv2.VideoWriter(str(src), cv2.VideoWriter_fourcc(*"mp4v"), 24, (64, 32))
    for _ in range(24):
        frame = np.zeros((32, 64, 3), np.uint8)
        frame[:, :16] = 255  # a white band on the left edge
        writer.write(frame)
    writer.release()
    rotated = rotate_mp4(src, tmp_path / "portrait.mp4")
    for decoder in DECODERS:
        video = V.open_video(rotated, decoder)
        _, fetch = next(iter(video.frames()))
        image = fetch()
        video.close()
        assert image.shape == (64, 32, 3), decoder  # portrait
        assert image[:8].mean() > 200 and image[-8:].mean() < 50, decoder  # left band turned to the top


def test_decoders_agree_and_auto_falls_back_to_pyav(tmp_path, monkeypatch):
    path = write_video(tmp_path / "v.avi", 24, 60, SQUARE)
    grids = [V.image_grid(64), V.clip_grid(64, 16, 24)]
    (a2, a3), _ = _items(path, grids, "opencv")
    (b2, b3), _ = _items(path, grids, "pyav")
    assert [read_index(i.pixels[0]) for i in a2] == [read_index(i.pixels[0]) for i in b2]
    assert [[read_index(p) for p in i.pixels] for i in a3] == [[read_index(p) for p in i.pixels] for i in b3]

    def refuse(self, path):
        raise V.VideoError("OpenCV cannot open it", "cannot decode")

    monkeypatch.setattr(V._OpenCV, "__init__", refuse)
    video = V.open_video(path)
    assert video.info.backend == "pyav"
    video.close()


def test_only_needed_frames_are_converted(tmp_path):
    fps, seconds = 30, 10
    path = write_video(tmp_path / "v.avi", fps, fps * seconds, SQUARE)
    video = V.open_video(path, "opencv")
    fetched = [0]
    frames = video.frames

    def counting():
        for t, fetch in frames():

            def wrapped(fetch=fetch):
                fetched[0] += 1
                return fetch()

            yield t, wrapped

    video.frames = counting
    items = list(V.sample(video, [V.image_grid(64)]))
    video.close()
    assert len(items) == seconds
    assert fetched[0] <= seconds + fps  # one per second, plus the first frames kept in case the video ends early


def test_unusable_files_raise_video_errors(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.touch()
    text = tmp_path / "notes.mp4"
    text.write_text("not a video at all\n" * 50)
    cut = tmp_path / "cut.mp4"
    whole = write_video(tmp_path / "whole.mp4", 24, 48, SQUARE, fourcc="mp4v").read_bytes()
    cut.write_bytes(whole[: len(whole) // 2])  # mp4 index (moov) at the end: lost
    codec = tmp_path / "codec.avi"  # an AVI whose video codec tag no decoder knows
    codec.write_bytes(write_video(tmp_path / "ok.avi", 24, 24, SQUARE).read_bytes().replace(b"MJPG", b"QQQQ"))
    kinds = {}
    for path in (empty, text, cut, codec, tmp_path / "missing.mp4"):
        with pytest.raises(V.VideoError) as err:
            V.open_video(path)
        kinds[path.name] = err.value.kind
    assert kinds == {
        "empty.mp4": "empty file",
        "notes.mp4": "cannot decode",
        "cut.mp4": "cannot decode",
        "codec.avi": "unsupported codec",
        "missing.mp4": "unreadable",
    }
