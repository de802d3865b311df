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
    vN/dense_*.npy         with dense captions: per video its captioned frames and their interval,
                           per frame its captions (rows of a table of distinct captions), and the
                           distinct captions' WordPiece ids (`clip_table.DenseColumns`): a training
                           step reads no dense-caption file and tokenises nothing
    vN/stamps.npy          per video, one number for the sizes and mtimes of its feature files (and
                           caption CSV): how a file rewritten in place is noticed; dense_stamps.npy
                           the same for its dense-caption file

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
examined, videos gone from the captions are dropped, the rest is kept as it was. A video's own file
rewritten in place (same name: the folder's mtime stays) changes its stamp: `decembert data index`
compares every video's, and re-examines those that changed; opening for a run compares a random
sample of STAMP_SAMPLE videos' (a few hundred stat calls), so a corpus re-extracted in place is
refused with the file named, while one file changed among a million is found by the next update.
Changed settings (the tokenizer, min_clips, ...) need `--rebuild`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import mmap
import multiprocessing
import os
import re
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from decembert_cli.data.clip_table import ClipTable, DenseColumns, Strings, first_unsafe_id
from decembert_cli.data.densecap import read_dense_captions
from decembert_cli.data.howto100m import BadVideo, CaptionSource, open_captions
from decembert_cli.data.scan import (
    DataReport,
    VideoRecord,
    captions_path,
    open_howto100m,
    shown_id,
    usable_video,
    video_list,
)
from decembert_cli.data.video_store import VideoStore, expand_user, resolve
from decembert_cli.errors import DecembertError
from decembert_cli.io import atomic_write_bytes, atomic_write_text, decode_json, folder_lock

if TYPE_CHECKING:
    from decembert_cli.config.schema import DataConfig

INDEX_FORMAT = "decembert.index/1"
INDEX_DIR = "decembert-index"
PART_VIDEOS = 1000
STAMP_SAMPLE = 256  # videos whose file stamps a run's start compares (an update compares every one)
STAMPS = "stamps"  # vN/stamps.npy (an index built before it lacks it: then only folders are compared)
DENSE_STAMPS = "dense_stamps"  # vN/dense_stamps.npy: of the dense-caption files (an index with dense captions)
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
DENSE_COLUMNS = (  # `DenseColumns`' fields, in an index built with dense captions
    "dense_frame_offsets",
    "dense_interval",
    "dense_ref_offsets",
    "dense_refs",
    "dense_token_offsets",
    "dense_tokens",
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
        return expand_user(config.root, "data.root")

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
    return resolve(root, config.index, "data.index") if config.index else root / INDEX_DIR


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


def video_stamp(store: VideoStore, captions: Path, video_id: str) -> int:
    """One number for the sizes and modification times of the video's files the index holds what it read
    from (2D and 3D features: their lengths; its caption CSV when the captions are a folder of them): it
    changes when any of them is written again, also in place, or goes."""
    paths: list[Path | None] = [*store.feature_files(video_id)]
    if captions.is_dir():
        paths.append(captions / f"{video_id}.csv")
    return _stamp(paths)


def _stamp(paths: list[Path | None]) -> int:
    digest = hashlib.blake2b(digest_size=8)
    for path in paths:
        try:
            info = os.stat(path) if path is not None else None
        except OSError:
            info = None
        # (whole seconds: a copy by rsync -a or cp -a keeps them, and so the index)
        digest.update(f"{info.st_size}:{info.st_mtime_ns // 10**9};".encode() if info else b"-;")
    return int.from_bytes(digest.digest(), "little", signed=True)


def _stampers(job: _Corpus) -> dict[str, Callable[[str], int]]:
    """Per stamp column, the video's stamp now: its feature (and caption) files; its dense-caption file when the
    run reads dense captions (an index built with them, which a run without them may read, keeps theirs)."""
    stampers: dict[str, Callable[[str], int]] = {STAMPS: lambda v: video_stamp(job.store, job.captions_path, v)}
    if job.store.dense_dir is not None:
        stampers[DENSE_STAMPS] = lambda v: _stamp([job.store.dense_file(v)])
    return stampers


def _rewritten(job: _Corpus, version: Path, mode: str, dense: bool) -> list[str]:
    """The videos of the index version whose files' stamps changed since it was built: every one for an
    update, a random STAMP_SAMPLE of them at a run's start. An index built before stamps has none to
    compare: an update stamps its videos as their files are now."""
    table = _read_table(version, len(job.tokenizer), dense)  # (as `_load` reads it: one set of checked files)
    changed: set[int] = set()
    for column, stamp in _stampers(job).items():
        path = version / f"{column}.npy"
        if not (path.exists() or path.is_symlink()):
            if mode == "update":
                every = [(v, 0, r) for r, v in enumerate(table.video_ids)]
                _write_stamps(version, job, [table], every, [version], only=column)
            continue
        sample = None if mode == "update" else STAMP_SAMPLE
        stamps = _column(path)
        if len(stamps) != len(table):
            raise _Damaged(f"{path}: {len(stamps)} entries, expected {len(table)} (one per video)", path)
        rows = (
            range(len(table))
            if sample is None or sample >= len(table)
            else sorted(np.random.default_rng().choice(len(table), sample, replace=False).tolist())
        )
        changed.update(r for r in rows if stamp(table.video_ids[r]) != int(stamps[r]))
    return [table.video_ids[r] for r in sorted(changed)]


def _open(corpus: IndexedCorpus, config: DataConfig, dims: tuple[int, int], tokenizer: Any) -> _Corpus:
    root = corpus.root(config, dims)
    config = dataclasses.replace(config, root=str(root))
    store = VideoStore(config, dims, section="data")
    captions = captions_path(store.root, config.captions)
    if config.min_clips < 1:
        raise DecembertError(f"data.min_clips must be at least 1, got {config.min_clips}")
    wanted = video_list(store.root, config.videos_csv)
    videos_csv = resolve(store.root, config.videos_csv, "data.videos_csv") if wanted is not None else None
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
            DENSE_INDEXED: config.dense_interval if store.dense_dir is not None else None,
            "tokenizer (model.tokenizer)": _tokenizer_identity(tokenizer),
        },
    }
    return _Corpus(config, store, captions, trim, tokenizer, known[0] if known else {}, [], fingerprint)


DENSE_REQUIRED = "dense captions required (data.use_dense, data.dense_captions)"
# (an index built before dense captions were in it lacks this setting: a run with them rebuilds it)
DENSE_INDEXED = "dense captions tokenised in the index (data.dense_interval of .npy files)"


def _predates_dense(manifest: dict[str, Any], job: _Corpus) -> bool:
    """The index was built before dense captions were kept in it, and this run reads them: it is rebuilt (a
    derived file, as when there is none) rather than refused."""
    return DENSE_INDEXED not in manifest["fingerprint"]["settings"] and job.store.dense_dir is not None


def _has_dense(manifest: dict[str, Any]) -> bool:
    """Whether the index of this manifest holds dense-caption columns."""
    return manifest["fingerprint"]["settings"].get(DENSE_INDEXED) is not None


def _differences(built: dict[str, Any], now: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(changed sources, changed settings), each named for a message.

    A run without dense captions may read an index built for them: its videos (those with dense
    captions) are then the same as the runs with dense captions read, which is what an ablation of
    dense captions wants (Table 6). The other way round is refused: that index lacks the check."""
    ignored: set[str] = set()
    if built.get("settings", {}).get(DENSE_REQUIRED) is True and now["settings"].get(DENSE_REQUIRED) is False:
        ignored = {DENSE_REQUIRED, DENSE_INDEXED, "data.dense_captions"}
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
    fix = "set --set data.index=DIR to a writable folder"
    with folder_lock(folder, wait=True, role="the corpus index", fix=fix):
        yield


class _Damaged(DecembertError):
    """A file of the index is not as the index wrote it (cut short, edited, missing); `open_index` adds
    how to repair it."""

    def __init__(self, message: str, path: Path) -> None:
        super().__init__(message)
        self.path = path


_VERSION = re.compile(r"v[0-9]+")  # a version folder's name (never a path)


def _read_json(path: Path) -> Any:
    """One of the index's JSON files; missing, unreadable or not JSON is `_Damaged`."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise _Damaged(f"{path} is missing", path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise _Damaged(f"{path} is unreadable ({exc})", path) from None
    try:
        return decode_json(text, str(path))
    except DecembertError as exc:
        raise _Damaged(str(exc), path) from None


def _field(data: dict[str, Any], key: str, kind: type, path: Path, name: str = "") -> Any:
    """data[key] when it is a `kind` (an int: not a bool, not negative); else `_Damaged` naming the file and key."""
    value = data.get(key)
    if not isinstance(value, kind) or (isinstance(value, int) and (isinstance(value, bool) or value < 0)):
        found = "missing" if key not in data else f"{json.dumps(value)[:40]}"
        expected = {dict: "an object", str: "a string", int: "a count", list: "a list"}[kind]
        raise _Damaged(f"{path}: '{name or key}' is {found}, expected {expected}", path)
    return value


def _read_manifest(folder: Path) -> dict[str, Any] | None:
    """The index's manifest, its structure checked; None when there is none (no index yet)."""
    path = folder / "manifest.json"
    if not path.is_file():
        return None
    manifest = _read_json(path)
    if not isinstance(manifest, dict):
        raise _Damaged(f"{path}: expected a JSON object, got {type(manifest).__name__}", path)
    fingerprint = _field(manifest, "fingerprint", dict, path)
    if fingerprint.get("format") != INDEX_FORMAT:
        raise DecembertError(
            f"{folder} is not a {INDEX_FORMAT} corpus index; delete it, or rebuild it with "
            "`decembert data index CORPUS --rebuild`"
        )
    for key in ("sources", "settings"):
        _field(fingerprint, key, dict, path, f"fingerprint.{key}")
    _field(fingerprint, "root", str, path, "fingerprint.root")
    version = _field(manifest, "version", str, path)
    if not _VERSION.fullmatch(version):
        raise _Damaged(f"{path}: 'version' is {version!r}, expected a version folder's name (v1, v2, ...)", path)
    if not (folder / version).is_dir():
        raise _Damaged(f"{path}: 'version' is {version!r}, but {folder / version} does not exist", path)
    for key in ("videos", "clips"):
        _field(manifest, key, int, path)
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
    workers: processes that build parts (0: as many as there are CPUs, at most 8).
    A damaged index (a file cut short, edited or missing) is one error naming the file and how to repair it."""
    job = _open(corpus, config, dims, tokenizer)
    folder = index_dir(job.config, job.store.root)
    new = not folder.exists()
    try:
        with _locked(folder):
            try:
                manifest = None if mode == "rebuild" else _read_manifest(folder)
                if manifest is not None and _predates_dense(manifest, job):
                    print(
                        f"note: rebuilding the corpus index {folder}: it predates dense captions in the index",
                        file=sys.stderr,
                    )
                    manifest = None
                if manifest is not None:
                    job.store.require_folders()
                    sources, settings = _differences(manifest["fingerprint"], job.fingerprint)
                    same = not settings and manifest["fingerprint"]["root"] == job.fingerprint["root"]
                    version = folder / manifest["version"]
                    rewritten = _rewritten(job, version, mode, _has_dense(manifest)) if same else []
                    if rewritten:
                        sources.append(
                            f"the feature, caption or dense-caption files of {len(rewritten)} video(s) rewritten "
                            "in place "
                            f"(e.g. {shown_id(rewritten[0])}'s)"
                        )
                    if sources or settings:  # (a corpus moved with its index and mtimes has neither)
                        if mode != "update" or settings or manifest["fingerprint"]["root"] != job.fingerprint["root"]:
                            raise _stale(folder, name, job, manifest, sources, settings)
                        if _has_dense(manifest) and job.store.dense_dir is None:
                            raise DecembertError(
                                f"the corpus index {folder} holds dense captions and this run reads none "
                                "(data.use_dense false or data.dense_captions empty): updating it now would drop "
                                f"them; update it with dense captions on: {_command(name, job)}"
                            )
                        manifest = _build(job, folder, manifest, workers, part_videos, progress, set(rewritten))
                else:
                    manifest = _build(job, folder, None, workers, part_videos, progress)
            except DecembertError:
                if new and not list(folder.glob("build/part-*")):
                    shutil.rmtree(folder, ignore_errors=True)  # an error before any work leaves nothing behind
                raise
            table, report = _load(folder, manifest, job.store, len(tokenizer))
    except _Damaged as exc:
        work = folder / "build"
        repair = (
            f"delete {work} (an interrupted build's parts) and run the command again"
            if work in exc.path.parents
            else f"rebuild it: {_command(name, job)} --rebuild (with the same --set options as this run)"
        )
        raise DecembertError(f"{exc}; the corpus index {folder} is damaged, {repair}") from None
    if len(table) == 0:
        raise DecembertError(f"no usable video in {job.store.root}: {report['skipped'] or 'no captioned videos'}")
    return table, report, folder


def _command(name: str, job: _Corpus) -> str:
    return f"decembert data index {name} --set data.root={job.store.root}"


def _stale(
    folder: Path, name: str, job: _Corpus, manifest: dict[str, Any], sources: list[str], settings: list[str]
) -> DecembertError:
    root = job.store.root
    command = _command(name, job)
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
    rewritten: set[str] | None = None,
) -> dict[str, Any]:
    """Examine the videos the index lacks (all, without a base) and those whose files were `rewritten`, in
    parts, then merge; the new manifest."""
    began = time.perf_counter()
    source = open_captions(job.captions_path)  # caption.json: scanned here for offsets; workers read entries
    job.store.require_folders()
    wanted = video_list(job.store.root, job.config.videos_csv)
    job.ids = sorted(v for v in source.ids() if wanted is None or v in wanted)
    # the current version (folder, table), whose videos still captioned are kept
    prior = (
        None
        if base is None
        else (folder / base["version"], _read_table(folder / base["version"], len(job.tokenizer), _has_dense(base)))
    )
    kept = set() if prior is None else (set(prior[1].video_ids) & set(job.ids)) - (rewritten or set())
    todo = [v for v in job.ids if v not in kept]
    work = folder / "build"
    plan = {
        "fingerprint": job.fingerprint,
        "base": base["version"] if base else None,
        # (surrogatepass: an id from a file name that is not UTF-8, skipped as unsafe, still counts here)
        "todo": hashlib.sha1("\n".join(todo).encode("utf-8", "surrogatepass")).hexdigest(),
        "part_videos": part_videos,
    }
    plan_file = work / "plan.json"
    if _read_plan(plan_file) != plan:  # another build's parts, or none: start over
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        atomic_write_text(plan_file, json.dumps(plan, indent=1) + "\n")
    parts = [todo[k : k + part_videos] for k in range(0, len(todo), part_videos)]
    reused = _run_parts(job, source, work, parts, workers, progress)
    versions = [int(p.name[1:]) for p in folder.glob("v*") if p.name[1:].isdigit()]
    version = f"v{max(versions, default=0) + 1}"  # a new folder: the current one stays valid until the manifest moves
    manifest = _merge(job, folder, work, len(parts), prior, kept, version)
    manifest["build_seconds"] = round(time.perf_counter() - began, 2)
    manifest["examined"] = len(todo)
    manifest["parts"] = {"built": len(parts) - reused, "reused from an interrupted build": reused}
    atomic_write_text(folder / "manifest.json", json.dumps(manifest, indent=1) + "\n")
    for old_version in folder.glob("v*"):
        if old_version.name != version:
            shutil.rmtree(old_version, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
    return manifest


def _read_plan(path: Path) -> Any:
    """An interrupted build's plan; None when there is none or it cannot be read, so that the build starts
    over (the plan only says which finished parts may be reused)."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None


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
            records.append(usable_video(job.store, video_id, source, job.trim, job.config.min_clips, report))
        except BadVideo as problem:
            skipped[video_id] = [problem.kind, str(problem)]
        if report.fixed:
            fixes[video_id] = dict(report.fixed)
    dense = []
    if job.store.dense_dir is not None:  # read and tokenised here, once: a training step reads the columns
        kept = []
        for record in records:
            try:
                path = job.store.dense_file(record.video_id)
                if path is None:  # (usable_video checked it is there; it went since)
                    raise BadVideo(f"no dense captions in {job.store.dense_dir}", "dense captions missing")
                dense.append(read_dense_captions(path, job.config.dense_interval))
                kept.append(record)
            except BadVideo as problem:
                skipped[record.video_id] = [problem.kind, str(problem)]
        records = kept
    for record in records:
        truth = job.alignment.get(record.video_id)
        if truth is not None and len(truth) == len(record.captions):
            record.aligned_to = list(truth)
    table = ClipTable.from_records(records, job.tokenizer)
    if job.store.dense_dir is not None:
        table.dense = DenseColumns.of(dense, job.tokenizer)
    temporary = work / f"part-{n:06d}.tmp"
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir()
    for column, array in _columns(table).items():
        np.save(temporary / f"{column}.npy", array)
    for column, stamp in _stampers(job).items():
        np.save(temporary / f"{column}.npy", np.array([stamp(r.video_id) for r in records], dtype=np.int64))
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
    if table.dense is not None:
        values.update({f"dense_{f.name}": getattr(table.dense, f.name) for f in dataclasses.fields(DenseColumns)})
    return {c: np.asarray(values[c]) for c in values}


# Each column's dtypes (tokens: uint16, or int32 for vocabularies over 65,536; an empty part's are uint16)
_DTYPES: dict[str, tuple[type, ...]] = {
    "id_blob": (np.uint8,),
    "id_offsets": (np.int64,),
    "seconds": (np.int32,),
    "rank": (np.uint64,),
    "clip_offsets": (np.int64,),
    "start": (np.float64,),
    "end": (np.float64,),
    "token_offsets": (np.int64,),
    "tokens": (np.uint16, np.int32),
    "aligned": (np.int32,),
    STAMPS: (np.int64,),
    DENSE_STAMPS: (np.int64,),
    "dense_frame_offsets": (np.int64,),
    "dense_interval": (np.float64,),
    "dense_ref_offsets": (np.int64,),
    "dense_refs": (np.uint32, np.int64),
    "dense_token_offsets": (np.int64,),
    "dense_tokens": (np.uint16, np.int32),
}
_CHUNK = 1 << 22  # elements per read when a check scans a whole column (bounded temporaries)
RELEASE_EVERY = 64  # runs of rows between unmapping the pages a merge wrote (`_release`)
RUN_ROWS = 4096  # videos per run of a merge at most: its temporaries (offsets shifted) stay a few MB


def _column(path: Path) -> np.ndarray:
    """One column, memory-mapped: a complete 1-D .npy array of its dtype, else `_Damaged`."""
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise _Damaged(f"{path} is missing", path) from None
    except (OSError, ValueError, EOFError) as exc:
        raise _Damaged(f"{path} is not a complete .npy array ({exc})", path) from None
    dtypes = _DTYPES[path.stem]
    if not isinstance(array, np.ndarray) or array.ndim != 1 or array.dtype not in [np.dtype(d) for d in dtypes]:
        found = f"a {array.ndim}-D {array.dtype} array" if isinstance(array, np.ndarray) else "not one array"
        expected = " or ".join(np.dtype(d).name for d in dtypes)
        raise _Damaged(f"{path}: {found}, expected 1-D {expected}", path)
    return array


def _release(*arrays: np.ndarray) -> None:
    """Unmap the pages of memory-mapped columns from this process (written ones flushed first). They stay in the
    page cache and a later read maps them again; without this, reading or writing a whole index keeps every
    page it touched mapped, and the build's RSS grows with the index (6.4 GB at 1.22M videos, mostly pages of
    files)."""
    for array in arrays:
        mapping = getattr(array, "_mmap", None)  # (np.memmap's mapping; a view shares its base's)
        if mapping is None or not hasattr(mmap, "MADV_DONTNEED"):
            continue
        if array.flags.writeable:
            array.flush()  # type: ignore[attr-defined]
        with contextlib.suppress(ValueError, OSError):  # (a closed mapping)
            mapping.madvise(mmap.MADV_DONTNEED)


def _table_columns(table: ClipTable) -> list[np.ndarray]:
    """Every column array of a table (its dense captions' too)."""
    ids = table.video_ids
    arrays = [table.seconds, table.rank, table.clip_offsets, table.start, table.end, table.token_offsets]
    arrays += [table.tokens, table.aligned]
    if isinstance(ids, Strings):
        arrays += [ids.blob, ids.offsets]
    if table.dense is not None:
        arrays += [getattr(table.dense, f.name) for f in dataclasses.fields(DenseColumns)]
    return arrays


def _chunks(column: np.ndarray, overlap: int = 0) -> Iterator[tuple[int, np.ndarray]]:
    """(first entry, column[first : first + _CHUNK + overlap]) over the column, each chunk's pages unmapped once it
    is read: a scan of a whole memory-mapped column keeps no more than a chunk of it in the process (a scan that
    unmapped only at its end held every column it read: 4.2 GB PSS after a 1.22M-video build)."""
    for first in range(0, max(len(column) - overlap, 0), _CHUNK):
        yield first, np.asarray(column[first : first + _CHUNK + overlap])
        _release(column)


def _first(column: np.ndarray, bad: Callable[[np.ndarray], np.ndarray]) -> int | None:
    """The first i where bad(column[i]) holds, read chunk by chunk; None when it never does."""
    for first, chunk in _chunks(column):
        hits = np.flatnonzero(bad(chunk))
        if len(hits):
            return first + int(hits[0])
    return None


def _check_offsets(path: Path, offsets: np.ndarray, length: int, of: str, empty: bool = False) -> None:
    """Offsets into `of` (of `length` entries): from 0, rising (no entry is empty; never falling where entries
    may be `empty`), ending at `length`."""
    where = ""
    rises = len(offsets) > 0 and offsets[0] == 0 and offsets[-1] == length
    for first, chunk in _chunks(offsets, overlap=1) if rises else ():
        falls = np.flatnonzero(chunk[1:] < chunk[:-1] if empty else chunk[1:] <= chunk[:-1])
        if len(falls):
            at = first + int(falls[0]) + 1
            rises, where = False, f"; entry {at} is {offsets[at]} after {offsets[at - 1]}"
            break
    if not rises:
        how = "not fall" if empty else "rise"
        raise _Damaged(f"{path}: offsets must {how} from 0 to {length} (the length of {of}){where}", path)


VERIFIED = ".verified.json"  # the column files whose values were checked: {"vocab", "files": {name: [size, mtime]}}


def _fingerprint(folder: Path, vocab: int, dense: bool) -> dict[str, Any]:
    files = {}
    for c in (*COLUMNS, *DENSE_COLUMNS) if dense else COLUMNS:
        info = (folder / f"{c}.npy").stat()
        files[c] = [info.st_size, info.st_mtime_ns]
    return {"vocab": vocab, "files": files}


def _read_table(folder: Path, vocab: int, dense: bool) -> ClipTable:
    """A version's (or a build part's) columns, memory-mapped and checked before any is used: the type and
    shape of each (complete 1-D .npy arrays of their dtypes, lengths that agree), then their values (offsets,
    ids that `io.safe_id` accepts, feature lengths, clip times, token ids inside the `vocab` ids of
    model.tokenizer). Anything else is `_Damaged`, naming the file. The value scans read every column (about
    a second for HowTo100M's 136M clips in the page cache, minutes from a cold network disk), so they run
    once per set of files: FOLDER/.verified.json records the sizes and modification times they passed with
    (where the folder is writable), and a later open with the same files skips them; start-up stays flat.
    `dense`: the folder holds dense-caption columns, read and checked as well."""
    arrays = {c: _column(folder / f"{c}.npy") for c in (*COLUMNS, *DENSE_COLUMNS) if dense or c in COLUMNS}
    videos, clips = len(arrays["seconds"]), len(arrays["start"])
    lengths = {
        "id_offsets": (videos + 1, "one per video and one"),
        "rank": (videos, "one per video, as seconds.npy"),
        "clip_offsets": (videos + 1, "one per video and one"),
        "end": (clips, "one per clip, as start.npy"),
        "token_offsets": (clips + 1, "one per clip and one"),
        "aligned": (clips, "one per clip, as start.npy"),
    }
    for c, (n, why) in lengths.items():
        if len(arrays[c]) != n:
            raise _Damaged(f"{folder / c}.npy: {len(arrays[c])} entries, expected {n} ({why})", folder / f"{c}.npy")
    ids = Strings(arrays["id_blob"], arrays["id_offsets"])
    table = ClipTable(
        video_ids=ids,
        seconds=arrays["seconds"],
        rank=arrays["rank"],
        clip_offsets=arrays["clip_offsets"],
        start=arrays["start"],
        end=arrays["end"],
        token_offsets=arrays["token_offsets"],
        tokens=arrays["tokens"],
        aligned=arrays["aligned"],
    )
    if dense:
        _check_dense_lengths(folder, arrays, videos)
        table.dense = DenseColumns(**{f.name: arrays[f"dense_{f.name}"] for f in dataclasses.fields(DenseColumns)})
    stamp = _fingerprint(folder, vocab, dense)
    if _read_stamp(folder / VERIFIED) == stamp:
        return table
    _check_values(folder, arrays, ids, vocab)
    if dense:
        _check_dense_values(folder, arrays, vocab)
    _release(*arrays.values())
    with contextlib.suppress(OSError, DecembertError):  # a read-only index is checked at every open
        atomic_write_text(folder / VERIFIED, json.dumps(stamp) + "\n")
    return table


def _read_stamp(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _check_dense_lengths(folder: Path, arrays: dict[str, np.ndarray], videos: int) -> None:
    """The dense columns' lengths agree with each other and the videos (frame_offsets' last entry, the frame
    count, is read only once its length is right)."""
    expected = {
        "dense_frame_offsets": lambda: (videos + 1, "one per video and one"),
        "dense_interval": lambda: (videos, "one per video"),
        "dense_ref_offsets": lambda: (int(arrays["dense_frame_offsets"][-1]) + 1, "one per captioned frame and one"),
    }
    for c, want in expected.items():
        n, why = want()
        if len(arrays[c]) != n:
            raise _Damaged(f"{folder / c}.npy: {len(arrays[c])} entries, expected {n} ({why})", folder / f"{c}.npy")


def _check_dense_values(folder: Path, arrays: dict[str, np.ndarray], vocab: int) -> None:
    """`_read_table`'s value scans of the dense columns: offsets, intervals, caption rows, token ids."""
    frames, refs, tokens = arrays["dense_frame_offsets"], arrays["dense_refs"], arrays["dense_tokens"]
    _check_offsets(folder / "dense_frame_offsets.npy", frames, int(frames[-1]), "the frames", empty=True)
    _check_offsets(folder / "dense_ref_offsets.npy", arrays["dense_ref_offsets"], len(refs), "dense_refs.npy", True)
    _check_offsets(folder / "dense_token_offsets.npy", arrays["dense_token_offsets"], len(tokens), "dense_tokens.npy")
    captions = len(arrays["dense_token_offsets"]) - 1
    ref = _first(refs, lambda r: (r < 0) | (r >= captions))
    if ref is not None:
        path = folder / "dense_refs.npy"
        raise _Damaged(f"{path}: entry {ref} is caption {refs[ref]}, outside the {captions} distinct captions", path)
    slow = _first(arrays["dense_interval"], lambda x: ~((x > 0) & (x < np.inf)))
    if slow is not None:
        path = folder / "dense_interval.npy"
        raise _Damaged(f"{path}: video {slow}'s frames are {arrays['dense_interval'][slow]} s apart", path)
    entry = _first(tokens, lambda t: (t < 0) | (t >= vocab))
    if entry is not None:
        path = folder / "dense_tokens.npy"
        raise _Damaged(
            f"{path}: token id {tokens[entry]} (entry {entry}) is outside model.tokenizer's vocabulary of {vocab} ids",
            path,
        )


def _check_values(folder: Path, arrays: dict[str, np.ndarray], ids: Strings, vocab: int) -> None:
    """`_read_table`'s value scans."""
    _check_offsets(folder / "id_offsets.npy", ids.offsets, len(ids.blob), "id_blob.npy")
    _check_offsets(folder / "clip_offsets.npy", arrays["clip_offsets"], len(arrays["start"]), "start.npy")
    _check_offsets(folder / "token_offsets.npy", arrays["token_offsets"], len(arrays["tokens"]), "tokens.npy")
    row = first_unsafe_id(ids)
    if row is not None:
        text = bytes(ids.blob[ids.offsets[row] : ids.offsets[row + 1]]).decode("utf-8", "backslashreplace")
        path = folder / "id_blob.npy"
        raise _Damaged(f"{path}: the id of video {row}, {shown_id(text)}, is not a file name", path)
    seconds = arrays["seconds"]
    short = _first(seconds, lambda x: x < 1)
    if short is not None:
        path = folder / "seconds.npy"
        raise _Damaged(f"{path}: video {short} has {seconds[short]} seconds of features, expected at least 1", path)
    for c in ("start", "end"):  # (NaN fails both comparisons)
        clip = _first(arrays[c], lambda x: ~((x >= 0) & (x < np.inf)))
        if clip is not None:
            path = folder / f"{c}.npy"
            raise _Damaged(f"{path}: clip {clip} is at {arrays[c][clip]}, not a time in seconds", path)
    tokens = arrays["tokens"]
    entry = _first(tokens, lambda t: (t < 0) | (t >= vocab))
    if entry is not None:
        path = folder / "tokens.npy"
        raise _Damaged(
            f"{path}: token id {tokens[entry]} (entry {entry}) is outside model.tokenizer's vocabulary of {vocab} ids",
            path,
        )


def _read_videos(path: Path) -> dict[str, Any]:
    """A version's (or part's) videos.json: {"skipped": {id: [kind, reason]}, "fixes": {id: {kind: count}}}."""
    videos = _read_json(path)
    if not isinstance(videos, dict):
        raise _Damaged(f"{path}: expected a JSON object, got {type(videos).__name__}", path)
    skipped, fixes = _field(videos, "skipped", dict, path), _field(videos, "fixes", dict, path)
    for video_id, entry in skipped.items():
        if not (isinstance(entry, list) and len(entry) == 2 and all(isinstance(x, str) for x in entry)):
            raise _Damaged(f"{path}: 'skipped' of {shown_id(video_id)} is not [kind, reason]", path)
    for video_id, counts in fixes.items():
        if not (isinstance(counts, dict) and all(isinstance(n, int) for n in counts.values())):
            raise _Damaged(f"{path}: 'fixes' of {shown_id(video_id)} is not {{kind: count}}", path)
    return videos


def _merge(
    job: _Corpus,
    folder: Path,
    work: Path,
    n_parts: int,
    base: tuple[Path, ClipTable] | None,
    kept: set[str],
    version: str,
) -> dict[str, Any]:
    """Write the next version: the `kept` videos of the base (version folder, table) and every part's, in
    video-id order, with the report."""
    sources: list[ClipTable] = []
    skipped: dict[str, list[str]] = {}
    fixes: dict[str, dict[str, int]] = {}
    if base is not None:
        sources.append(base[1])
        old = _read_videos(base[0] / "videos.json")
        fixes.update({v: f for v, f in old["fixes"].items() if v in kept})
    for n in range(n_parts):
        part = work / f"part-{n:06d}"
        sources.append(_read_table(part, len(job.tokenizer), dense=job.store.dense_dir is not None))
        found = _read_videos(part / "videos.json")
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
    if job.store.dense_dir is not None:
        _write_dense(out, sources, rows)
    parts = [work / f"part-{n:06d}" for n in range(n_parts)]
    for column in _stampers(job):
        _write_stamps(out, job, sources, rows, ([base[0]] if base is not None else []) + parts, only=column)
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


def _write_stamps(
    out: Path,
    job: _Corpus,
    sources: list[ClipTable],
    rows: list[tuple[str, int, int]],
    folders: list[Path],
    only: str,
) -> None:
    """vN/{only}.npy (a stamp column) for the rows: each source's recorded stamps (a base index built before
    the column gets its videos' stamped now: they were examined with the files as they are, or an update
    would have said)."""
    stamp = _stampers(job)[only]
    recorded: list[np.ndarray | None] = []
    for table, folder in zip(sources, folders, strict=True):
        path = folder / f"{only}.npy"
        stamps = _column(path) if path.exists() else None
        if stamps is not None and len(stamps) != len(table):
            raise _Damaged(f"{path}: {len(stamps)} entries, expected {len(table)} (one per video)", path)
        recorded.append(stamps)
    values = np.empty(len(rows), dtype=np.int64)
    for k, (video_id, s, r) in enumerate(rows):
        stamps = recorded[s]
        values[k] = stamp(video_id) if stamps is None else stamps[r]
    buffer = io.BytesIO()
    np.save(buffer, values)
    atomic_write_bytes(out / f"{only}.npy", buffer.getvalue())  # (also into a live version, on update)


def _write_dense(out: Path, sources: list[ClipTable], rows: list[tuple[str, int, int]]) -> None:
    """The rows' dense-caption columns into `out` (memory-mapped writes, in runs of consecutive rows of one
    source): each source's table of distinct captions whole, its rows shifted; each row's frames and caption
    references in order."""
    dense: list[DenseColumns] = []
    for source in sources:
        assert source.dense is not None, "every source of an index with dense captions has them"
        dense.append(source.dense)
    runs = _runs(rows)
    shift = np.cumsum([0] + [len(d.token_offsets) - 1 for d in dense])  # each source's first caption row
    n_frames = sum(int(dense[s].frame_offsets[b] - dense[s].frame_offsets[a]) for s, a, b in runs)
    n_refs = sum(
        int(dense[s].ref_offsets[dense[s].frame_offsets[b]] - dense[s].ref_offsets[dense[s].frame_offsets[a]])
        for s, a, b in runs
    )
    n_tokens = sum(len(d.tokens) for d in dense)
    token_dtype = np.result_type(*[d.tokens.dtype for d in dense]) if dense else np.dtype(np.uint16)
    ref_dtype = np.uint32 if shift[-1] <= np.iinfo(np.uint32).max else np.int64

    def column(name: str, length: int, dtype: Any) -> np.memmap:
        return np.lib.format.open_memmap(out / f"dense_{name}.npy", mode="w+", dtype=dtype, shape=(length,))

    frame_offsets = column("frame_offsets", len(rows) + 1, np.int64)
    interval = column("interval", len(rows), np.float64)
    ref_offsets, refs = column("ref_offsets", n_frames + 1, np.int64), column("refs", n_refs, ref_dtype)
    token_offsets = column("token_offsets", int(shift[-1]) + 1, np.int64)
    tokens = column("tokens", n_tokens, token_dtype)
    frame_offsets[0] = ref_offsets[0] = token_offsets[0] = 0
    v = f = r = 0
    for n, (s, a, b) in enumerate(runs):
        d = dense[s]
        fa, fb = int(d.frame_offsets[a]), int(d.frame_offsets[b])
        ra, rb = int(d.ref_offsets[fa]), int(d.ref_offsets[fb])
        frame_offsets[v + 1 : v + 1 + b - a] = np.asarray(d.frame_offsets[a + 1 : b + 1]) - fa + f
        interval[v : v + b - a] = d.interval[a:b]
        ref_offsets[f + 1 : f + 1 + fb - fa] = np.asarray(d.ref_offsets[fa + 1 : fb + 1]) - ra + r
        refs[r : r + rb - ra] = np.asarray(d.refs[ra:rb]) + shift[s]
        v, f, r = v + b - a, f + fb - fa, r + rb - ra
        _release(d.frame_offsets, d.interval, d.ref_offsets, d.refs)
        if n % RELEASE_EVERY == RELEASE_EVERY - 1:
            _release(frame_offsets, interval, ref_offsets, refs)
    t = 0
    for s, d in enumerate(dense):  # each source's distinct captions, in chunks (an update's base can be large)
        for first, chunk in _chunks(d.token_offsets[1:]):
            token_offsets[shift[s] + 1 + first : shift[s] + 1 + first + len(chunk)] = chunk + t
        tokens[t : t + len(d.tokens)] = d.tokens
        t += len(d.tokens)
        _release(d.token_offsets, d.tokens)
        if s % RELEASE_EVERY == RELEASE_EVERY - 1:
            _release(token_offsets, tokens)
    _release(frame_offsets, interval, ref_offsets, refs, token_offsets, tokens)


def _runs(rows: list[tuple[str, int, int]]) -> list[tuple[int, int, int]]:
    """The rows as runs of consecutive rows of one source, at most RUN_ROWS long: (source, first row, end row)."""
    runs: list[tuple[int, int, int]] = []
    for _, s, r in rows:
        if runs and runs[-1][0] == s and runs[-1][2] == r and r - runs[-1][1] < RUN_ROWS:
            runs[-1] = (s, runs[-1][1], r + 1)
        else:
            runs.append((s, r, r + 1))
    return runs


def _write_rows(out: Path, sources: list[ClipTable], rows: list[tuple[str, int, int]], tokenizer: Any) -> None:
    """The rows' columns into `out`, copied in runs of consecutive rows of one source (memory-mapped writes)."""
    runs = _runs(rows)
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
    for n, (s, a, b) in enumerate(runs):
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
        _release(*_table_columns(src))
        if n % RELEASE_EVERY == RELEASE_EVERY - 1:
            _release(seconds, rank, clip_offsets, token_offsets, start, end, aligned, tokens)
    _release(seconds, rank, clip_offsets, token_offsets, start, end, aligned, tokens)
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
            examples.setdefault(kind, f"{shown_id(video_id)}: {reason}")
    return {
        "videos_seen": used + len(skipped),
        "videos_used": used,
        "skipped": dict(skip_counts),
        "fixed": dict(fix_counts),
        "examples": examples,
    }


def _read_report(path: Path) -> dict[str, Any]:
    """A version's report.json, as `DataReport.as_dict` wrote it."""
    report = _read_json(path)
    if not isinstance(report, dict):
        raise _Damaged(f"{path}: expected a JSON object, got {type(report).__name__}", path)
    for key in ("videos_seen", "videos_used"):
        _field(report, key, int, path)
    for key, kind in (("skipped", int), ("fixed", int), ("examples", str)):
        entries = _field(report, key, dict, path)
        if not all(isinstance(v, kind) and not isinstance(v, bool) for v in entries.values()):
            raise _Damaged(f"{path}: '{key}' holds a value that is not a {kind.__name__}", path)
    return report


def _load(folder: Path, manifest: dict[str, Any], store: VideoStore, vocab: int) -> tuple[ClipTable, dict[str, Any]]:
    """The current version's table and data report, checked against each other and the manifest."""
    version = folder / manifest["version"]
    table = _read_table(version, vocab, _has_dense(manifest))
    if (len(table), table.n_clips) != (manifest["videos"], manifest["clips"]):
        raise _Damaged(
            f"{folder / 'manifest.json'}: 'videos' {manifest['videos']} and 'clips' {manifest['clips']}, but "
            f"{version} holds {len(table)} videos and {table.n_clips} clips",
            folder / "manifest.json",
        )
    table.store = store
    report = _read_report(version / "report.json")
    if report["videos_used"] != len(table):
        path = version / "report.json"
        raise _Damaged(f"{path}: 'videos_used' is {report['videos_used']}, but the index holds {len(table)}", path)
    return table, report
