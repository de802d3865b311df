"""Dense captions: the paper's per-2 s `.npy` layout, read without trusting pickle, and normalisation.

The paper's code stores one object array per video, one entry per 2 s step (index `int(t // 2)`),
each a list of caption strings that may contain `<unk>`. Object arrays are pickles; `np.load(...,
allow_pickle=True)` would run any code the file names. This reader unpickles with an allow-list of
the three numpy callables an object array needs, so a hostile file fails instead of running.
"""

from __future__ import annotations

import pickle
import re
import reprlib
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib import format as npy_format

from decembert_cli.config.loader import check_value
from decembert_cli.config.schema import Interval, NonNegative
from decembert_cli.data.howto100m import BadVideo, collapse_spaces
from decembert_cli.densecap.regions import Region
from decembert_cli.errors import DecembertError
from decembert_cli.io import decode_json

_ALLOWED = {
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "_reconstruct"),  # files written by numpy < 2
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _as_text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def read_paper_npy(path: str | Path) -> list[list[str]]:
    """Frames (one per 2 s step) of caption strings from the paper's per-video `.npy` file."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            version = npy_format.read_magic(handle)
            shape, _fortran, dtype = (
                npy_format.read_array_header_1_0(handle)
                if version == (1, 0)
                else npy_format.read_array_header_2_0(handle)
            )
            if dtype != np.dtype(object):
                array = np.load(path, allow_pickle=False)  # e.g. a plain string array
            else:
                array = _ArrayOnlyUnpickler(handle, encoding="latin1").load()
    except (OSError, ValueError, EOFError, pickle.UnpicklingError, AttributeError, TypeError) as exc:
        raise BadVideo(f"dense captions {path.name} unreadable ({exc})", "dense captions unreadable") from None
    if not isinstance(array, np.ndarray) or array.ndim != 1:
        raise BadVideo(
            f"dense captions {path.name}: expected a 1-D array of per-frame lists, "
            f"got shape {getattr(array, 'shape', '?')}",
            "dense captions unreadable",
        )
    frames: list[list[str]] = []
    for i, entry in enumerate(array.tolist()):
        if isinstance(entry, (str, bytes)):
            frames.append([_as_text(entry)])
        elif isinstance(entry, (list, tuple, np.ndarray)):
            frames.append([_as_text(c) for c in entry])
        elif entry is None:
            frames.append([])
        else:
            raise BadVideo(
                f"dense captions {path.name}: frame {i} is a {type(entry).__name__}, expected a list of strings",
                "dense captions unreadable",
            )
    return frames


_UNK = re.compile(r"<unk>|<loc_\d+>|</?s>|<pad>", re.IGNORECASE)  # unknown words, location and special tokens


def normalise_frames(frames: list[list[str]]) -> list[list[str]]:
    """As the paper: lower-case, drop `<unk>` and location tokens, and drop captions repeated on contiguous frames.

    A caption is dropped from frame t when frame t-1 had the same caption (after normalising);
    duplicates within one frame are kept once.
    """
    out: list[list[str]] = []
    previous: set[str] = set()
    for frame in frames:
        seen: list[str] = []
        current: set[str] = set()
        for caption in frame:
            text = collapse_spaces(_UNK.sub(" ", caption.lower()))
            if not text or text in current:
                continue
            current.add(text)
            if text not in previous:
                seen.append(text)
        out.append(seen)
        previous = current
    return out


STORE_FORMAT = "decembert.densecap/1"


def store_record(video_id: str, interval: float, frames: list[dict], meta: dict) -> dict:
    """One video's record in our store: frames = [{"time": s, "regions": [{"caption", "box", "score"}]}]."""
    return {"format": STORE_FORMAT, "video_id": video_id, "interval": interval, **meta, "frames": frames}


def _store_file(path: Path) -> tuple[dict[str, Any], float]:
    """One video's record of our store, parsed, and its interval, checked as `data.dense_interval` is."""
    try:
        data = decode_json(path.read_text(encoding="utf-8"), path.name)
    except (OSError, UnicodeDecodeError, DecembertError) as exc:
        raise BadVideo(f"dense captions {path.name} unreadable ({exc})", "dense captions unreadable") from None
    if not isinstance(data, dict) or data.get("format") != STORE_FORMAT:
        raise BadVideo(f"dense captions {path.name}: not a {STORE_FORMAT} file", "dense captions unreadable")
    return data, _checked(data.get("interval"), Interval, f"dense captions {path.name}: interval (seconds)")


def read_store_json(path: str | Path) -> tuple[list[list[str]], float]:
    """(frames, seconds between frames) from one video's file in our dense-caption store (JSON).

    Layout: {"format": "decembert.densecap/1", "interval": 2.0, "frames": [frame, ...], ...} where a
    frame is {"time": s, "regions": [{"caption": ..., "box": [x1, y1, x2, y2], "score": ...}]} (as
    `decembert dense-caption` writes it) or a plain list of caption strings; other keys (backend,
    model and its hash, settings) are metadata.
    """
    path = Path(path)
    data, interval = _store_file(path)
    frames = data.get("frames")
    if isinstance(frames, list):
        try:
            frames = [f if isinstance(f, list) else [r["caption"] for r in f["regions"]] for f in frames]
        except (TypeError, KeyError):
            frames = None
    if not isinstance(frames, list) or not all(isinstance(f, list) for f in frames):
        raise BadVideo(
            f"dense captions {path.name}: 'frames' must be a list of caption lists "
            "or of {'regions': [{'caption': ...}]}",
            "dense captions unreadable",
        )
    return [[_as_text(c) for c in frame] for frame in frames], interval


def read_store_regions(path: str | Path) -> tuple[list[tuple[float, list[Region]]], float]:
    """(frames as (time, regions), interval) from one record of our store, every field checked (for
    drawing the boxes); a frame that is a plain caption list is at its index x interval, without boxes."""
    path = Path(path)
    data, interval = _store_file(path)
    frames = data.get("frames")
    if not isinstance(frames, list):
        raise BadVideo(f"dense captions {path.name}: 'frames' must be a list", "dense captions unreadable")
    out = []
    for i, frame in enumerate(frames):
        where = f"dense captions {path.name}: frame {i}"
        if isinstance(frame, list):
            out.append((i * interval, [Region(_as_text(c), None) for c in frame]))
            continue
        if not isinstance(frame, dict):
            raise _damaged(f"{where}: expected {{'time': ..., 'regions': [...]}}, got {reprlib.repr(frame)}")
        time = _checked(frame.get("time"), NonNegative, f"{where}: time (seconds)")
        regions = frame.get("regions")
        if not isinstance(regions, list):
            raise _damaged(f"{where}: 'regions' must be a list, got {reprlib.repr(regions)}")
        out.append((time, [_region(r, f"{where}, region {j}") for j, r in enumerate(regions)]))
    return out, interval


def _region(entry: object, where: str) -> Region:
    """One region of a store record: a caption and a box of 4 finite numbers (or null)."""
    if not isinstance(entry, dict) or "caption" not in entry:
        raise _damaged(f"{where}: expected {{'caption': ..., 'box': ...}}, got {reprlib.repr(entry)}")
    box = entry.get("box")
    if box is None:
        return Region(_as_text(entry["caption"]), None)
    xyxy = _checked(box, tuple[float, float, float, float], f"{where}: box")  # [x1, y1, x2, y2] in pixels
    return Region(_as_text(entry["caption"]), xyxy)


def _checked(value: Any, kind: Any, where: str) -> Any:
    """`check_value` for a field of a store record: its error is the video's."""
    try:
        return check_value(value, kind, where)
    except DecembertError as exc:
        raise _damaged(str(exc)) from None


def _damaged(reason: str) -> BadVideo:
    return BadVideo(reason, "dense captions unreadable")


def read_dense_captions(path: str | Path, default_interval: float) -> tuple[list[list[str]], float]:
    """Normalised frames and their interval from a paper `.npy` (at `default_interval`) or a store `.json`."""
    path = Path(path)
    if path.suffix == ".json":
        frames, interval = read_store_json(path)
    else:
        frames, interval = read_paper_npy(path), default_interval
    return normalise_frames(frames), interval
