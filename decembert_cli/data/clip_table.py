"""A corpus' usable videos and clips as columns: what pre-training samples from.

One row per video (id, length of its 1 s feature grid, where its clips start) and one per clip
(start, end, where its caption's WordPiece ids start in one flat token array, the clip its caption
truly describes when known). Nothing per clip is a Python object, so a table of HowTo100M's 136M
clips costs a few arrays; read from a corpus index (`data.corpus_index`) the arrays are memory-maps
that every rank and data-loader worker shares through the page cache.

A table is made either from `VideoRecord`s (a corpus plugin's in-memory result: `from_records`,
which tokenises every caption once) or by opening a corpus index. Both give the same columns, so
pre-training draws the same samples from either (tested).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from decembert_cli.data.video_store import pick_dense
from decembert_cli.io import MAX_ID_BYTES

if TYPE_CHECKING:
    from decembert_cli.config.schema import VideoSettings
    from decembert_cli.data.scan import VideoRecord
    from decembert_cli.data.video_store import VideoStore

# WordPiece ids kept per caption in a table: BERT's 512 positions less [CLS] and [SEP]. Captions are
# cut to data.max_caption_tokens when a sample is drawn, so that setting never invalidates an index.
STORED_TOKENS = 510
TOKENIZE_CHUNK = 8192  # captions per tokenizer call


class Strings(Sequence[str]):
    """Strings stored as one UTF-8 byte array and (n + 1) offsets: item i = blob[offsets[i]:offsets[i + 1]]."""

    def __init__(self, blob: np.ndarray, offsets: np.ndarray) -> None:
        self.blob = blob
        self.offsets = offsets

    @classmethod
    def pack(cls, values: Sequence[str]) -> Strings:
        encoded = [v.encode("utf-8") for v in values]
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(e) for e in encoded], out=offsets[1:])
        return cls(np.frombuffer(b"".join(encoded), dtype=np.uint8), offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __iter__(self) -> Iterator[str]:
        data, offsets = bytes(self.blob), self.offsets.tolist()
        return (data[a:b].decode("utf-8") for a, b in zip(offsets, offsets[1:], strict=False))

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return bytes(self.blob[self.offsets[i] : self.offsets[i + 1]]).decode("utf-8")


# Bytes no safe id holds (`io.safe_id`): separators and control characters (in UTF-8, every byte below
# 0x80 is its ASCII character, so a byte test is a character test)
_REFUSED = np.zeros(256, dtype=bool)
_REFUSED[[*range(0x20), 0x7F, ord("/"), ord("\\")]] = True


def first_unsafe_id(ids: Strings) -> int | None:
    """The row of the first id that `io.safe_id` refuses, None when it accepts all: the same rule on the packed
    UTF-8 bytes at once (1.2M ids in milliseconds, where safe_id on each takes seconds). An id must be 1 to
    MAX_ID_BYTES bytes, not start with a dot, hold no refused byte, and be valid UTF-8 on its own: no id
    starts or ends inside a character, none holds bytes that are not UTF-8. `ids.offsets` must already rise
    from 0 to the blob's length."""
    blob, offsets = np.asarray(ids.blob), np.asarray(ids.offsets)
    try:
        bytes(blob).decode("utf-8")
        valid = len(blob)  # the blob's bytes before `valid` are UTF-8
    except UnicodeDecodeError as exc:
        valid = exc.start
    lengths = np.diff(offsets)
    bad = (lengths < 1) | (lengths > MAX_ID_BYTES)
    padded = np.append(blob, np.uint8(0))  # (the byte after the last id)
    starts, after = padded[np.minimum(offsets[:-1], len(blob))], padded[np.minimum(offsets[1:], len(blob))]
    # an id starting on a continuation byte (10xxxxxx) is not UTF-8 alone; inside the valid part, one followed
    # by a continuation byte ends inside a character
    bad |= (starts == ord(".")) | ((starts & 0xC0) == 0x80) | (((after & 0xC0) == 0x80) & (offsets[1:] < valid))
    rows = [int(np.argmax(bad))] if bad.any() else []
    refused = np.flatnonzero(_REFUSED[blob])
    if len(refused):
        rows.append(int(np.searchsorted(offsets, refused[0], side="right")) - 1)
    if valid < len(blob):
        rows.append(int(np.searchsorted(offsets, valid, side="right")) - 1)
    return min(rows) if rows else None


def id_rank(video_id: str) -> int:
    """The first 8 bytes of sha1(video_id) as an integer: the order of the held-out split."""
    return int.from_bytes(hashlib.sha1(video_id.encode("utf-8")).digest()[:8], "big")


def tokenize_all(tokenizer: Any, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(offsets (n + 1,), ids) of every text's WordPiece ids (no special tokens, at most STORED_TOKENS;
    [UNK] for a text that gives none, as `tokenize_captions` does)."""
    dtype = np.uint16 if len(tokenizer) <= np.iinfo(np.uint16).max + 1 else np.int32
    lengths: list[int] = []
    chunks: list[np.ndarray] = []
    for first in range(0, len(texts), TOKENIZE_CHUNK):  # in chunks: a tokenizer's output for millions is GBs
        encoded = tokenizer(
            texts[first : first + TOKENIZE_CHUNK], add_special_tokens=False, truncation=True, max_length=STORED_TOKENS
        )["input_ids"]
        encoded = [ids if ids else [tokenizer.unk_token_id] for ids in encoded]
        lengths.extend(len(ids) for ids in encoded)
        chunks.append(np.fromiter((t for ids in encoded for t in ids), dtype=dtype, count=sum(map(len, encoded))))
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets, np.concatenate(chunks) if chunks else np.zeros(0, dtype=dtype)


@dataclass
class DenseColumns:
    """Every video's dense captions as columns: video v's frames are frame_offsets[v] .. frame_offsets[v + 1] - 1,
    `interval[v]` seconds apart; frame f's captions are refs[ref_offsets[f]:ref_offsets[f + 1]] (a frame may have
    none), each the row of a distinct caption whose WordPiece ids are tokens[token_offsets[r]:token_offsets[r + 1]].

    Captions repeat across a video's frames (and between videos), so each distinct one is tokenised and stored
    once per build part (`PART_VIDEOS` videos): HowTo100M's ~136M frames (estimate: 1 per 2 s) need their
    references, not their text, per frame."""

    frame_offsets: np.ndarray  # (V + 1,) int64
    interval: np.ndarray  # (V,) float64: seconds between the video's captioned frames
    ref_offsets: np.ndarray  # (F + 1,) int64, non-decreasing
    refs: np.ndarray  # (R,) int64 in a build part, uint32 (int64 past 2**32 captions) merged: distinct captions' rows
    token_offsets: np.ndarray  # (D + 1,) int64
    tokens: np.ndarray  # (T,) uint16 (or int32 for vocabularies over 65,536)

    @classmethod
    def of(cls, videos: Sequence[tuple[list[list[str]], float]], tokenizer: Any) -> DenseColumns:
        """The columns of videos given as (normalised frames, interval); each distinct caption tokenised once."""
        rows: dict[str, int] = {}
        refs = [rows.setdefault(c, len(rows)) for frames, _ in videos for frame in frames for c in frame]
        frame_sizes = [len(frame) for frames, _ in videos for frame in frames]
        token_offsets, tokens = (
            tokenize_all(tokenizer, list(rows)) if rows else (np.zeros(1, np.int64), np.zeros(0, np.uint16))
        )
        return cls(
            frame_offsets=_offsets([len(frames) for frames, _ in videos]),
            interval=np.array([interval for _, interval in videos], dtype=np.float64),
            ref_offsets=_offsets(frame_sizes),
            refs=np.array(refs, dtype=np.int64),
            token_offsets=token_offsets,
            tokens=tokens,
        )

    def pick(
        self, v: int, window: tuple[float, float], settings: VideoSettings, rng: np.random.Generator | None
    ) -> list[list[int]]:
        """WordPiece ids (at most `dense_caption_tokens` each) of video v's dense captions in `window`, picked as
        `video_store.pick_dense` picks them from the video's file."""
        f0, f1 = int(self.frame_offsets[v]), int(self.frame_offsets[v + 1])
        starts = np.asarray(self.ref_offsets[f0 : f1 + 1])
        picked = pick_dense(
            np.diff(starts), float(self.interval[v]), window, settings.dense_per_frame, settings.max_dense_captions, rng
        )
        out = []
        for f, c in picked:
            r = int(self.refs[int(starts[f]) + c])
            first = int(self.token_offsets[r])
            out.append(self.tokens[first : min(int(self.token_offsets[r + 1]), first + settings.dense_caption_tokens)])
        return [ids.tolist() for ids in out]


def _offsets(counts: Sequence[int]) -> np.ndarray:
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return offsets


@dataclass
class ClipTable:
    """Videos and their clips as columns; video v's clips are clip_offsets[v] .. clip_offsets[v + 1] - 1."""

    video_ids: Sequence[str]  # (V,)
    seconds: np.ndarray  # (V,) int32: length of the video's 1 s feature grid
    rank: np.ndarray  # (V,) uint64: `id_rank` of the video id (held-out split order)
    clip_offsets: np.ndarray  # (V + 1,) int64
    start: np.ndarray  # (C,) float64: caption start, seconds
    end: np.ndarray  # (C,) float64: caption end, seconds
    token_offsets: np.ndarray  # (C + 1,) int64: caption c's ids are tokens[token_offsets[c]:token_offsets[c + 1]]
    tokens: np.ndarray  # (T,) uint16 (or int32 for vocabularies over 65,536)
    aligned: np.ndarray  # (C,) int32: caption index (within its video) of the clip it truly describes; -1 unknown
    store: VideoStore | None = None  # reads every video's features (an index)
    dense: DenseColumns | None = None  # and its dense captions (an index built with them)
    records: list[VideoRecord] | None = None  # or each video reads its own (a plugin's records)

    @classmethod
    def from_records(cls, records: list[VideoRecord], tokenizer: Any) -> ClipTable:
        """The table of a corpus plugin's records; every caption tokenised here, once."""
        clip_offsets = _offsets([len(r.captions) for r in records])
        texts = [t for r in records for t in r.captions.text]
        token_offsets, tokens = (
            tokenize_all(tokenizer, texts) if texts else (np.zeros(1, np.int64), np.zeros(0, np.uint16))
        )
        aligned = np.full(len(texts), -1, dtype=np.int32)
        for r, first in zip(records, clip_offsets, strict=False):
            if r.aligned_to is not None:
                aligned[first : first + len(r.captions)] = r.aligned_to
        return cls(
            video_ids=[r.video_id for r in records],
            seconds=np.array([r.seconds for r in records], dtype=np.int32),
            rank=np.array([id_rank(r.video_id) for r in records], dtype=np.uint64),
            clip_offsets=clip_offsets,
            start=np.array([s for r in records for s in r.captions.start], dtype=np.float64),
            end=np.array([e for r in records for e in r.captions.end], dtype=np.float64),
            token_offsets=token_offsets,
            tokens=tokens,
            aligned=aligned,
            records=records,
        )

    def __len__(self) -> int:
        return len(self.seconds)

    @property
    def n_clips(self) -> int:
        return int(self.clip_offsets[-1])

    def clip_count(self, v: int) -> int:
        return int(self.clip_offsets[v + 1] - self.clip_offsets[v])

    def caption_ids(self, v: int, i: int, max_tokens: int) -> list[int]:
        """WordPiece ids of video v's caption i, at most `max_tokens`."""
        c = int(self.clip_offsets[v]) + i
        first = int(self.token_offsets[c])
        return self.tokens[first : min(int(self.token_offsets[c + 1]), first + max_tokens)].tolist()

    def window(self, v: int, i: int) -> tuple[int, int]:
        """Seconds [first, end) of the 1 s grid under video v's caption i: floor(start) .. ceil(end), at least one."""
        c = int(self.clip_offsets[v]) + i
        return clip_window(float(self.start[c]), float(self.end[c]), int(self.seconds[v]))

    def features(self, v: int, window: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """(seconds, dim) float32 arrays of both streams of video v for `window`. Raises BadVideo."""
        if self.records is not None:
            return self.records[v].features(window)
        assert self.store is not None
        return self.store.read_features(self.video_ids[v], window)

    def dense_tokens(
        self,
        v: int,
        window: tuple[int, int],
        rng: np.random.Generator | None,
        settings: VideoSettings,
        tokenize: Callable[[list[str]], list[list[int]]],
    ) -> list[list[int]]:
        """WordPiece ids of video v's dense captions of the frames in `window`, picked as the store does: from
        the index's columns, or a record's `dense_captions()` through `tokenize`; none from an index without
        them. Raises BadVideo."""
        if self.records is not None:
            return tokenize(self.records[v].dense_captions(window, rng))
        if self.dense is None:  # (no dense-caption folder: data.dense_captions empty)
            return []
        return self.dense.pick(v, window, settings, rng)

    def has_dense(self) -> int:
        """How many videos have a dense-caption file."""
        if self.records is not None:
            return sum(r.store.dense_file(r.video_id) is not None for r in self.records)
        return len(self) if self.dense is not None else 0

    def find(self, video_id: str) -> int | None:
        """The row of `video_id`, None when it is not a usable video (ids are sorted in an index)."""
        if self.records is None:
            lo, hi = 0, len(self)
            while lo < hi:  # binary search over the sorted ids, decoding only log2(V) of them
                mid = (lo + hi) // 2
                if self.video_ids[mid] < video_id:
                    lo = mid + 1
                else:
                    hi = mid
            return lo if lo < len(self) and self.video_ids[lo] == video_id else None
        return next((v for v, r in enumerate(self.records) if r.video_id == video_id), None)


def clip_window(start: float, end: float, seconds: int) -> tuple[int, int]:
    """Seconds [first, end) of the 1 s grid under a caption from `start` to `end`: floor .. ceil, at least one."""
    first = min(int(np.floor(start)), seconds - 1)
    stop = min(max(first + 1, int(np.ceil(end))), seconds)
    return first, stop


def split_videos(table: ClipTable, val_videos: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) video rows, each ascending: `val_videos` held out by video, at most a tenth of
    the corpus (one when it has 2-19).

    The choice depends only on the video ids (ordered by sha1), so it is the same on every run and
    machine and a video stays on its side when others are added.
    """
    n = len(table)
    n_val = min(val_videos, n // 10)
    if n_val == 0 and val_videos > 0 and n >= 2:
        n_val = 1
    val = np.sort(np.argsort(np.asarray(table.rank), kind="stable")[:n_val]).astype(np.int64)
    keep = np.ones(n, dtype=bool)
    keep[val] = False
    return np.flatnonzero(keep).astype(np.int64), val
