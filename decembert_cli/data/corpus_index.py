"""The persistent corpus index: a HowTo100M-layout corpus scanned once, then opened in a second.

`decembert data index howto100m --set data.root=DIR` (or the first `pretrain` on a corpus) reads
every caption source and every feature header once and writes, under `data.index` (default
`DIR/decembert-index`):

    manifest.json          what the index was built from (paths, sizes, mtimes), with which
                           settings (trim_overlap, min_clips, feature widths, the tokenizer) and
                           where its current arrays are; written last, so an index is complete
    vN/*.npy               the `ClipTable` columns as .npy files, opened memory-mapped: video ids
                           (UTF-8 blob + offsets), feature seconds, id ranks, clip offsets, clip
                           start/end, the captions' WordPiece ids as one flat array + offsets, and
                           the known alignment (the sample corpus)
    vN/videos.json         per video skipped (kind, reason) or fixed (counts): the data report's
                           source, read only when the index is updated
    vN/report.json         the data report

Why NumPy .npy files and not Arrow/Parquet: every column is a fixed-width array (strings as one
byte array and offsets), NumPy is already a dependency, and `np.load(mmap_mode="r")` maps a column
with no copy and no decoding, so every rank and data-loader worker shares the pages through the OS
page cache. Parquet would need decoding (a copy per process) and pyarrow (a 40 MB dependency) to
gain compression the token array does not need (uint16 ids).

Building works in parts of `PART_VIDEOS` videos, each written into `build/part-N/` by one worker
process (`--workers`) and renamed into place when complete; an interrupted build run again reuses
the parts it finished. The parts are then merged, in video-id order, into the next `vN/`.

When the corpus changes (a caption source, a feature or dense-caption folder: files added, removed
or replaced), an index refuses to open and names what changed. `decembert data index` then updates
it: videos not yet in it (new ones, and ones skipped before, e.g. for missing features) are
examined, videos gone from the captions are dropped, the rest is kept as it was. A file rewritten
in place keeps its folder's mtime and is not noticed; `--rebuild` rescans everything. Changed
settings (the tokenizer, min_clips, ...) need `--rebuild`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from decembert_cli.data.clip_table import ClipTable, Strings
from decembert_cli.data.howto100m import BadVideo, CaptionSource, open_captions
from decembert_cli.data.scan import DataReport, VideoRecord, captions_path, open_howto100m, usable_video, video_list
from decembert_cli.data.video_store import VideoStore, resolve
from decembert_cli.errors import DecembertError
from decembert_cli.io import atomic_write_text

if TYPE_CHECKING:
    from decembert_cli.config.schema import DataConfig

INDEX_FORMAT = "decembert.index/1"
INDEX_DIR = "decembert-index"
PART_VIDEOS = 1000
COLUMNS = (
    "id_blob",
    "id_offsets",
    "seconds",
    "rank",
    "clip_offsets",
    "start",
    "end",
    "token_offsets",
    "tokens",
    "aligned",
)


class IndexedCorpus:
    """A pre-training corpus in HowTo100M's layout, read through a persistent index.

    Register an instance (entry-point group `decembert.corpora`). Called, it is a plain
    `CorpusOpener` (every video scanned into memory); `open_corpus` opens it through the index.
    Subclasses may find or make the corpus folder (`root`) and add a known alignment."""

    def root(self, config: DataConfig, dims: tuple[int, int]) -> Path:
        """The corpus folder (data.root)."""
        if not config.root:
            raise DecembertError(
                "data.root is not set: --set data.root=DIR (the folder with the captions and features)"
            )
        return Path(config.root).expanduser()

    def alignment(self, root: Path) -> tuple[dict[str, list[int]], Path] | None:
        """Per video, the clip each caption truly describes (and the file it came from); None: unknown."""
        return None

    def __call__(
        self,
        config: DataConfig,
        report: DataReport,
        dims: tuple[int, int],
        progress: Callable[[int, int], None] | None = None,
    ) -> list[VideoRecord]:
        root = self.root(config, dims)
        records = open_howto100m(dataclasses.replace(config, root=str(root)), report, dims, progress)
        known = self.alignment(root)
        for record in records:
            truth = None if known is None else known[0].get(record.video_id)
            if truth is not None and len(truth) == len(record.captions):
                record.aligned_to = list(truth)
        return records


howto100m = IndexedCorpus()


@dataclasses.dataclass
class _Corpus:
    """Everything a build needs, fixed before any worker starts (workers are forked and inherit it)."""

    config: DataConfig
    store: VideoStore
    captions_path: Path
    trim: bool
    tokenizer: Any
    alignment: dict[str, list[int]]
    ids: list[str]  # every captioned video (after data.videos_csv), sorted
    fingerprint: dict[str, Any]


def index_dir(config: DataConfig, root: Path) -> Path:
    return resolve(root, config.index) if config.index else root / INDEX_DIR


def _stat(path: Path | None, root: Path) -> dict[str, Any] | None:
    """Path (relative to the corpus root when inside it: a corpus copied with its index and its
    mtimes, e.g. by `rsync -a` or `cp -a`, keeps a valid index), mtime and size."""
    if path is None or not path.exists():
        return None
    info, where = path.stat(), path.resolve()
    with contextlib.suppress(ValueError):
        where = where.relative_to(root.resolve())
    entry: dict[str, Any] = {"path": where.as_posix(), "mtime_ns": info.st_mtime_ns}
    if path.is_file():
        entry["size"] = info.st_size
    return entry


def _tokenizer_identity(tokenizer: Any) -> dict[str, Any]:
    vocab = sorted(tokenizer.get_vocab().items())
    digest = hashlib.sha1(json.dumps(vocab, ensure_ascii=False).encode("utf-8")).hexdigest()
    return {
        "class": type(tokenizer).__name__,
        "vocab_size": len(tokenizer),
        "vocab_sha1": digest,
        "lowercase": bool(getattr(tokenizer, "do_lower_case", True)),
    }


def _open(corpus: IndexedCorpus, config: DataConfig, dims: tuple[int, int], tokenizer: Any) -> _Corpus:
    root = corpus.root(config, dims)
    config = dataclasses.replace(config, root=str(root))
    store = VideoStore(config, dims, section="data")
    captions = captions_path(store.root, config.captions)
    if config.min_clips < 1:
        raise DecembertError(f"data.min_clips must be at least 1, got {config.min_clips}")
    wanted = video_list(store.root, config.videos_csv)
    videos_csv = resolve(store.root, config.videos_csv) if wanted is not None else None
    trim = config.trim_overlap == "on" or (config.trim_overlap == "auto" and captions.name.startswith("raw_"))
    known = corpus.alignment(store.root)
    fingerprint = {
        "format": INDEX_FORMAT,
        "root": str(store.root.resolve()),
        "sources": {
            "captions": _stat(captions, store.root),
            "data.videos_csv": _stat(videos_csv, store.root),
            "data.features_2d": _stat(store.dir_2d, store.root),
            "data.features_3d": _stat(store.dir_3d, store.root),
            "data.dense_captions": _stat(store.dense_dir, store.root),
            "alignment": _stat(known[1], store.root) if known else None,
        },
        "settings": {
            "trim_overlap": trim,
            "min_clips": config.min_clips,
            "feature widths (model.feature_dim_2d, model.feature_dim_3d)": list(dims),
            "3D features per second": store.fps_3d,
            DENSE_REQUIRED: store.dense_dir is not None,
            "tokenizer (model.tokenizer)": _tokenizer_identity(tokenizer),
        },
    }
    return _Corpus(config, store, captions, trim, tokenizer, known[0] if known else {}, [], fingerprint)


DENSE_REQUIRED = "dense captions required (data.use_dense, data.dense_captions)"


def _differences(built: dict[str, Any], now: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(changed sources, changed settings), each named for a message.

    A run without dense captions may read an index built for them: its videos (those with dense
    captions) are then the same as the runs with dense captions read, which is what an ablation of
    dense captions wants (Table 6). The other way round is refused: that index lacks the check."""
    ignored: set[str] = set()
    if built.get("settings", {}).get(DENSE_REQUIRED) is True and now["settings"].get(DENSE_REQUIRED) is False:
        ignored = {DENSE_REQUIRED, "data.dense_captions"}
    sources = [
        f"{key} ({'added' if before is None else 'removed' if after is None else 'changed'})"
        for key in now["sources"]
        if key not in ignored and (before := built.get("sources", {}).get(key)) != (after := now["sources"][key])
    ]
    settings = [
        f"{key}: {built.get('settings', {}).get(key)!r} -> {value!r}"
        for key, value in now["settings"].items()
        if key not in ignored and built.get("settings", {}).get(key) != value
    ]
    return sources, settings


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Hold the index folder's lock (one builder at a time; other ranks wait, then read what it built)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle = open(folder / ".lock", "a")  # noqa: SIM115 (held for the whole block)
    except OSError as exc:
        raise DecembertError(
            f"cannot write the corpus index to {folder} ({exc.strerror}); set --set data.index=DIR to a writable folder"
        ) from None
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read_manifest(folder: Path) -> dict[str, Any] | None:
    path = folder / "manifest.json"
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DecembertError(f"{path} is unreadable ({exc}); delete {folder} and build the index again") from None
    if not isinstance(manifest, dict) or manifest.get("fingerprint", {}).get("format") != INDEX_FORMAT:
        raise DecembertError(
            f"{folder} is not a {INDEX_FORMAT} corpus index; delete it, or rebuild it with "
            "`decembert data index CORPUS --rebuild`"
        )
    return manifest


def open_index(
    corpus: IndexedCorpus,
    config: DataConfig,
    dims: tuple[int, int],
    tokenizer: Any,
    *,
    name: str = "howto100m",
    mode: str = "open",
    workers: int = 0,
    part_videos: int = PART_VIDEOS,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[ClipTable, dict[str, Any], Path]:
    """(table, data report as a dict, index folder) of the corpus through its index.

    mode "open": build the index when there is none, refuse a stale one; "update": also bring a
    stale one up to date (new and previously skipped videos examined); "rebuild": scan everything.
    workers: processes that build parts (0: as many as there are CPUs, at most 8)."""
    job = _open(corpus, config, dims, tokenizer)
    folder = index_dir(job.config, job.store.root)
    new = not folder.exists()
    with _locked(folder):
        try:
            manifest = None if mode == "rebuild" else _read_manifest(folder)
            if manifest is not None:
                job.store.require_folders()
                sources, settings = _differences(manifest["fingerprint"], job.fingerprint)
                if sources or settings:  # (a corpus moved with its index and mtimes has neither)
                    if mode != "update" or settings or manifest["fingerprint"].get("root") != job.fingerprint["root"]:
                        raise _stale(folder, name, job, manifest, sources, settings)
                    manifest = _build(job, folder, manifest, workers, part_videos, progress)
            else:
                manifest = _build(job, folder, None, workers, part_videos, progress)
        except DecembertError:
            if new and not list(folder.glob("build/part-*")):
                shutil.rmtree(folder, ignore_errors=True)  # an error before any work leaves nothing behind
            raise
        table, report = _load(folder, manifest, job.store)
    if len(table) == 0:
        raise DecembertError(f"no usable video in {job.store.root}: {report['skipped'] or 'no captioned videos'}")
    return table, report, folder


def _stale(
    folder: Path, name: str, job: _Corpus, manifest: dict[str, Any], sources: list[str], settings: list[str]
) -> DecembertError:
    root = job.store.root
    command = f"decembert data index {name} --set data.root={root}"
    if manifest["fingerprint"].get("root") != job.fingerprint["root"]:
        return DecembertError(
            f"{folder} indexes another corpus ({manifest['fingerprint'].get('root')}), not {root}; "
            f"set data.index to another folder, or rebuild it: {command} --rebuild"
        )
    if settings:
        return DecembertError(
            f"the corpus index {folder} was built with other settings ({'; '.join(settings)}); "
            f"rebuild it: {command} --rebuild (with the same --set options as this run)"
        )
    return DecembertError(
        f"the corpus index {folder} is out of date: {', '.join(sources)} since it was built; "
        f"update it (new videos are added, the rest kept): {command}"
    )


def _build(
    job: _Corpus,
    folder: Path,
    base: dict[str, Any] | None,
    workers: int,
    part_videos: int,
    progress: Callable[[int, int], None] | None,
) -> dict[str, Any]:
    """Examine the videos the index lacks (all, without a base) in parts, then merge; the new manifest."""
    began = time.perf_counter()
    source = open_captions(job.captions_path)  # caption.json: parsed here, once, and shared with forked workers
    job.store.require_folders()
    wanted = video_list(job.store.root, job.config.videos_csv)
    job.ids = sorted(v for v in source.ids() if wanted is None or v in wanted)
    kept: set[str] = set()
    if base is not None:
        old = Strings(*(np.load(folder / base["version"] / f"{c}.npy", mmap_mode="r") for c in COLUMNS[:2]))
        kept = set(old) & set(job.ids)
    todo = [v for v in job.ids if v not in kept]
    work = folder / "build"
    plan = {
        "fingerprint": job.fingerprint,
        "base": base["version"] if base else None,
        "todo": hashlib.sha1("\n".join(todo).encode("utf-8")).hexdigest(),
        "part_videos": part_videos,
    }
    plan_file = work / "plan.json"
    if not (plan_file.is_file() and json.loads(plan_file.read_text(encoding="utf-8")) == plan):
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        atomic_write_text(plan_file, json.dumps(plan, indent=1) + "\n")
    parts = [todo[k : k + part_videos] for k in range(0, len(todo), part_videos)]
    reused = _run_parts(job, source, work, parts, workers, progress)
    versions = [int(p.name[1:]) for p in folder.glob("v*") if p.name[1:].isdigit()]
    version = f"v{max(versions, default=0) + 1}"  # a new folder: the current one stays valid until the manifest moves
    manifest = _merge(job, folder, work, len(parts), base, kept, version)
    manifest["build_seconds"] = round(time.perf_counter() - began, 2)
    manifest["examined"] = len(todo)
    manifest["parts"] = {"built": len(parts) - reused, "reused from an interrupted build": reused}
    atomic_write_text(folder / "manifest.json", json.dumps(manifest, indent=1) + "\n")
    for old_version in folder.glob("v*"):
        if old_version.name != version:
            shutil.rmtree(old_version, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
    return manifest


_JOB: tuple[_Corpus, CaptionSource, Path, list[list[str]]] | None = None  # set before forking the part workers


def _run_parts(
    job: _Corpus,
    source: CaptionSource,
    work: Path,
    parts: list[list[str]],
    workers: int,
    progress: Callable[[int, int], None] | None,
) -> int:
    """Build the parts not yet built (in worker processes); how many were already there."""
    global _JOB
    left = [n for n in range(len(parts)) if not (work / f"part-{n:06d}").is_dir()]
    total = sum(len(p) for p in parts)
    done = total - sum(len(parts[n]) for n in left)
    if progress is not None:
        progress(done, total)
    workers = workers or min(os.cpu_count() or 1, 8)
    _JOB = (job, source, work, parts)
    try:
        if workers <= 1 or len(left) <= 1:
            finished: Iterator[int] = map(_index_part, left)
            for n in finished:
                done += len(parts[n])
                if progress is not None:
                    progress(done, total)
            return len(parts) - len(left)
        import multiprocessing

        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # forked workers tokenise on their own
        with multiprocessing.get_context("fork").Pool(min(workers, len(left))) as pool:
            for n in pool.imap_unordered(_index_part, left):
                done += len(parts[n])
                if progress is not None:
                    progress(done, total)
        return len(parts) - len(left)
    finally:
        _JOB = None


def _index_part(n: int) -> int:
    """Examine part n's videos and write its columns into build/part-n (renamed into place when complete)."""
    assert _JOB is not None
    job, source, work, parts = _JOB
    records: list[VideoRecord] = []
    skipped: dict[str, list[str]] = {}
    fixes: dict[str, dict[str, int]] = {}
    for video_id in parts[n]:
        report = DataReport()
        try:
            raw = source.get(video_id)
            records.append(usable_video(job.store, video_id, raw, job.trim, job.config.min_clips, report))
        except BadVideo as problem:
            skipped[video_id] = [problem.kind, str(problem)]
        if report.fixed:
            fixes[video_id] = dict(report.fixed)
    for record in records:
        truth = job.alignment.get(record.video_id)
        if truth is not None and len(truth) == len(record.captions):
            record.aligned_to = list(truth)
    table = ClipTable.from_records(records, job.tokenizer)
    temporary = work / f"part-{n:06d}.tmp"
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir()
    for column, array in _columns(table).items():
        np.save(temporary / f"{column}.npy", array)
    (temporary / "videos.json").write_text(json.dumps({"skipped": skipped, "fixes": fixes}), encoding="utf-8")
    temporary.rename(work / f"part-{n:06d}")
    return n


def _columns(table: ClipTable) -> dict[str, np.ndarray]:
    ids = table.video_ids if isinstance(table.video_ids, Strings) else Strings.pack(list(table.video_ids))
    values = {
        "id_blob": ids.blob,
        "id_offsets": ids.offsets,
        "seconds": table.seconds,
        "rank": table.rank,
        "clip_offsets": table.clip_offsets,
        "start": table.start,
        "end": table.end,
        "token_offsets": table.token_offsets,
        "tokens": table.tokens,
        "aligned": table.aligned,
    }
    return {c: np.asarray(values[c]) for c in COLUMNS}


def _read_table(folder: Path) -> ClipTable:
    arrays = {c: np.load(folder / f"{c}.npy", mmap_mode="r") for c in COLUMNS}
    return ClipTable(
        video_ids=Strings(arrays["id_blob"], arrays["id_offsets"]),
        **{c: arrays[c] for c in COLUMNS[2:]},
    )


def _merge(
    job: _Corpus, folder: Path, work: Path, n_parts: int, base: dict[str, Any] | None, kept: set[str], version: str
) -> dict[str, Any]:
    """Write the next version: the base's kept videos and every part's, in video-id order, with the report."""
    sources: list[ClipTable] = []
    skipped: dict[str, list[str]] = {}
    fixes: dict[str, dict[str, int]] = {}
    if base is not None:
        sources.append(_read_table(folder / base["version"]))
        old = json.loads((folder / base["version"] / "videos.json").read_text(encoding="utf-8"))
        fixes.update({v: f for v, f in old["fixes"].items() if v in kept})
    for n in range(n_parts):
        part = work / f"part-{n:06d}"
        sources.append(_read_table(part))
        found = json.loads((part / "videos.json").read_text(encoding="utf-8"))
        skipped.update(found["skipped"])
        fixes.update(found["fixes"])
    rows = [
        (video_id, s, r)
        for s, table in enumerate(sources)
        for r, video_id in enumerate(table.video_ids)
        if s > 0 or base is None or video_id in kept
    ]
    rows.sort()
    out = folder / version
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    _write_rows(out, sources, rows, job.tokenizer)
    atomic_write_text(out / "videos.json", json.dumps({"skipped": skipped, "fixes": fixes}) + "\n")
    report = _report(len(rows), skipped, fixes)
    atomic_write_text(out / "report.json", json.dumps(report, indent=1) + "\n")
    return {
        "fingerprint": job.fingerprint,
        "version": version,
        "videos": len(rows),
        "clips": int(sum(sources[s].clip_count(r) for _, s, r in rows)),
        "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _write_rows(out: Path, sources: list[ClipTable], rows: list[tuple[str, int, int]], tokenizer: Any) -> None:
    """The rows' columns into `out`, copied in runs of consecutive rows of one source (memory-mapped writes)."""
    runs: list[tuple[int, int, int]] = []  # (source, first row, end row)
    for _, s, r in rows:
        if runs and runs[-1][0] == s and runs[-1][2] == r:
            runs[-1] = (s, runs[-1][1], r + 1)
        else:
            runs.append((s, r, r + 1))
    n_videos = len(rows)
    n_clips = sum(int(sources[s].clip_offsets[b] - sources[s].clip_offsets[a]) for s, a, b in runs)
    n_tokens = sum(
        int(sources[s].token_offsets[sources[s].clip_offsets[b]] - sources[s].token_offsets[sources[s].clip_offsets[a]])
        for s, a, b in runs
    )
    token_dtype = np.uint16 if len(tokenizer) <= np.iinfo(np.uint16).max + 1 else np.int32
    ids = Strings.pack([video_id for video_id, _, _ in rows])
    np.save(out / "id_blob.npy", ids.blob)
    np.save(out / "id_offsets.npy", ids.offsets)

    def column(name: str, length: int, dtype: Any) -> np.memmap:
        return np.lib.format.open_memmap(out / f"{name}.npy", mode="w+", dtype=dtype, shape=(length,))

    seconds, rank = column("seconds", n_videos, np.int32), column("rank", n_videos, np.uint64)
    clip_offsets, token_offsets = (
        column("clip_offsets", n_videos + 1, np.int64),
        column("token_offsets", n_clips + 1, np.int64),
    )
    start, end = column("start", n_clips, np.float64), column("end", n_clips, np.float64)
    aligned, tokens = column("aligned", n_clips, np.int32), column("tokens", n_tokens, token_dtype)
    clip_offsets[0] = token_offsets[0] = 0
    v = c = t = 0
    for s, a, b in runs:
        src = sources[s]
        ca, cb = int(src.clip_offsets[a]), int(src.clip_offsets[b])
        ta, tb = int(src.token_offsets[ca]), int(src.token_offsets[cb])
        seconds[v : v + b - a] = src.seconds[a:b]
        rank[v : v + b - a] = src.rank[a:b]
        clip_offsets[v + 1 : v + 1 + b - a] = np.asarray(src.clip_offsets[a + 1 : b + 1]) - ca + c
        start[c : c + cb - ca] = src.start[ca:cb]
        end[c : c + cb - ca] = src.end[ca:cb]
        aligned[c : c + cb - ca] = src.aligned[ca:cb]
        token_offsets[c + 1 : c + 1 + cb - ca] = np.asarray(src.token_offsets[ca + 1 : cb + 1]) - ta + t
        tokens[t : t + tb - ta] = src.tokens[ta:tb]
        v, c, t = v + b - a, c + cb - ca, t + tb - ta
    for array in (seconds, rank, clip_offsets, token_offsets, start, end, aligned, tokens):
        array.flush()
    del seconds, rank, clip_offsets, token_offsets, start, end, aligned, tokens


def _report(used: int, skipped: dict[str, list[str]], fixes: dict[str, dict[str, int]]) -> dict[str, Any]:
    """The data report (`DataReport.as_dict`), counted as a scan in video-id order counts it."""
    skip_counts: Counter[str] = Counter()
    fix_counts: Counter[str] = Counter()
    examples: dict[str, str] = {}
    for video_id in sorted(set(skipped) | set(fixes)):
        for kind, n in fixes.get(video_id, {}).items():
            fix_counts[kind] += n
            examples.setdefault(kind, video_id)
        if video_id in skipped:
            kind, reason = skipped[video_id]
            skip_counts[kind] += 1
            examples.setdefault(kind, f"{video_id}: {reason}")
    return {
        "videos_seen": used + len(skipped),
        "videos_used": used,
        "skipped": dict(skip_counts),
        "fixed": dict(fix_counts),
        "examples": examples,
    }


def _load(folder: Path, manifest: dict[str, Any], store: VideoStore) -> tuple[ClipTable, dict[str, Any]]:
    version = folder / manifest["version"]
    table = _read_table(version)
    table.store = store
    report = json.loads((version / "report.json").read_text(encoding="utf-8"))
    return table, report
