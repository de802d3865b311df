"""Dense captions in the paper's `.npy` layout: a safe reader and the normalisation rules."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from decembert_cli.data.densecap import normalise_frames, read_paper_npy
from decembert_cli.data.howto100m import BadVideo


def _object_array(frames: list[Any]) -> np.ndarray:
    array = np.empty(len(frames), dtype=object)
    for i, frame in enumerate(frames):
        array[i] = frame
    return array


def test_reads_the_papers_object_arrays(tmp_path: Path) -> None:
    frames = [["a man <unk> a knife", "white plate"], [], ["white plate", "red onion"]]
    np.save(tmp_path / "vid.npy", _object_array(frames), allow_pickle=True)
    assert read_paper_npy(tmp_path / "vid.npy") == frames


def test_refuses_pickles_that_would_run_code(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self) -> tuple[Callable[[str], int], tuple[str]]:
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    np.save(tmp_path / "evil.npy", _object_array([[Evil()]]), allow_pickle=True)
    with pytest.raises(BadVideo, match="refusing to load"):
        read_paper_npy(tmp_path / "evil.npy")
    assert not (tmp_path / "pwned").exists()


def test_bad_files_are_bad_videos(tmp_path: Path) -> None:
    (tmp_path / "junk.npy").write_bytes(b"not an npy file")
    with pytest.raises(BadVideo, match="unreadable"):
        read_paper_npy(tmp_path / "junk.npy")
    np.save(tmp_path / "matrix.npy", np.zeros((2, 2)))
    with pytest.raises(BadVideo, match="1-D array"):
        read_paper_npy(tmp_path / "matrix.npy")
    with pytest.raises(BadVideo, match="unreadable"):
        read_paper_npy(tmp_path / "missing.npy")


def test_normalisation_drops_unk_case_and_contiguous_repeats() -> None:
    frames = [
        ["A man <UNK> a knife", "white plate", "white plate"],
        ["White plate", "red onion"],
        ["red onion", "white plate"],
        [],
        ["red onion"],
    ]
    assert normalise_frames(frames) == [
        ["a man a knife", "white plate"],
        ["red onion"],  # "white plate" repeats frame 0
        [],  # both repeat frame 1 ("white plate" was in frame 1 too, before filtering)
        [],
        ["red onion"],  # frame 3 was empty: not contiguous with frame 2
    ]


def test_our_json_store_and_the_paper_layout_read_alike(tmp_path: Path) -> None:
    import json

    from decembert_cli.data.densecap import STORE_FORMAT, read_dense_captions

    frames = [["A red <unk> tomato", "wooden table"], ["wooden table", "knife"]]
    (tmp_path / "v.json").write_text(
        json.dumps({"format": STORE_FORMAT, "interval": 1.0, "model": "x", "frames": frames})
    )
    array = np.empty(2, dtype=object)
    array[0], array[1] = frames
    np.save(tmp_path / "v.npy", array, allow_pickle=True)
    from_json = read_dense_captions(tmp_path / "v.json", 2.0)
    from_npy = read_dense_captions(tmp_path / "v.npy", 2.0)
    assert from_json == ([["a red tomato", "wooden table"], ["knife"]], 1.0)  # the store's own interval
    assert from_npy == (from_json[0], 2.0)
    (tmp_path / "bad.json").write_text(json.dumps({"format": "other", "frames": []}))
    with pytest.raises(BadVideo, match="not a decembert.densecap/1 file"):
        read_dense_captions(tmp_path / "bad.json", 2.0)
