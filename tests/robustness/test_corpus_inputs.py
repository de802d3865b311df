"""The pre-training corpus as a tester damaged it, through the CLI (one subprocess per case).

- ids that are paths, hidden names, control characters or too long: skipped and counted, never a file path;
- a damaged corpus index: one error naming the file and the field, and how to fix it;
- HowTo100M files at the edges of their formats (huge fields, other encodings, a BOM, zip members that
  cannot be read, repeated lines): read, or the video skipped and counted, never a traceback;
- a `data.root` that cannot be a corpus folder: one error naming the setting.
"""

from __future__ import annotations

import contextlib
import json
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from decembert_cli.config import Config, load_config
from decembert_cli.data.corpus_index import howto100m, open_index
from decembert_cli.data.scan import UNSAFE_ID

from .cli import assert_one_error, run_cli, tree

DIM = 16
GOOD = ("v1", "v2", "v3")
LINES: dict[str, list[Any]] = {
    "start": [1.0, 5.0, 9.0],
    "end": [4.0, 8.0, 12.0],
    "text": ["cut the onion", "add some salt", "stir it well"],
}
CSV = "start,end,text\n1.0,4.0,cut the onion\n5.0,8.0,add some salt\n9.0,12.0,stir it well\n"
SETTINGS = [f"model.feature_dim_2d={DIM}", f"model.feature_dim_3d={DIM}", "data.use_dense=false"]


def _features(root: Path, video_id: str) -> None:
    for stream in ("2d", "3d"):
        path = root / "features" / stream / f"{video_id}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, np.zeros((30, DIM), np.float16))


def _corpus(work: Path, captions: dict[str, Any] | None = None) -> Path:
    """A tiny HowTo100M folder: features of GOOD and a caption.json of GOOD (plus `captions`)."""
    root = work / "h100m"
    for video_id in GOOD:
        _features(root, video_id)
    (root / "caption.json").write_text(json.dumps({**dict.fromkeys(GOOD, LINES), **(captions or {})}))
    return root


def _args(root: Path, *more: str) -> list[str]:
    sets = [f"data.root={root}", *SETTINGS, *more]
    return ["--config", "tiny", *(x for s in sets for x in ("--set", s))]


def _index(root: Path, *more: str) -> list[str]:
    return ["data", "index", "howto100m", *_args(root, *more)]


def _pretrain(root: Path, out: Path, *more: str) -> list[str]:
    steps = ["train.max_steps=1", "data.workers=0", "train.batch_size=2", "data.val_samples=2"]
    return ["pretrain", "--data", "howto100m", *_args(root, *steps, *more), "--out", str(out)]


def _built(root: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(manifest, report) of the corpus index under `root`."""
    folder = root / "decembert-index"
    manifest = json.loads((folder / "manifest.json").read_text())
    return manifest, json.loads((folder / manifest["version"] / "report.json").read_text())


def _ok(done: Any) -> None:
    output = done.stdout + done.stderr
    assert done.returncode == 0 and "Traceback" not in output, output


# -- ids are names, never paths ---------------------------------------------------------------------------

UNSAFE = {
    "parent": "../x",
    "out-of-root": "../../../x",  # features/2d/../../../x.npy is beside data.root, not in it
    "slash": "a/b",
    "backslash": "a\\b",
    "hidden": ".hidden",
    "300-characters": "a" * 300,
    "control-character": "v\x01x",
    "newline": "v\nx",
    "empty": "",
}


def _plant(root: Path, video_id: str) -> None:
    """Features where a reader that joins the id to a folder would find them (none for a name too long)."""
    with contextlib.suppress(OSError):
        _features(root, video_id)


@pytest.mark.parametrize("video_id", UNSAFE.values(), ids=UNSAFE.keys())
def test_an_unsafe_caption_json_id_is_skipped_and_counted(tmp_path: Path, video_id: str) -> None:
    root = _corpus(tmp_path, {video_id: LINES})
    _plant(root, video_id)
    done = run_cli(_index(root), tmp_path)
    _ok(done)
    manifest, report = _built(root)
    assert report["skipped"] == {UNSAFE_ID: 1} and report["videos_used"] == 3 and manifest["videos"] == 3
    assert repr(video_id)[:20] in report["examples"][UNSAFE_ID]  # shown quoted, control characters escaped
    assert "\x01" not in done.stdout + done.stderr


def test_unsafe_ids_from_caption_file_names_are_skipped(tmp_path: Path) -> None:
    """The other two caption forms take ids from file names: a zip member may be any name, a folder's
    file may be hidden."""
    root = tmp_path / "h100m"
    for video_id in GOOD:
        _features(root, video_id)
    _plant(root, ".hidden")
    with zipfile.ZipFile(root / "howto100m_captions.zip", "w") as archive:
        for name in [*GOOD, "a" * 300, "\x07", ".hidden"]:
            archive.writestr(f"{name}.csv", CSV)
    _ok(run_cli(_index(root), tmp_path))
    assert _built(root)[1]["skipped"] == {UNSAFE_ID: 3}
    folder = root / "captions"
    folder.mkdir()
    for name in [*GOOD, ".hidden"]:
        (folder / f"{name}.csv").write_text(CSV)
    _ok(run_cli(_index(root, f"data.captions={folder}", f"data.index={tmp_path / 'index2'}"), tmp_path))
    report = json.loads((tmp_path / "index2" / "v1" / "report.json").read_text())
    assert report["skipped"] == {UNSAFE_ID: 1} and report["videos_used"] == 3


def test_every_unsafe_id_is_skipped_while_the_good_videos_train(tmp_path: Path) -> None:
    root = _corpus(tmp_path, dict.fromkeys(UNSAFE.values(), LINES))
    for video_id in UNSAFE.values():
        _plant(root, video_id)
    before = tree(tmp_path)
    done = run_cli(_pretrain(root, tmp_path / "out"), tmp_path)
    _ok(done)
    report = json.loads((tmp_path / "out" / "data_report.json").read_text())
    assert report["skipped"] == {UNSAFE_ID: len(UNSAFE)} and report["videos_used"] == 3
    changed = {p for p, data in tree(tmp_path).items() if before.get(p, b"") != data}
    allowed = (tmp_path / "out", root / "decembert-index")
    assert all(p in allowed or any(a in p.parents for a in allowed) for p in changed), sorted(changed)


# -- a damaged corpus index -------------------------------------------------------------------------------


def _column(name: str, change: Callable[[np.ndarray], np.ndarray]) -> Callable[[Path], object]:
    def damage(version: Path) -> None:
        path = version / f"{name}.npy"
        np.save(path, change(np.load(path)))

    return damage


def _set(array: np.ndarray, index: int, value: Any) -> np.ndarray:
    array = array.copy()
    array[index] = value
    return array


def _truncate(name: str) -> Callable[[Path], object]:
    def damage(version: Path) -> None:
        path = version / name
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])

    return damage


def _delete(name: str) -> Callable[[Path], object]:
    return lambda version: (version / name).unlink()


def _manifest(change: Callable[[dict[str, Any]], Any]) -> Callable[[Path], object]:
    def damage(version: Path) -> None:
        path = version.parent / "manifest.json"
        manifest = json.loads(path.read_text())
        path.write_text(json.dumps(change(manifest)))

    return damage


def _without(data: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k != key}


def _report(text: str) -> Callable[[Path], object]:
    return lambda version: (version / "report.json").write_text(text)


GOOD_REPORT = {"videos_seen": 3, "videos_used": 3, "skipped": {}, "fixed": {}, "examples": {}}

# (case id, damage to the built index's current version folder, what the one error line must say)
DAMAGE: list[tuple[str, Callable[[Path], object], str]] = [
    ("column-truncated", _truncate("tokens.npy"), "tokens.npy"),
    ("column-missing", _delete("start.npy"), "start.npy"),
    ("column-not-npy", lambda v: (v / "end.npy").write_text("not an array"), "end.npy"),
    ("column-wrong-dtype", _column("seconds", lambda a: a.astype(np.float64)), "seconds.npy"),
    ("column-wrong-shape", _column("clip_offsets", lambda a: a[:-1]), "clip_offsets.npy"),
    ("column-two-dimensional", _column("rank", lambda a: a[:, None]), "rank.npy"),
    ("offsets-beyond-the-data", _column("token_offsets", lambda a: _set(a, -1, 10**6)), "token_offsets.npy"),
    ("offsets-decreasing", _column("clip_offsets", lambda a: _set(a, 1, 7)), "clip_offsets.npy"),
    ("start-nan", _column("start", lambda a: _set(a, 0, np.nan)), "start.npy"),
    ("tokens-beyond-the-vocabulary", _column("tokens", lambda a: _set(a, 0, 65000)), "tokens.npy"),
    ("id-a-path", _column("id_blob", lambda a: _set(a, 0, ord("/"))), "id_blob.npy"),
    ("id-not-utf8", _column("id_blob", lambda a: _set(a, 0, 0xFF)), "id_blob.npy"),
    ("manifest-names-a-missing-version", _manifest(lambda m: {**m, "version": "v9"}), "manifest.json: 'version'"),
    ("manifest-lacks-the-version", _manifest(lambda m: _without(m, "version")), "manifest.json: 'version'"),
    ("manifest-version-a-path", _manifest(lambda m: {**m, "version": "../v1"}), "manifest.json: 'version'"),
    (
        "manifest-sources-not-an-object",
        _manifest(lambda m: {**m, "fingerprint": {**m["fingerprint"], "sources": []}}),
        "manifest.json: 'fingerprint.sources'",
    ),
    ("manifest-fingerprint-a-string", _manifest(lambda m: {**m, "fingerprint": "x"}), "manifest.json: 'fingerprint'"),
    ("report-missing", _delete("report.json"), "report.json"),
    ("report-not-an-object", _report("[]"), "report.json"),
    ("report-lacks-a-key", _report(json.dumps(_without(GOOD_REPORT, "skipped"))), "report.json: 'skipped'"),
    ("report-count-a-string", _report(json.dumps({**GOOD_REPORT, "videos_used": "3"})), "report.json: 'videos_used'"),
]


def _build_index(root: Path) -> Path:
    """The index of `root` built in this process (setup, not a case): its current version folder."""
    cfg = load_config(Config, "tiny", [f"data.root={root}", *SETTINGS])
    from decembert_cli.model import build_tokenizer

    _table, _report, folder = open_index(howto100m, cfg.data, (DIM, DIM), build_tokenizer(cfg.model))
    return folder / json.loads((folder / "manifest.json").read_text())["version"]


@pytest.mark.parametrize(("damage", "needle"), [c[1:] for c in DAMAGE], ids=[c[0] for c in DAMAGE])
def test_a_damaged_index_is_one_error_naming_the_file(
    tmp_path: Path, damage: Callable[[Path], object], needle: str
) -> None:
    root = _corpus(tmp_path)
    damage(_build_index(root))
    line = assert_one_error(run_cli(_index(root), tmp_path), needle)
    assert "--rebuild" in line, line


def test_pretraining_on_a_damaged_index_is_one_error_and_a_rebuild_repairs_it(tmp_path: Path) -> None:
    root = _corpus(tmp_path)
    _column("tokens", lambda a: _set(a, 0, 65000))(_build_index(root))
    assert_one_error(run_cli(_pretrain(root, tmp_path / "out"), tmp_path), "tokens.npy")
    _ok(run_cli([*_index(root), "--rebuild"], tmp_path))
    _ok(run_cli(_pretrain(root, tmp_path / "out2"), tmp_path))


def test_a_damaged_videos_json_is_one_error_when_the_index_is_updated(tmp_path: Path) -> None:
    root = _corpus(tmp_path)
    _truncate("videos.json")(_build_index(root))
    _features(root, "v4")
    (root / "caption.json").write_text(json.dumps(dict.fromkeys([*GOOD, "v4"], LINES)))  # a changed corpus
    assert_one_error(run_cli(_index(root), tmp_path), "videos.json")


@pytest.mark.parametrize("plan", [b'{"fingerprint": {', b"\xff\xfe\x00garbage"], ids=["cut-short", "not-utf8"])
def test_a_garbage_build_plan_is_discarded(tmp_path: Path, plan: bytes) -> None:
    """build/plan.json only says which finished parts an interrupted build may reuse: unreadable, none is."""
    root = _corpus(tmp_path)
    (root / "decembert-index" / "build" / "part-000000").mkdir(parents=True)
    (root / "decembert-index" / "build" / "plan.json").write_bytes(plan)
    _ok(run_cli(_index(root), tmp_path))
    assert _built(root)[0]["videos"] == 3 and not (root / "decembert-index" / "build").exists()


# -- HowTo100M files at the edges of their formats --------------------------------------------------------


def _csv_folder(root: Path, files: dict[str, bytes]) -> None:
    folder = root / "howto100m_captions"
    folder.mkdir(parents=True)
    for name, data in files.items():
        (folder / f"{name}.csv").write_bytes(data)


def _caption_zip(root: Path, files: dict[str, bytes]) -> Path:
    path = root / "howto100m_captions.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name, data in files.items():
            archive.writestr(f"{name}.csv", data)
    return path


def _patch_member(path: Path, name: str, *, flags: int = 0, method: int | None = None) -> None:
    """Set general-purpose flag bits (1: encrypted) or the compression method of one member, in both its
    local header and its central-directory entry, as another zip tool would have written them."""
    data = bytearray(path.read_bytes())
    for signature, flag_at, method_at in ((b"PK\x03\x04", 6, 8), (b"PK\x01\x02", 8, 10)):
        at = data.find(signature)
        while at >= 0:
            name_at = at + (30 if signature == b"PK\x03\x04" else 46)
            length = struct.unpack_from("<H", data, at + (26 if signature == b"PK\x03\x04" else 28))[0]
            if data[name_at : name_at + length] == name.encode():
                struct.pack_into("<H", data, at + flag_at, struct.unpack_from("<H", data, at + flag_at)[0] | flags)
                if method is not None:
                    struct.pack_into("<H", data, at + method_at, method)
            at = data.find(signature, at + 4)
    path.write_bytes(bytes(data))


def _good_csvs(bom: bool = False) -> dict[str, bytes]:
    return {v: ("\ufeff" if bom else "").encode() + CSV.encode() for v in GOOD}


def _huge_field_csv(root: Path) -> None:
    _csv_folder(root, {**_good_csvs(), "v3": (CSV + '13,14,"' + "x" * 200_000 + '"\n').encode()})


def _latin1_csv(root: Path) -> None:
    _csv_folder(root, {**_good_csvs(), "v3": (CSV + "13,14,café au lait\n").encode("latin-1")})


def _encrypted_member(root: Path) -> None:
    _patch_member(_caption_zip(root, _good_csvs()), "v3.csv", flags=0x1)


def _unknown_method(root: Path) -> None:
    _patch_member(_caption_zip(root, _good_csvs()), "v3.csv", method=99)


# (case id, setup on the corpus folder without caption.json, the report's skipped counts)
SKIPPED: list[tuple[str, Callable[[Path], object], dict[str, int]]] = [
    ("caption-csv-field-over-128k", _huge_field_csv, {"malformed caption file": 1}),
    ("caption-csv-not-utf8", _latin1_csv, {"caption file not in UTF-8": 1}),
    ("caption-csv-bom", lambda r: _csv_folder(r, _good_csvs(bom=True)), {}),
    ("caption-zip-bom", lambda r: _caption_zip(r, _good_csvs(bom=True)), {}),
    ("caption-zip-encrypted-member", _encrypted_member, {"caption file unreadable": 1}),
    ("caption-zip-unknown-compression", _unknown_method, {"caption file unreadable": 1}),
]


@pytest.mark.parametrize(("setup", "skipped"), [c[1:] for c in SKIPPED], ids=[c[0] for c in SKIPPED])
def test_a_caption_file_is_read_or_its_video_skipped(
    tmp_path: Path, setup: Callable[[Path], object], skipped: dict[str, int]
) -> None:
    root = _corpus(tmp_path)
    (root / "caption.json").unlink()
    setup(root)
    _ok(run_cli(_index(root), tmp_path))
    report = _built(root)[1]
    assert report["skipped"] == skipped and report["videos_used"] == 3 - sum(skipped.values()), report


VIDEOS_CSV = "video_id,category_1,category_2,rank,task_id\nv1,Food,Cooking,1,52907\n"

# (case id, HowTo100M_v1.csv bytes, what the one error line must say)
VIDEO_LISTS = [
    ("field-over-128k", (VIDEOS_CSV + "v2,Food," + "x" * 200_000 + ",2,52907\n").encode(), "HowTo100M_v1.csv, line 3"),
    ("not-utf8", (VIDEOS_CSV + "v2,Café,Cuisine,2,52907\n").encode("latin-1"), "HowTo100M_v1.csv, line 3"),
]


@pytest.mark.parametrize(("data", "needle"), [c[1:] for c in VIDEO_LISTS], ids=[c[0] for c in VIDEO_LISTS])
def test_a_damaged_video_list_is_one_error_naming_the_line(tmp_path: Path, data: bytes, needle: str) -> None:
    root = _corpus(tmp_path)
    (root / "HowTo100M_v1.csv").write_bytes(data)
    assert_one_error(run_cli(_index(root), tmp_path), needle)


def test_a_video_list_with_a_bom_is_read(tmp_path: Path) -> None:
    root = _corpus(tmp_path)
    (root / "HowTo100M_v1.csv").write_bytes(("\ufeff" + VIDEOS_CSV + "v2,Food,Cooking,2,52907\n").encode())
    _ok(run_cli(_index(root), tmp_path))
    assert _built(root)[0]["videos"] == 2


def test_exact_duplicate_caption_lines_become_one_clip(tmp_path: Path) -> None:
    """Repeated lines (same start, end and text) are one utterance: one clip, counted as fixed. Lines that
    repeat only the text at another time are kept (a speaker saying it twice)."""
    twice = {k: [v[0], v[1], v[1], v[2]] for k, v in LINES.items()}
    again = {"start": [*LINES["start"], 15.0], "end": [*LINES["end"], 17.0], "text": [*LINES["text"], "add some salt"]}
    root = _corpus(tmp_path, {"v1": twice, "v2": again})
    _ok(run_cli(_index(root), tmp_path))
    manifest, report = _built(root)
    assert manifest["clips"] == 3 + 4 + 3, manifest
    assert report["fixed"] == {"duplicate caption lines (dropped)": 1} and report["skipped"] == {}


# -- data.root and the other path settings ----------------------------------------------------------------

NO_USER = "~no_such_user_decembert"

# (case id, argv for a work folder w with a tiny corpus w/h100m, what the one error line must say)
ROOTS: list[tuple[str, Callable[[Path], list[str]], str]] = [
    ("root-unknown-user", lambda w: _index(Path(f"{NO_USER}/x")), f"data.root: {NO_USER}"),
    (
        "sample-root-unknown-user",
        lambda w: ["pretrain", "--data", "sample", *_args(Path(f"{NO_USER}/x")), "--out", str(w / "out")],
        f"data.root: {NO_USER}",
    ),
    ("pretrain-root-unknown-user", lambda w: _pretrain(Path(f"{NO_USER}/x"), w / "out"), f"data.root: {NO_USER}"),
    ("root-is-a-file", lambda w: _index(w / "h100m" / "caption.json"), "caption.json is a file, not a folder"),
    ("index-unknown-user", lambda w: _index(w / "h100m", f"data.index={NO_USER}/i"), f"data.index: {NO_USER}"),
    (
        "features-unknown-user",
        lambda w: _index(w / "h100m", f"data.features_2d={NO_USER}/f"),
        f"data.features_2d: {NO_USER}",
    ),
    ("captions-unknown-user", lambda w: _index(w / "h100m", f"data.captions={NO_USER}/c"), f"data.captions: {NO_USER}"),
]


@pytest.mark.parametrize(("argv", "needle"), [c[1:] for c in ROOTS], ids=[c[0] for c in ROOTS])
def test_a_path_setting_that_cannot_be_a_folder_is_one_error(
    tmp_path: Path, argv: Callable[[Path], list[str]], needle: str
) -> None:
    _corpus(tmp_path)
    before = tree(tmp_path)
    assert_one_error(run_cli(argv(tmp_path), tmp_path), needle)
    assert tree(tmp_path) == before
