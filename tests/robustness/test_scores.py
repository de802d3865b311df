"""No silent wrong scores: `decembert evaluate TASK --predictions FILE` scores each prediction against its own
references, or stops with one error.

A line break or control character inside a caption scores as a space (pycocoevalcap's tokenizer reads one
caption per line, so a stray line break used to shift every later caption onto the wrong video); duplicate,
missing, mistyped and unsafe prediction ids are one `error:` line naming the file and the line or the ids
(missing ones are allowed with --allow-partial: they score as empty captions and metrics.json says how many
were predicted). One subprocess per case, as a user runs it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from decembert_cli.data.sample.corpus import generate
from decembert_tasks.captioning import MSRVTTCaption, MSRVTTCaptionConfig, YouCook2Caption, YouCook2CaptionConfig

from .cli import assert_one_error, run_cli

pytestmark = pytest.mark.skipif(shutil.which("java") is None, reason="caption metrics need Java (.ci/run installs it)")
DIM = 16


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("scores") / "sample", videos=12, feature_dim_2d=DIM, feature_dim_3d=DIM)


@pytest.fixture(scope="module")
def rows(corpus: Path) -> list[dict[str, Any]]:
    """One imperfect caption per msrvtt-caption test video (48 of them): one of its references, cut short."""
    data = MSRVTTCaption(MSRVTTCaptionConfig(root=str(corpus / "msrvtt"))).read("test")
    return [
        {"video_id": c.video_id, "window": None, "caption": " ".join(refs[i % len(refs)].split()[:4])}
        for i, (c, refs) in enumerate(zip(data.clips, data.captions))
    ]


def _score(corpus: Path, work: Path, rows: list[Any], *extra: str, task: str = "msrvtt-caption") -> Any:
    work.mkdir(parents=True, exist_ok=True)
    path = work / "p.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    root = corpus / "msrvtt" if task == "msrvtt-caption" else corpus
    sets = [f"task.root={root}", "task.meteor=false"]
    if task == "youcook2-caption":
        sets.append("task.annotations=youcook2/youcookii_annotations_trainval.json")
    argv = ["evaluate", task, "--predictions", str(path), *[a for s in sets for a in ("--set", s)]]
    return run_cli([*argv, "--out", str(work / "out"), *extra], work)


def _metrics(work: Path) -> dict[str, Any]:
    return json.loads((work / "out" / "metrics.json").read_text())


@pytest.fixture(scope="module")
def clean(corpus: Path, rows: list[dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("clean")
    done = _score(corpus, work, rows)
    assert done.returncode == 0, done.stdout + done.stderr
    return _metrics(work)


@pytest.mark.parametrize("char", ["\r", "\u2028"], ids=["CR", "LINE-SEPARATOR"])
def test_a_line_break_in_a_prediction_scores_as_a_space(
    corpus: Path, rows: list[dict[str, Any]], clean: dict[str, Any], tmp_path: Path, char: str
) -> None:
    dirty = [dict(r) for r in rows]
    dirty[0]["caption"] = dirty[0]["caption"].replace(" ", char, 1)  # the first video: every later one would shift
    done = _score(corpus, tmp_path, dirty)
    assert done.returncode == 0, done.stdout + done.stderr
    scored = _metrics(tmp_path)
    assert clean["metrics"]["BLEU@1"] > 20  # a shift onto the wrong videos scores far lower
    assert scored["metrics"] == pytest.approx(clean["metrics"], rel=1e-9)


def test_a_clip_predicted_twice_is_one_error_naming_it_and_its_lines(
    corpus: Path, rows: list[dict[str, Any]], tmp_path: Path
) -> None:
    twice = [*rows, {**rows[3], "caption": "another caption"}]
    line = assert_one_error(_score(corpus, tmp_path, twice), "predicted more than once")
    assert f"{rows[3]['video_id']} (lines 4, {len(rows) + 1})" in line and "p.jsonl" in line
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_missing_predictions_are_one_error_naming_them(
    corpus: Path, rows: list[dict[str, Any]], tmp_path: Path
) -> None:
    line = assert_one_error(_score(corpus, tmp_path, rows[:-2]), f"no prediction for 2 of {len(rows)}")
    assert rows[-2]["video_id"] in line and rows[-1]["video_id"] in line and "--allow-partial" in line


def test_allow_partial_scores_the_missing_as_empty_and_says_how_many_were_predicted(
    corpus: Path, rows: list[dict[str, Any]], clean: dict[str, Any], tmp_path: Path
) -> None:
    done = _score(corpus, tmp_path, rows[:-2], "--allow-partial")
    assert done.returncode == 0, done.stdout + done.stderr
    scored = _metrics(tmp_path)
    assert scored["protocol"]["predicted"] == len(rows) - 2 and scored["protocol"]["items"] == len(rows)
    assert scored["metrics"]["CIDEr-D"] < clean["metrics"]["CIDEr-D"]


@pytest.mark.parametrize("video_id", [["video194"], 194, None, True], ids=["list", "number", "null", "bool"])
def test_a_prediction_id_that_is_not_a_string_is_one_error_naming_the_line(
    corpus: Path, rows: list[dict[str, Any]], tmp_path: Path, video_id: Any
) -> None:
    bad = [dict(r) for r in rows]
    bad[2]["video_id"] = video_id
    assert_one_error(_score(corpus, tmp_path, bad), 'p.jsonl, line 3: "video_id" must be a string')


@pytest.mark.parametrize("video_id", ["../video194", "video194/x", ".video194"], ids=["dotdot", "slash", "hidden"])
def test_an_unsafe_prediction_id_is_one_error_naming_the_line(
    corpus: Path, rows: list[dict[str, Any]], tmp_path: Path, video_id: str
) -> None:
    bad = [dict(r) for r in rows]
    bad[2]["video_id"] = video_id
    line = assert_one_error(_score(corpus, tmp_path, bad), 'p.jsonl, line 3: "video_id"')
    assert "not a safe id" in line and json.dumps(video_id) in line


def test_a_segment_id_that_is_not_an_integer_is_one_error_naming_the_line(corpus: Path, tmp_path: Path) -> None:
    task = YouCook2Caption(YouCook2CaptionConfig(**YouCook2Caption.sample_settings(corpus)))
    clips = task.read("val").clips
    bad: list[Any] = [{"video_id": c.video_id, "segment": c.segment, "caption": "stir"} for c in clips]
    bad[1]["segment"] = [bad[1]["segment"]]
    assert_one_error(
        _score(corpus, tmp_path, bad, task="youcook2-caption"), 'p.jsonl, line 2: "segment" must be an integer'
    )
