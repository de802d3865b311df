"""The built-in synthetic `sample` corpus: HowTo100M's exact layouts with a planted, measurable signal.

Every video belongs to one task of one of 4 domains (HowTo100M categories: recipes, car maintenance,
gardening, woodworking), each with its own objects (disjoint across domains) and actions (each shared
by two domains at most), so a caption of another video is usually about another topic, as in
HowTo100M. A video is cut into 10-16 contiguous segments; segment s shows one of the video's 4-6
objects of its domain (2D stream) being handled with one of its domain's actions (3D stream).
Features are noisy copies of fixed per-object and per-action prototype vectors, so what a model can
learn is known in advance:

- 2D feature of second t = normalise(unit(proto_object + 0.3 style) + noise * unit gaussian), from
  the segment containing the second's centre t + 0.5 (style alone outside segments); 3D features
  (1.5/s) the same with the action prototype, from the segment containing the clip's centre.
- One ASR caption per segment, timed inside it, naming its action and object amid filler words.
  Disjoint adjacent pairs of captions swap texts (about `misaligned` of all captions then describe a
  neighbouring segment: "shifted"); about `irrelevant` of all captions, taken from the rest, become
  greetings or credits. `alignment.json` records which segment each caption truly describes.
- Dense captions every 2 s describe the frame's object (generic templates, fit for every domain), with
  `<unk>` tokens and background captions repeated on contiguous frames, as the paper's captioner
  produced them (`scene_regions`; the `oracle` captioner says the same of the rendered videos).
  Like a real off-the-shelf captioner, it knows only part of the vocabulary: half of each domain's
  objects (`CAPTIONER_OBJECTS`). The others it calls "object", "thing" or "item", so for them only
  the video (2D stream) shows what the ASR names. Without that, every object could be read from
  the dense captions and matched as text, nothing would need the video, and video pre-training could
  not show any effect downstream (measured on the earlier format: video pre-training added nothing
  over text-only initialisation). Actions are never named by dense captions (3D stream only).

Same arguments give byte-identical files. A video's segments and captions depend only on the seed
and its index, so a smaller corpus is a prefix of a larger one. `meta.json` is written last: a
folder without it is an interrupted run, which the generator may overwrite.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from decembert_cli.data.corpus_index import IndexedCorpus
from decembert_cli.data.feature_store import npy_bytes
from decembert_cli.data.video_store import expand_user
from decembert_cli.errors import DecembertError
from decembert_cli.io import atomic_write_bytes, atomic_write_text

if TYPE_CHECKING:
    from decembert_cli.config.schema import DataConfig

from . import downstream as sample_downstream
from .video import FPS, SIZE, object_box, pose
from .video import render as render_video
from .vocabulary import (
    ACTIONS,
    ADJECTIVES,
    BACKGROUND,
    CAPTIONER_OBJECTS,
    DENSE_OBJECT,
    DOMAINS,
    GENERIC_NOUNS,
    IRRELEVANT,
    OBJECTS,
    TASKS,
    TEMPLATES,
    UNKNOWN,
)

# 4: the captioner names only CAPTIONER_OBJECTS; 3: dense captions seeded per frame time
SAMPLE_FORMAT = "decembert.sample/4"

FPS_3D = 24 / 16  # like HowTo100M's 3D features: one per 16 frames at 24 fps
DENSE_STEP_S = 2  # one dense-caption frame every 2 s (index int(t // 2))
STYLE_WEIGHT = 0.3  # norm of the per-video style vector added to each prototype


_FILES = ("HowTo100M_v1.csv", "task_ids.csv", "caption.json", "alignment.json", "meta.json")
_CLIP_FILES = (
    "MSRVTT_data.json",
    "train_qa.json",
    "val_qa.json",
    "test_qa.json",
    "MSRVTT_JSFUSION_test.csv",
    "MSRVTT_train.9k.csv",
)
_VIDEO_DIRS = ("features/2d", "features/3d", "dense_captions", "videos")
_ALL_VIDEO_DIRS = (*_VIDEO_DIRS, *(f"msrvtt/{d}" for d in _VIDEO_DIRS))
_VIDEO_FILE = re.compile(r"(sample_\d{4,}|video\d+)\.(npy|mp4)")
# what decembert_cli.io leaves when killed; .tmp-<name> is video.py's temporary video
_TEMP_FILE = re.compile(r"\.(?P<name>.+)\.[^.]+\.tmp|\.tmp-(?P<video>(sample_\d{4,}|video\d+)\.mp4)")


def video_id(index: int) -> str:
    """The id of the index-th video: sample_0000, sample_0001, ..."""
    return f"sample_{index:04d}"


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def prototypes(seed: int, dim_2d: int = 2048, dim_3d: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """The unit prototype vectors: objects (len(OBJECTS), dim_2d) and actions (len(ACTIONS), dim_3d)."""
    objects = _unit_rows(np.random.default_rng([seed, 0, 0]).standard_normal((len(OBJECTS), dim_2d)))
    actions = _unit_rows(np.random.default_rng([seed, 0, 1]).standard_normal((len(ACTIONS), dim_3d)))
    return objects, actions


def _owned(rel: Path) -> bool:
    """Whether a path relative to the corpus root is one this generator writes (or its temp file)."""
    name = rel.name
    temp = _TEMP_FILE.fullmatch(name)
    if temp:
        name = temp.group("name") or temp.group("video")
    parent = rel.parent.as_posix()
    if parent == ".":
        return name in _FILES
    if parent == "msrvtt":
        return name in _CLIP_FILES
    if parent == "youcook2":
        return name == "youcookii_annotations_trainval.json"
    return parent in _ALL_VIDEO_DIRS and _VIDEO_FILE.fullmatch(name) is not None


def _meta_json(root: Path) -> dict | None:
    try:
        meta = json.loads((Path(root) / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def read_meta(root: Path) -> dict | None:
    """The sample corpus' meta.json, or None when `root` holds none (or another kind, or an older format)."""
    meta = _meta_json(root)
    return meta if meta is not None and meta.get("format") == SAMPLE_FORMAT else None


def is_sample_corpus(root: Path) -> bool:
    """True when `root` holds a complete sample corpus (its meta.json, written last, is there)."""
    return read_meta(root) is not None


def load_alignment(root: Path) -> dict[str, list[int]]:
    """video_id -> for each caption in caption.json order, the segment it truly describes (-1: irrelevant)."""
    path = Path(root) / "alignment.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DecembertError(
            f"cannot read {path} ({exc}); regenerate the corpus with `decembert sample-data`"
        ) from None
    if not isinstance(data, dict) or data.get("format") != SAMPLE_FORMAT:
        raise DecembertError(f"{path} is not a {SAMPLE_FORMAT} alignment file; regenerate with `decembert sample-data`")
    return {vid: [int(s) for s in entry["caption_segment"]] for vid, entry in data["videos"].items()}


class SampleCorpus(IndexedCorpus):
    """The built-in synthetic corpus: generated on first use, read as HowTo100M, with its true alignment."""

    def root(self, config: DataConfig, dims: tuple[int, int]) -> Path:
        root = expand_user(config.root, "data.root") if config.root else default_sample_dir(dims)
        if not is_sample_corpus(root):
            if dims[0] != dims[1]:
                raise DecembertError(
                    "the sample corpus has equal 2D and 3D widths; set model.feature_dim_2d = model.feature_dim_3d"
                )
            generate(root, feature_dim_2d=dims[0], feature_dim_3d=dims[1])
        return root

    def alignment(self, root: Path) -> tuple[dict[str, list[int]], Path] | None:
        return load_alignment(root), root / "alignment.json"


sample = SampleCorpus()


def default_sample_dir(dims: tuple[int, int]) -> Path:
    """Where `--data sample` generates the corpus when `data.root` is empty (one folder per format and width)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    version = SAMPLE_FORMAT.rsplit("/", 1)[-1]
    return cache / "decembert" / f"sample-v{version}-d{dims[0]}"


def _prepare(out_dir: Path, arguments: dict) -> bool:
    """Check `out_dir` is ours to write; True when it already holds this exact corpus."""
    if out_dir.exists() and not out_dir.is_dir():
        raise DecembertError(f"{out_dir} is a file; choose a directory for the sample corpus")
    if not out_dir.exists():
        return False
    if (out_dir / "meta.json").exists():
        meta = read_meta(out_dir)
        other = (_meta_json(out_dir) or {}).get("format")
        if meta is None and isinstance(other, str) and other.startswith("decembert.sample/"):
            raise DecembertError(
                f"{out_dir} holds a sample corpus in an older format ({other}; this version writes "
                f"{SAMPLE_FORMAT}); choose another directory or delete {out_dir} to regenerate it"
            )
        if meta is None:
            raise DecembertError(f"{out_dir} is not empty and is not a sample corpus; choose an empty or new directory")
        if {"render": False, "features": "synthetic", **meta.get("arguments", {})} == arguments:
            return True  # (corpora written before render/features existed had neither)
        raise DecembertError(
            f"{out_dir} holds a sample corpus generated with other arguments ({meta.get('arguments')}); "
            "choose another directory"
        )
    foreign = []  # anything an interrupted run of this generator would not have left
    for path in sorted(out_dir.rglob("*")):
        rel = path.relative_to(out_dir)
        if not (
            rel.as_posix() in ("features", "msrvtt", "msrvtt/features", "youcook2", *_ALL_VIDEO_DIRS)
            if path.is_dir()
            else _owned(rel)
        ):
            foreign.append(rel)
    if foreign:
        raise DecembertError(
            f"{out_dir} is not empty and is not a sample corpus (it holds {foreign[0]}); "
            "choose an empty or new directory"
        )
    return False


def _remove_leftovers(out_dir: Path, keep: set[str]) -> None:
    """Drop what an interrupted run left that this run does not write: temp files, videos past the count."""
    for sub in _ALL_VIDEO_DIRS:
        folder = out_dir / sub
        if folder.is_dir():
            for path in folder.iterdir():
                if path.is_file() and (_TEMP_FILE.fullmatch(path.name) or path.stem not in keep):
                    path.unlink()
    for folder in (out_dir, out_dir / "msrvtt"):
        for path in folder.iterdir() if folder.is_dir() else ():
            if path.is_file() and _TEMP_FILE.fullmatch(path.name):
                path.unlink()


def _stochastic_round(x: float, rng: np.random.Generator) -> int:
    whole = math.floor(x)
    return whole + int(rng.random() < x - whole)


def _disjoint_pairs(n: int, k: int, rng: np.random.Generator) -> list[int]:
    """First indices of k uniformly random disjoint adjacent pairs (s, s+1) among n items."""
    units = np.sort(rng.choice(n - k, size=k, replace=False))  # k dominoes among n - k units
    return [int(u) + i for i, u in enumerate(units)]


def _plan_video(index: int, seed: int, misaligned: float, irrelevant: float) -> dict:
    """Task, segments (centiseconds), captions and their true segments of one video."""
    rng = np.random.default_rng([seed, 1, index])
    task_id, _name, domain = TASKS[int(rng.integers(len(TASKS)))]
    pool = domain.objects
    objects = [pool[i] for i in rng.choice(len(pool), size=int(rng.integers(4, 7)), replace=False)]
    n = int(rng.integers(10, 17))
    segments = []
    cursor = int(rng.integers(0, 151))  # first segment starts within 1.5 s
    obj = action = None
    for _ in range(n):
        obj = str(rng.choice([o for o in objects if o != obj]))
        action = str(rng.choice([a for a in domain.actions if a != action]))
        length = int(rng.integers(300, 601))
        segments.append((cursor, cursor + length, obj, action))
        cursor += length
    texts = [str(rng.choice(TEMPLATES)).format(action=a, obj=o) for _s, _e, o, a in segments]
    described = list(range(n))
    kind = ["aligned"] * n
    for s in _disjoint_pairs(n, min(n // 2, _stochastic_round(misaligned * n / 2, rng)), rng):
        texts[s], texts[s + 1] = texts[s + 1], texts[s]
        described[s], described[s + 1] = s + 1, s
        kind[s] = kind[s + 1] = "shifted"
    rest = [s for s in range(n) if kind[s] == "aligned"]
    m = min(len(rest), _stochastic_round(irrelevant * n, rng))
    for s in sorted(int(x) for x in rng.choice(rest, size=m, replace=False)):
        texts[s] = str(rng.choice(IRRELEVANT))
        described[s] = -1
        kind[s] = "irrelevant"
    starts, ends = [], []
    for s0, s1, _o, _a in segments:  # caption timed inside its segment
        starts.append((s0 + int(rng.integers(0, 31))) / 100)
        ends.append((s1 - int(rng.integers(0, 31))) / 100)
    background = [str(b) for b in rng.choice(BACKGROUND, size=2, replace=False)]  # recurs on this video's frames
    return {
        "index": index,
        "id": video_id(index),
        "task_id": task_id,
        "category": (domain.category_1, domain.category_2),
        "rank": int(rng.integers(1, 201)),
        "objects": objects,
        "segments": segments,
        "seconds": math.ceil(cursor / 100),
        "captions": {"start": starts, "end": ends, "text": texts},
        "caption_segment": described,
        "caption_kind": kind,
        "background": background,
        "dense_seed": int(rng.integers(2**31)),
    }


def _segment_at(times: np.ndarray, segments: list[tuple[int, int, str, str]]) -> np.ndarray:
    """Index of the segment containing each time in seconds; -1 outside all segments."""
    bounds = np.array([s[0] for s in segments] + [segments[-1][1]], dtype=np.float64) / 100
    idx = np.searchsorted(bounds, times, side="right") - 1
    return np.where((idx >= 0) & (idx < len(segments)), idx, -1)


def _stream(
    labels: np.ndarray, protos: np.ndarray, style: np.ndarray, noise: float, rng: np.random.Generator
) -> np.ndarray:
    """Unit rows: normalise(unit(prototype[label] + style) + noise * unit gaussian), style alone for -1."""
    signal = np.where(labels[:, None] >= 0, protos[np.maximum(labels, 0)], 0.0) + style  # (T, D)
    gauss = _unit_rows(rng.standard_normal(signal.shape))
    return _unit_rows(_unit_rows(signal) + noise * gauss).astype(np.float16)


def _features(
    plan: dict, seed: int, objects: np.ndarray, actions: np.ndarray, noise: float
) -> tuple[np.ndarray, np.ndarray]:
    """(T, dim_2d) and (T3, dim_3d) float16 features of one video; T3 makes the 3D stream reach T seconds."""
    rng = np.random.default_rng([seed, 2, plan["index"]])
    segments, t = plan["segments"], plan["seconds"]
    obj_index = np.array([OBJECTS.index(s[2]) for s in segments])
    act_index = np.array([ACTIONS.index(s[3]) for s in segments])
    t3 = math.ceil((t - 1) * FPS_3D) + 1  # load_features keeps floor((t3 - 1) / 1.5) + 1 = t seconds
    seg_2d = _segment_at(np.arange(t) + 0.5, segments)
    seg_3d = _segment_at((np.arange(t3) + 0.5) / FPS_3D, segments)
    style_2d = STYLE_WEIGHT * _unit_rows(rng.standard_normal(int(objects.shape[1])))
    style_3d = STYLE_WEIGHT * _unit_rows(rng.standard_normal(int(actions.shape[1])))
    f2 = _stream(np.where(seg_2d >= 0, obj_index[seg_2d], -1), objects, style_2d, noise, rng)
    f3 = _stream(np.where(seg_3d >= 0, act_index[seg_3d], -1), actions, style_3d, noise, rng)
    return f2, f3


def scene_regions(
    plan: dict, t: float, size: tuple[int, int] = (160, 120)
) -> list[tuple[str, tuple[float, float, float, float]]]:
    """What a dense captioner says of the frame at `t` s: (caption, box x1, y1, x2, y2 in a `size` frame).

    The frame's object, if a segment shows one at `t`, gets two captions from generic templates
    with the box it is drawn in (`video.py`); sometimes another of the video's objects is named
    (a captioner's mistake), and a `<unk>` caption or background captions cover the whole frame. The
    first background caption recurs on every frame of the video, as real captioners repeat one.
    Random choices are seeded by the video and the millisecond of `t`, so any time gives the same answer.
    """
    rng = np.random.default_rng([plan["dense_seed"], int(round(t * 1000))])
    sx, sy = size[0] / SIZE[0], size[1] / SIZE[1]
    whole = (0.0, 0.0, float(size[0]), float(size[1]))
    regions = [(plan["background"][0], whole)]
    seg = int(_segment_at(np.array([t]), plan["segments"])[0])
    if seg >= 0:
        start, _end, obj, action = plan["segments"][seg]
        shown = math.floor(t * FPS + 1e-6) / FPS  # the frame on screen at t
        dx, dy, scale, angle = pose(ACTIONS.index(action), max(0.0, shown - start / 100))
        x1, y1, x2, y2 = object_box(OBJECTS.index(obj), SIZE[0] / 2 + dx, SIZE[1] / 2 + dy, scale, angle)
        box = (max(0.0, x1 * sx), max(0.0, y1 * sy), min(float(size[0]), x2 * sx), min(float(size[1]), y2 * sy))
        for template in rng.choice(DENSE_OBJECT, size=2, replace=False):
            regions.append((str(template).format(adj=str(rng.choice(ADJECTIVES)), obj=_captioner_name(obj, rng)), box))
        if rng.random() < 0.3:
            other = str(rng.choice([o for o in plan["objects"] if o != obj]))
            regions.append((f"{_captioner_name(other, rng)} on the table", whole))
    if rng.random() < 0.5:
        regions.append((plan["background"][1], whole))
    if rng.random() < 0.3:
        regions.append((str(rng.choice(UNKNOWN)), whole))
    return [
        (c, (round(left, 2), round(top, 2), round(right, 2), round(bottom, 2)))
        for c, (left, top, right, bottom) in regions
    ]


def _captioner_name(obj: str, rng: np.random.Generator) -> str:
    """The word the dense captioner uses for an object: its name if it knows it, else a generic noun."""
    return obj if obj in CAPTIONER_OBJECTS else str(rng.choice(GENERIC_NOUNS))


def _dense_frames(plan: dict) -> np.ndarray:
    """The paper's layout: a 1-D object array, one list of caption strings per 2 s step."""
    steps = math.ceil(plan["seconds"] / DENSE_STEP_S)
    array = np.empty(steps, dtype=object)
    for k in range(steps):
        array[k] = [caption for caption, _box in scene_regions(plan, k * float(DENSE_STEP_S))]
    return array


def plans(root: Path) -> dict[str, dict]:
    """video_id -> plan of every video of the sample corpus in `root` (its clips in msrvtt/ too), from its meta.json."""
    meta = read_meta(root)
    if meta is None:
        raise DecembertError(
            f"{root} holds no sample corpus (no {SAMPLE_FORMAT} meta.json); make one with `decembert sample-data`"
        )

    args = meta["arguments"]
    found = [_plan_video(i, args["seed"], args["misaligned"], args["irrelevant"]) for i in range(args["videos"])]
    found += sample_downstream.clip_plans(args["seed"], args.get("clips", 0))
    return {p["id"]: p for p in found}


def _csv_text(rows: list[list[object]], delimiter: str = ",") -> str:
    buffer = io.StringIO()
    csv.writer(buffer, delimiter=delimiter, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def generate(
    out_dir: Path,
    *,
    videos: int = 160,
    seed: int = 0,
    feature_dim_2d: int = 2048,
    feature_dim_3d: int = 2048,
    misaligned: float = 0.5,
    irrelevant: float = 0.1,
    noise: float = 0.5,
    render: bool = False,
    features: str = "synthetic",
    clips: int = 240,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write the sample corpus into `out_dir` (HowTo100M layouts) and return it.

    A folder that already holds this exact corpus is left as it is; a folder holding anything else
    (another corpus, other files) raises DecembertError. `misaligned` and `irrelevant` are fractions
    of all captions; `noise` is the ratio of noise norm to signal norm in every feature row.
    `render` also writes videos/<id>.mp4 (see `video.py`); `features` = "synthetic" writes the
    features from prototypes and the dense captions (paper layout, from `scene_regions`), "none"
    leaves features/ to `decembert extract-features videos/` and dense_captions/ to
    `decembert dense-caption videos/ --backend oracle`.
    `clips` short clips go to msrvtt/ with MSR-VTT and MSRVTT-QA annotations (`downstream.py`).
    `progress(done, total)` is called after each video.
    """
    out_dir = Path(out_dir)
    arguments: dict[str, Any] = {
        "videos": videos,
        "seed": seed,
        "feature_dim_2d": feature_dim_2d,
        "feature_dim_3d": feature_dim_3d,
        "misaligned": misaligned,
        "irrelevant": irrelevant,
        "noise": noise,
        "render": render,
        "features": features,
        "clips": clips,
    }
    _check_arguments(**arguments)
    if _prepare(out_dir, arguments):
        return out_dir

    plans = [_plan_video(i, seed, misaligned, irrelevant) for i in range(videos)]
    clip_plans = sample_downstream.clip_plans(seed, clips)
    if out_dir.exists():
        _remove_leftovers(out_dir, {p["id"] for p in plans + clip_plans})
    _write_index(out_dir, plans)
    write_video = _video_writer(seed, feature_dim_2d, feature_dim_3d, noise, features, render)
    for done, plan in enumerate(plans, start=1):
        write_video(plan, out_dir)
        if progress is not None:
            progress(done, videos)
    _write_downstream(out_dir, plans, clip_plans, seed, write_video)
    _write_truth(out_dir, plans)
    # last: marks the corpus complete
    atomic_write_text(out_dir / "meta.json", json.dumps(_meta(arguments, plans), indent=2) + "\n")
    return out_dir


def _check_arguments(
    *,
    videos: int,
    seed: int,
    feature_dim_2d: int,
    feature_dim_3d: int,
    misaligned: float,
    irrelevant: float,
    noise: float,
    render: bool,
    features: str,
    clips: int,
) -> None:
    """Raise DecembertError for arguments `generate` cannot honour."""
    if videos < 1:
        raise DecembertError(f"videos = {videos}: the sample corpus needs at least one video")
    if seed < 0:
        raise DecembertError(f"seed = {seed}: use a seed >= 0")
    if feature_dim_2d < 1 or feature_dim_3d < 1:
        raise DecembertError(f"feature widths {feature_dim_2d}, {feature_dim_3d}: both must be >= 1")
    if not (0 <= misaligned <= 1 and 0 <= irrelevant <= 1 and misaligned + irrelevant <= 1):
        raise DecembertError(
            f"misaligned = {misaligned}, irrelevant = {irrelevant}: use fractions in [0, 1] with a sum <= 1"
        )
    if not (noise >= 0 and math.isfinite(noise)):
        raise DecembertError(f"noise = {noise}: use a ratio >= 0")
    if features not in ("synthetic", "none"):
        raise DecembertError(f"features = {features!r}: use synthetic or none")
    if clips < 0:
        raise DecembertError(f"clips = {clips}: use 0 or more")
    if features == "none" and not render:
        raise DecembertError("a corpus without features needs its videos: render them, or write synthetic features")


def _write_index(out_dir: Path, plans: list[dict]) -> None:
    """Write task_ids.csv and HowTo100M_v1.csv (one row per video: categories, rank, task)."""
    atomic_write_text(out_dir / "task_ids.csv", _csv_text([[tid, name] for tid, name, _ in TASKS], delimiter="\t"))
    rows: list[list[object]] = [["video_id", "category_1", "category_2", "rank", "task_id"]]
    rows += [[p["id"], *p["category"], p["rank"], p["task_id"]] for p in plans]
    atomic_write_text(out_dir / "HowTo100M_v1.csv", _csv_text(rows))


def _video_writer(
    seed: int, feature_dim_2d: int, feature_dim_3d: int, noise: float, features: str, render: bool
) -> Callable[[dict, Path], None]:
    """`write_video(plan, folder)`: writes one planned video's files under `folder` (corpus root or msrvtt/)."""
    objects, actions = prototypes(seed, feature_dim_2d, feature_dim_3d)
    object_index = {o: i for i, o in enumerate(OBJECTS)}
    action_index = {a: i for i, a in enumerate(ACTIONS)}

    def write_video(plan: dict, folder: Path) -> None:
        """Features (synthetic) and dense captions, or the rendered video, of one planned video."""
        if features == "synthetic":
            f2, f3 = _features(plan, seed, objects, actions, noise)
            atomic_write_bytes(folder / "features" / "2d" / f"{plan['id']}.npy", npy_bytes(f2))
            atomic_write_bytes(folder / "features" / "3d" / f"{plan['id']}.npy", npy_bytes(f3))
            # else `decembert dense-caption videos --backend oracle` writes them
            atomic_write_bytes(folder / "dense_captions" / f"{plan['id']}.npy", npy_bytes(_dense_frames(plan)))
        if render:
            (folder / "videos").mkdir(parents=True, exist_ok=True)
            render_video(plan, seed, folder / "videos" / f"{plan['id']}.mp4", object_index, action_index)

    return write_video


def _write_downstream(
    out_dir: Path, plans: list[dict], clip_plans: list[dict], seed: int, write_video: Callable[[dict, Path], None]
) -> None:
    """Write msrvtt/ (the clips and their MSR-VTT annotations) and youcook2/ (annotations of the corpus' videos)."""
    sample_downstream.write(out_dir, clip_plans, write_video)
    atomic_write_text(
        out_dir / "youcook2" / sample_downstream.YOUCOOK2_FILE, sample_downstream.youcook2_annotations(plans, seed)
    )


def _write_truth(out_dir: Path, plans: list[dict]) -> None:
    """Write caption.json (the ASR captions) and alignment.json (segments and what each caption describes)."""
    atomic_write_text(out_dir / "caption.json", json.dumps({p["id"]: p["captions"] for p in plans}))
    alignment = {
        p["id"]: {
            "segments": [[s0 / 100, s1 / 100, obj, action] for s0, s1, obj, action in p["segments"]],
            "caption_segment": p["caption_segment"],
            "caption_kind": p["caption_kind"],
        }
        for p in plans
    }
    atomic_write_text(out_dir / "alignment.json", json.dumps({"format": SAMPLE_FORMAT, "videos": alignment}))


def _meta(arguments: dict[str, Any], plans: list[dict]) -> dict[str, Any]:
    """The content of meta.json: format, arguments, counts and what each folder holds."""
    videos, clips = arguments["videos"], arguments["clips"]
    features, render = arguments["features"], arguments["render"]
    kinds = [k for p in plans for k in p["caption_kind"]]
    return {
        "format": SAMPLE_FORMAT,
        "description": (
            "Synthetic HowTo100M-layout corpus of videos in 4 task domains with disjoint objects: "
            "2D features encode each segment's object, 3D features its "
            "action; captions are timed to segments, some swapped with a neighbour (shifted) or replaced "
            "by chatter (irrelevant); alignment.json holds the truth."
        ),
        "arguments": arguments,
        "counts": {
            "videos": videos,
            "captions": len(kinds),
            "seconds": sum(p["seconds"] for p in plans),
            "shifted": kinds.count("shifted"),
            "irrelevant": kinds.count("irrelevant"),
        },
        "features": (
            {"backbone": "synthetic", "dtype": "float16", "fps_2d": 1.0, "fps_3d": FPS_3D, "l2_normalised": True}
            if features == "synthetic"
            else {"backbone": "none: run `decembert extract-features videos --out features`"}
        ),
        "videos": {"folder": "videos", "codec": "mp4v", "fps": 24, "size": [160, 120]} if render else None,
        "downstream": {
            "msrvtt": {
                "clips": clips,
                "folder": "msrvtt",
                "formats": "MSRVTT_data.json, MSRVTT-QA *_qa.json, 1k-A test csv",
            },
            "youcook2": {"file": "youcook2/youcookii_annotations_trainval.json", "videos": "the corpus' own"},
        },
        "dense_captions": (
            {"step_s": DENSE_STEP_S, "layout": "paper object array"}
            if features == "synthetic"
            else {"layout": "none: run `decembert dense-caption videos --backend oracle --out dense_captions`"}
        ),
        "vocabulary": _meta_vocabulary(),
    }


def _meta_vocabulary() -> dict[str, Any]:
    """meta.json's vocabulary: objects, the captioner's objects, actions and the domains."""
    return {
        "objects": list(OBJECTS),
        "captioner_objects": sorted(CAPTIONER_OBJECTS),
        "actions": list(ACTIONS),
        "domains": [
            {
                "category_1": d.category_1,
                "category_2": d.category_2,
                "task_ids": [t for t, _ in d.tasks],
                "objects": list(d.objects),
                "actions": list(d.actions),
            }
            for d in DOMAINS
        ],
    }
