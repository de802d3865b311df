"""The feature store: one .npy per video per stream, as HowTo100M users have them, plus metadata.

    OUT/2d/<video_id>.npy     (T, D) features, T = one per second of video
    OUT/3d/<video_id>.npy     (T3, D) on the same 1 s grid (layout "decembert") or at 1.5/s
                              (layout "howto100m": back-to-back 16-frame clips at 24 fps)
    OUT/2d/stream.json        format, stream, layout, rate (features per second), dtype,
    OUT/3d/stream.json        normalisation, backbone, weights and their SHA-256, resolution, crop
    OUT/videos.jsonl          one line per extracted video (source, decoder, duration, counts)
    OUT/failures.jsonl        one line per video that failed, with the reason

A stream folder without stream.json is read as HowTo100M's own (2D at 1/s, 3D at `data.fps_3d`).
Every .npy is written atomically, so a file that exists is complete.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from decembert_cli.config.loader import check_value
from decembert_cli.config.schema import Count, Rate
from decembert_cli.data.jobs import keep_settings
from decembert_cli.errors import DecembertError
from decembert_cli.io import atomic_write_bytes, decode_json

FEATURES_FORMAT = "decembert.features/1"
STREAM_FILE = "stream.json"
LAYOUTS = ("decembert", "howto100m")


def read_stream_meta(folder: Path) -> dict[str, Any] | None:
    """The stream.json of a feature folder, or None when it has none (HowTo100M's own folders).

    Its `rate` (features per second, a `Rate`) and `dim` (a `Count`) are checked: every reader
    divides by the one and builds the model of the other."""
    path = Path(folder) / STREAM_FILE
    if not path.is_file():
        return None
    try:
        meta = decode_json(path.read_text(encoding="utf-8"), str(path))
    except (OSError, UnicodeDecodeError) as exc:
        raise DecembertError(
            f"cannot read {path} ({exc}); delete it if the folder holds HowTo100M's own features"
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != FEATURES_FORMAT:
        raise DecembertError(
            f"{path} is not a {FEATURES_FORMAT} stream file "
            f"(format {meta.get('format') if isinstance(meta, dict) else None!r})"
        )
    for key, kind, what in (("rate", Rate, "features per second"), ("dim", Count, "the width of a feature")):
        if key not in meta:
            raise DecembertError(f"{path}: {key} is missing ({what}); extract the features again, or write it")
        meta[key] = check_value(meta[key], kind, f"{path}: {key} ({what})")
    return meta


def write_stream_meta(folder: Path, meta: dict[str, Any]) -> None:
    """Write `meta` as the folder's stream.json; an existing one must agree (same extraction settings)."""
    keep_settings(Path(folder) / STREAM_FILE, {"format": FEATURES_FORMAT, **meta}, read_stream_meta(folder), "features")


def npy_bytes(array: np.ndarray) -> bytes:
    """The bytes of `array` as a .npy file (object arrays, such as the paper's dense captions, pickled)."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=array.dtype == object)
    return buffer.getvalue()


def write_features(path: Path, array: np.ndarray) -> None:
    """Atomically write one (T, D) feature array."""
    atomic_write_bytes(path, npy_bytes(np.ascontiguousarray(array)))
