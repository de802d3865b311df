"""jsonl: a pre-training corpus whose ASR captions are one JSON Lines file, as speech recognisers write
their segments (Whisper and its kin): one caption per line,

    {"video_id": "abc", "start": 12.3, "end": 15.9, "text": "now add the flour"}

in `data.root/captions.jsonl` (or the .jsonl file `data.captions` names), in any order. Features and
dense captions are in decembert's store layout under `data.root` (`features/2d/ID.npy`,
`features/3d/ID.npy`, `dense_captions/`), as `decembert extract-features` and `decembert dense-caption`
write them. Everything after reading the file is decembert's: the captions are cleaned, cut to the
features and checked by the same `usable_video` as HowTo100M's, and sampling, masking and negatives are
shared. `decembert pretrain --data jsonl --set data.root=DIR` trains on it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from decembert_cli.api import (
    DataConfig,
    DataReport,
    DecembertError,
    VideoCaptions,
    VideoRecord,
    VideoStore,
    usable_videos,
)

__version__ = "0.1.0"
DEFAULT_FILE = "captions.jsonl"


class JsonlCaptions:
    """The captions of a JSON Lines file, by video (a `CaptionSource`: `ids()` and `get(video_id)`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._by_video: dict[str, list[tuple[float, float, str]]] = {}
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise DecembertError(f"{path}: cannot be read ({exc}); give a UTF-8 JSON Lines file") from None
        for n, line in enumerate(lines, start=1):
            if line.strip():
                video_id, caption = self._parse(line, n)
                self._by_video.setdefault(video_id, []).append(caption)

    def _parse(self, line: str, n: int) -> tuple[str, tuple[float, float, str]]:
        where = f"{self.path}, line {n}"
        try:
            row: Any = json.loads(line)
        except ValueError as exc:
            raise DecembertError(f"{where}: not JSON ({exc})") from None
        if not isinstance(row, dict):
            raise DecembertError(f'{where}: a line is an object {{"video_id", "start", "end", "text"}}')
        video_id, start, end, text = (row.get(k) for k in ("video_id", "start", "end", "text"))
        if not isinstance(video_id, str) or not isinstance(text, str):
            raise DecembertError(f'{where}: "video_id" and "text" must be strings')
        if not all(isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t) for t in (start, end)):
            raise DecembertError(f'{where}: "start" and "end" must be numbers of seconds')
        assert isinstance(start, (int, float)) and isinstance(end, (int, float))  # (checked above)
        return video_id, (float(start), float(end), text)

    def ids(self) -> list[str]:
        return sorted(self._by_video)

    def get(self, video_id: str) -> VideoCaptions:
        rows = sorted(self._by_video.get(video_id, []))
        return VideoCaptions(video_id, [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])


def open_jsonl(
    config: DataConfig,
    report: DataReport,
    dims: tuple[int, int],
    progress: Callable[[int, int], None] | None = None,
) -> list[VideoRecord]:
    """The corpus' usable videos (a `CorpusOpener`): those the file captions, each checked as HowTo100M's are;
    the others are passed to `report.skip` with the reason (`usable_videos`, as for HowTo100M)."""
    store = VideoStore(config, dims, section="data")
    name = config.captions if str(config.captions).endswith(".jsonl") else DEFAULT_FILE
    path = store.root / name
    if not path.is_file():
        raise DecembertError(f"{path} not found: the jsonl corpus reads its captions there (data.captions)")
    store.require_folders()
    source = JsonlCaptions(path)
    return usable_videos(store, source.ids(), source, False, config.min_clips, report, progress)
