"""The output rules every command follows (decembert_cli/io.py), through the CLI as a user meets them:

1. an output that is, or would overwrite, one of the command's inputs is refused before any work, and so is an
   existing file the command does not document that it replaces; a command's temporary files can never be a
   user's (random names), so nothing the user had is deleted;
2. one writer per output folder: a second one gets an error naming the holder, a dead holder's lock is taken over;
3. ids read from annotation files are names, never paths;
4. storage errors (disk full, read-only, no permission, a name too long) are one error line naming the path.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from decembert_cli.data.sample.corpus import generate
from decembert_cli.errors import DecembertError
from decembert_cli.io import folder_lock

from .cli import assert_one_error, run_cli, tree

DIM = 16
TINY = ["--config", "tiny", "--set", f"model.feature_dim_2d={DIM}", "--set", f"model.feature_dim_3d={DIM}"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("outputs") / "sample", videos=12, feature_dim_2d=DIM, feature_dim_3d=DIM)


def _pretrain(corpus: Path, out: Path, *extra: str) -> list[str]:
    return [
        "pretrain",
        "--data",
        "sample",
        *TINY,
        "--set",
        f"data.root={corpus}",
        "--set",
        "train.max_steps=1",
        "--set",
        "data.workers=0",
        "--out",
        str(out),
        *extra,
    ]


@pytest.fixture(scope="module")
def run(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished one-step pre-training run (read-only for the tests)."""
    out = tmp_path_factory.mktemp("outputs-run") / "run"
    done = run_cli(_pretrain(corpus, out), out.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    return out


def _finetune(corpus: Path, out: Path) -> list[str]:
    return [
        "finetune",
        "msrvtt-qa",
        "--set",
        "model.arch=tiny",
        "--set",
        "model.init=none",
        "--set",
        f"task.root={corpus / 'msrvtt'}",
        "--set",
        "train.max_steps=1",
        "--out",
        str(out),
    ]


def _caption_eval(corpus: Path, predictions: Path, out: Path) -> list[str]:
    return [
        "evaluate",
        "msrvtt-caption",
        "--predictions",
        str(predictions),
        "--set",
        f"task.root={corpus / 'msrvtt'}",
        "--set",
        "task.meteor=false",
        "--out",
        str(out),
    ]


# ---- 1. an output never overwrites an input or a file the command did not write ----------------------------------

USER_TEXT = b"the user's own file\n"


def _user_file(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(USER_TEXT)
    return path


# (case id, setup(work, corpus, run) -> argv, what the error line must say)
Case = tuple[str, Callable[[Path, Path, Path], list[str]], str]


def _evaluate_into_its_input(w: Path, c: Path, r: Path) -> list[str]:
    _user_file(w / "d" / "metrics.json").write_text('{"video_id": "video0", "window": null, "caption": "a"}\n')
    return _caption_eval(c, w / "d" / "metrics.json", w / "d")


def _evaluate_over_user_metrics(w: Path, c: Path, r: Path) -> list[str]:
    (w / "p.jsonl").write_text('{"video_id": "video0", "window": null, "caption": "a"}\n')
    _user_file(w / "d" / "metrics.json")
    return _caption_eval(c, w / "p.jsonl", w / "d")


def _curves_over_log(w: Path, c: Path, r: Path) -> list[str]:
    copy = w / "r"
    copy.mkdir()
    (copy / "metrics.jsonl").write_bytes((r / "metrics.jsonl").read_bytes())
    return ["visualize", "run", str(copy), "--out", str(copy / "metrics.jsonl")]


def _curves_over_config(w: Path, c: Path, r: Path) -> list[str]:
    copy = w / "r"
    copy.mkdir()
    (copy / "metrics.jsonl").write_bytes((r / "metrics.jsonl").read_bytes())
    _user_file(copy / "config.yaml")
    return ["visualize", "run", str(copy), "--out", str(copy / "config.yaml")]


def _curves_through_a_link(w: Path, c: Path, r: Path) -> list[str]:
    copy = w / "r"
    copy.mkdir()
    (copy / "metrics.jsonl").write_bytes((r / "metrics.jsonl").read_bytes())
    (w / "picture.png").symlink_to(copy / "metrics.jsonl")
    return ["visualize", "run", str(copy), "--out", str(w / "picture.png")]


def _video_over_itself(w: Path, c: Path, r: Path) -> list[str]:
    _user_file(w / "v.mp4")
    return ["visualize", "video", str(w / "v.mp4"), "--out", str(w / "v.mp4")]


def _attention_over_user_json(w: Path, c: Path, r: Path) -> list[str]:
    _user_file(w / "notes.json")
    return ["visualize", "attention", "--checkpoint", str(r), "--video", "x", "--out", str(w / "notes.png")]


def _attention_over_user_png_name(w: Path, c: Path, r: Path) -> list[str]:
    _user_file(w / "notes.png")  # a file named .png that is no picture
    return ["visualize", "attention", "--checkpoint", str(r), "--video", "x", "--out", str(w / "notes.png")]


def _pretrain_into_user_folder(w: Path, c: Path, r: Path) -> list[str]:
    _user_file(w / "mine" / "config.yaml")
    return _pretrain(c, w / "mine")


def _finetune_into_user_folder(w: Path, c: Path, r: Path) -> list[str]:
    _user_file(w / "mine" / "notes.txt")
    return _finetune(c, w / "mine")


def _extract_over_its_list(w: Path, c: Path, r: Path) -> list[str]:
    _user_file(w / "store" / "videos.txt")
    return ["extract-features", str(w / "store" / "videos.txt"), "--out", str(w / "store"), "--random-init"]


def _import_inside_store(w: Path, c: Path, r: Path) -> list[str]:
    _user_file(w / "store" / "dc.json")
    return ["dense-caption", str(w / "store" / "dc.json"), "--backend", "import", "--out", str(w / "store")]


def _export_over_a_folder(w: Path, c: Path, r: Path) -> list[str]:
    _user_file(w / "models" / "m" / "weights.txt")
    return ["export", str(r), "--out", str(w / "models" / "m")]


OUTPUT_CASES: list[Case] = [
    ("evaluate-out-is-its-predictions", _evaluate_into_its_input, "is an input of this command"),
    ("evaluate-over-a-user-metrics-file", _evaluate_over_user_metrics, "is not a file this command wrote"),
    ("visualize-run-over-its-log", _curves_over_log, "is an input of this command"),
    ("visualize-run-over-a-user-file", _curves_over_config, "is not a file this command wrote"),
    ("visualize-run-through-a-link-to-its-log", _curves_through_a_link, "is an input of this command"),
    ("visualize-video-over-the-video", _video_over_itself, "is an input of this command"),
    ("visualize-attention-over-a-user-json", _attention_over_user_json, "notes.json exists"),
    ("visualize-attention-over-a-non-picture", _attention_over_user_png_name, "notes.png exists"),
    ("pretrain-into-a-folder-of-user-files", _pretrain_into_user_folder, "holds files that are not a run"),
    ("finetune-into-a-folder-of-user-files", _finetune_into_user_folder, "holds files that are not a run"),
    ("extract-features-store-holds-its-input", _extract_over_its_list, "holds the input"),
    ("dense-caption-store-holds-its-input", _import_inside_store, "holds the input"),
    ("export-over-an-existing-folder", _export_over_a_folder, "exists"),
]


@pytest.mark.parametrize(("make", "needle"), [c[1:] for c in OUTPUT_CASES], ids=[c[0] for c in OUTPUT_CASES])
def test_an_output_never_overwrites_an_input_or_a_users_file(
    corpus: Path, run: Path, tmp_path: Path, make: Callable[[Path, Path, Path], list[str]], needle: str
) -> None:
    argv = make(tmp_path, corpus, run)
    before = tree(tmp_path)
    done = run_cli(argv, tmp_path)
    assert_one_error(done, needle)
    after = tree(tmp_path)
    assert {p: b for p, b in after.items() if p in before} == before, "a file the user had was changed or removed"


def test_export_never_touches_a_users_folder_named_like_its_temporary(run: Path, tmp_path: Path) -> None:
    """`export --out models/m` used to delete `models/.m.partial` with whatever the user kept in it."""
    kept = _user_file(tmp_path / "models" / ".m.partial" / "notes.txt")
    done = run_cli(["export", str(run), "--out", str(tmp_path / "models" / "m")], tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert kept.read_bytes() == USER_TEXT
    assert (tmp_path / "models" / "m" / "config.json").is_file()
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == [".m.partial", "m"]  # no temporary left


def test_a_new_evaluation_replaces_only_its_own_earlier_files(corpus: Path, tmp_path: Path) -> None:
    videos = json.loads((corpus / "msrvtt" / "MSRVTT_data.json").read_text())["videos"]
    rows = [{"video_id": v["video_id"], "window": None, "caption": "a man"} for v in videos if v["split"] == "test"]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    argv = _caption_eval(corpus, tmp_path / "p.jsonl", tmp_path / "d")
    for _ in range(2):  # the second run replaces the first one's record
        done = run_cli(argv, tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads((tmp_path / "d" / "metrics.json").read_text())["task"] == "msrvtt-caption"


# ---- 2. one writer per output folder --------------------------------------------------------------------------------

HOLDER = """
import sys, time
from decembert_cli.io import folder_lock
with folder_lock(sys.argv[1], sys.argv[2]):
    print("held", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def held(tmp_path: Path):  # noqa: ANN201 - a factory
    """Hold the lock of a folder from another process for the test's duration."""
    holders: list[subprocess.Popen[str]] = []

    def hold(folder: Path, part: str = "") -> int:
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(folder), part], stdout=subprocess.PIPE, text=True, cwd=tmp_path
        )
        holders.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        return proc.pid

    yield hold
    for proc in holders:
        proc.kill()
        proc.wait()


LOCKED: list[tuple[str, Callable[[Path, Path, Path], tuple[list[str], Path, str]]]] = [
    ("pretrain", lambda w, c, r: (_pretrain(c, w / "run"), w / "run", "")),
    ("pretrain-resume", lambda w, c, r: (_pretrain(c, w / "run", "--resume"), w / "run", "")),
    ("finetune", lambda w, c, r: (_finetune(c, w / "run"), w / "run", "")),
    (
        "extract-features",
        lambda w, c, r: (
            ["extract-features", str(w / "none.txt"), "--out", str(w / "f"), "--random-init"],
            w / "f",
            "",
        ),
    ),
    (
        "extract-features-same-shard",
        lambda w, c, r: (
            ["extract-features", str(w / "none.txt"), "--out", str(w / "f"), "--random-init", "--shard", "1/2"],
            w / "f",
            "shard-0001-of-0002",
        ),
    ),
    (
        "dense-caption",
        lambda w, c, r: (
            ["dense-caption", str(w / "dc.json"), "--backend", "import", "--out", str(w / "dc")],
            w / "dc",
            "",
        ),
    ),
]


@pytest.mark.parametrize("make", [c[1] for c in LOCKED], ids=[c[0] for c in LOCKED])
def test_a_second_writer_is_refused_naming_the_holder(
    corpus: Path, run: Path, tmp_path: Path, held: Callable[..., int], make: Callable[..., tuple[list[str], Path, str]]
) -> None:
    (tmp_path / "none.txt").write_text("")
    (tmp_path / "dc.json").write_text('{"results": []}')
    argv, folder, part = make(tmp_path, corpus, run)
    if "--resume" in argv:  # a run to resume, copied from the finished one
        (folder / "checkpoints").mkdir(parents=True)
        for name in ("config.yaml", "metrics.jsonl"):
            (folder / name).write_bytes((run / name).read_bytes())
        for file in (run / "checkpoints").iterdir():
            (folder / "checkpoints" / file.name).write_bytes(file.read_bytes())
    pid = held(folder, part)
    before = tree(tmp_path)
    done = run_cli(argv, tmp_path)
    line = assert_one_error(done, "is in use by another decembert process")
    assert f"pid {pid}" in line
    assert tree(tmp_path) == before


def test_shards_of_one_store_have_their_own_locks(tmp_path: Path, held: Callable[..., int]) -> None:
    (tmp_path / "none.txt").write_text("")
    held(tmp_path / "f", "shard-0000-of-0002")
    argv = ["extract-features", str(tmp_path / "none.txt"), "--out", str(tmp_path / "f"), "--random-init"]
    done = run_cli([*argv, "--shard", "1/2"], tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_dead_holders_lock_is_taken_over_with_a_note(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    stale = {"pid": 999999, "host": "elsewhere", "started": time.time() - 3600, "command": "decembert pretrain"}
    (out / ".decembert.lock").write_text(json.dumps(stale))  # its holder died: nobody holds the flock
    done = run_cli(_pretrain(corpus, out), tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "took over the lock of pid 999999 on elsewhere" in done.stderr
    assert (out / ".decembert.lock").read_text() == ""  # released on purpose at the end


def test_folder_lock_in_one_process() -> None:
    """The rule itself: a second holder fails at once and names the first; a released lock is free again; a
    folder the lock made is removed if nothing was written into it."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "made"
        with folder_lock(folder), pytest.raises(DecembertError, match=f"pid {os.getpid()}"), folder_lock(folder):
            pass
        assert not folder.exists()
        with folder_lock(folder):
            (folder / "kept").write_text("x")
        with folder_lock(folder):
            pass
        assert (folder / "kept").exists()


# ---- 3. ids are names, never paths ----------------------------------------------------------------------------------

UNSAFE_IDS = ["../../x", "a/b", ".hidden", "x" * 300, "tab\there", "", "a\\b"]


@pytest.mark.parametrize(
    "bad", UNSAFE_IDS, ids=["dotdot", "slash", "hidden", "300-chars", "control", "empty", "bslash"]
)
def test_youcook2_ids_that_are_not_names_are_left_out(tmp_path: Path, bad: str, capsys: pytest.CaptureFixture) -> None:
    from decembert_cli.data.annotations.youcook2 import read_clip_list, read_youcook2

    annotation = {"duration": 10.0, "subset": "validation", "annotations": [{"segment": [0, 5], "sentence": "cut"}]}
    path = tmp_path / "yc.json"
    path.write_text(json.dumps({"database": {"goodid": annotation, bad: annotation}}))
    assert list(read_youcook2(path)) == ["goodid"]
    assert "1 video id(s) left out" in capsys.readouterr().err
    if not bad:
        return  # a clip list row without an id is an error of its own (tested with the task readers)
    clips = tmp_path / "validation_youcook.csv"
    clips.write_text(f"end,start,task,text,video_id\n5,0,t,cut,goodid\n5,0,t,cut,{json.dumps(bad)}\n")
    assert [c[0] for c in read_clip_list(clips)] == ["goodid"]


@pytest.mark.parametrize("value", ["video" + "1" * 400, "1" * 400, 10**30, "video١", "../video1"])
def test_msrvtt_ids_are_only_video_numbers(value: object) -> None:
    from decembert_cli.data.annotations.msrvtt import video_key

    assert video_key(value) is None


# ---- 4. storage errors: one line naming the path --------------------------------------------------------------------

LONG = "n" * 300  # one name over the file system's 255 bytes

TOO_LONG: list[tuple[str, Callable[[Path, Path, Path], list[str]]]] = [
    ("pretrain", lambda w, c, r: _pretrain(c, w / LONG / "run")),
    ("finetune", lambda w, c, r: _finetune(c, w / LONG)),
    ("export", lambda w, c, r: ["export", str(r), "--out", str(w / LONG)]),
    ("visualize-run", lambda w, c, r: ["visualize", "run", str(r), "--out", str(w / f"{LONG}.png")]),
    (
        "extract-features",
        lambda w, c, r: ["extract-features", str(w / "none.txt"), "--out", str(w / LONG), "--random-init"],
    ),
    (
        "dense-caption",
        lambda w, c, r: ["dense-caption", str(w / "dc.json"), "--backend", "import", "--out", str(w / LONG)],
    ),
    ("evaluate", lambda w, c, r: _caption_eval(c, w / "p.jsonl", w / LONG)),
]


@pytest.mark.parametrize("make", [c[1] for c in TOO_LONG], ids=[c[0] for c in TOO_LONG])
def test_a_name_too_long_is_one_error(
    corpus: Path, run: Path, tmp_path: Path, make: Callable[[Path, Path, Path], list[str]]
) -> None:
    (tmp_path / "none.txt").write_text("")
    (tmp_path / "dc.json").write_text('{"results": []}')
    (tmp_path / "p.jsonl").write_text('{"video_id": "video0", "window": null, "caption": "a"}\n')
    before = tree(tmp_path)
    done = run_cli(make(tmp_path, corpus, run), tmp_path)
    assert_one_error(done, "nnnn")
    assert tree(tmp_path) == before


@pytest.mark.parametrize(
    ("code", "advice"),
    [
        (errno.ENOSPC, "free some space"),
        (errno.EROFS, "read-only"),
        (errno.EACCES, "permissions"),
        (errno.ENAMETOOLONG, "shorter path"),
        (errno.EDQUOT, "quota"),
    ],
)
def test_storage_errors_of_any_command_are_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, code: int, advice: str
) -> None:
    from typer.testing import CliRunner

    from decembert_cli.app import app
    from decembert_cli.viz import report

    def refuse(runs: list[Path], out: Path) -> Path:
        raise OSError(code, os.strerror(code), str(out))

    monkeypatch.setattr(report, "run_curves", refuse)
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    result = CliRunner().invoke(app, ["visualize", "run", str(tmp_path), "--out", str(tmp_path / "c.png")])
    assert result.exit_code == 2
    assert f"{tmp_path / 'c.png'}: {os.strerror(code)}; " in result.output and advice in result.output
    assert "Traceback" not in result.output


class _Refusing:
    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int) -> int:
        raise DecembertError("every video of this split is bad (the last: v1: damaged)")


def test_an_error_in_a_data_loader_worker_is_its_own_one_line() -> None:
    """torch raises a worker's exception again with the worker's traceback inside its message."""
    import torch

    from decembert_cli.app import _own_message

    loader = torch.utils.data.DataLoader(_Refusing(), num_workers=1)
    with pytest.raises(DecembertError) as caught:
        next(iter(loader))
    assert "Original Traceback" in str(caught.value)
    assert _own_message(caught.value) == "every video of this split is bad (the last: v1: damaged)"
