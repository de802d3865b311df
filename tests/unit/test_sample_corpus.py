"""The synthetic `sample` corpus: HowTo100M layouts our readers accept, determinism, and the planted signal."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from decembert_cli.data.densecap import normalise_frames, read_paper_npy
from decembert_cli.data.howto100m import clean_captions, load_features, open_captions
from decembert_cli.data.sample.corpus import (
    ACTIONS,
    ADJECTIVES,
    BACKGROUND,
    CAPTIONER_OBJECTS,
    DENSE_OBJECT,
    DOMAINS,
    GENERIC_NOUNS,
    IRRELEVANT,
    OBJECTS,
    SAMPLE_FORMAT,
    TASKS,
    TEMPLATES,
    UNKNOWN,
    generate,
    is_sample_corpus,
    load_alignment,
    prototypes,
)
from decembert_cli.errors import DecembertError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

DIM = 32


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("sample") / "corpus", videos=6, feature_dim_2d=DIM, feature_dim_3d=DIM)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _truth(root: Path) -> dict:
    return json.loads((root / "alignment.json").read_text())["videos"]


def test_vocabulary_is_single_wordpiece_tokens(tokenizer: PreTrainedTokenizerBase) -> None:
    for word in OBJECTS + ACTIONS:
        assert tokenizer.tokenize(word) == [word]
    assert 20 <= len(set(OBJECTS)) == len(OBJECTS) <= 40 and 12 <= len(set(ACTIONS)) == len(ACTIONS) <= 30
    assert {o for _id, _name, domain in TASKS for o in domain.objects} == set(OBJECTS)
    assert {a for _id, _name, domain in TASKS for a in domain.actions} == set(ACTIONS)
    assert len({tid for tid, _name, _domain in TASKS}) == len(TASKS) >= 2 * len(DOMAINS)
    assert not set(OBJECTS) & set(ACTIONS)
    vocabulary = set(OBJECTS + ACTIONS)  # fixed texts name no object or action
    for text in TEMPLATES + DENSE_OBJECT + IRRELEVANT + BACKGROUND + UNKNOWN + ADJECTIVES:
        assert not set(text.format(action="", obj="", adj="").split()) & vocabulary, text


def test_domains_have_disjoint_objects_and_videos_stay_in_their_domain(tmp_path: Path) -> None:
    assert len(DOMAINS) >= 4 and len({(d.category_1, d.category_2) for d in DOMAINS}) == len(DOMAINS)
    for i, a in enumerate(DOMAINS):
        assert 8 <= len(a.objects) and 6 <= len(a.actions)
        for b in DOMAINS[i + 1 :]:
            assert not set(a.objects) & set(b.objects)
            assert len(set(a.actions) & set(b.actions)) <= 1
    assert all(sum(a in d.actions for d in DOMAINS) <= 2 for a in ACTIONS)  # an action in two domains at most
    root = generate(tmp_path / "c", videos=40, feature_dim_2d=8, feature_dim_3d=8)
    domain_of = {tid: d for tid, _name, d in TASKS}
    with open(root / "HowTo100M_v1.csv", newline="") as handle:
        rows = {r["video_id"]: r for r in csv.DictReader(handle)}
    captions = json.loads((root / "caption.json").read_text())
    seen = set()
    for vid, entry in _truth(root).items():
        domain = domain_of[int(rows[vid]["task_id"])]
        seen.add(domain)
        assert (rows[vid]["category_1"], rows[vid]["category_2"]) == (domain.category_1, domain.category_2)
        assert {o for _s, _e, o, _a in entry["segments"]} <= set(domain.objects)
        assert {a for _s, _e, _o, a in entry["segments"]} <= set(domain.actions)
        dense = [c for frame in read_paper_npy(root / "dense_captions" / f"{vid}.npy") for c in frame]
        for text in captions[vid]["text"] + dense:  # ASR and dense captions name only this domain's words
            words = set(text.split())
            assert words & set(OBJECTS) <= set(domain.objects) and words & set(ACTIONS) <= set(domain.actions)
    assert len(seen) == len(DOMAINS)  # 40 videos draw from every domain


def test_the_captioner_names_only_its_own_objects(tmp_path: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    assert all(len(tokenizer.tokenize(w)) == 1 for w in GENERIC_NOUNS) and not set(GENERIC_NOUNS) & set(OBJECTS)
    for d in DOMAINS:  # half of every domain's objects
        assert abs(2 * sum(o in CAPTIONER_OBJECTS for o in d.objects) - len(d.objects)) <= 1
    root = generate(tmp_path / "c", videos=12, feature_dim_2d=8, feature_dim_3d=8)
    truth = _truth(root)
    seen = {"known": 0, "unknown": 0}
    for vid, entry in truth.items():
        frames = read_paper_npy(root / "dense_captions" / f"{vid}.npy")
        for k, frame in enumerate(frames):
            named = {w for c in frame for w in c.split()} & set(OBJECTS)
            assert named <= CAPTIONER_OBJECTS
            shown = [o for s, e, o, _a in entry["segments"] if s <= 2 * k < e]
            if shown and shown[0] in CAPTIONER_OBJECTS:
                assert shown[0] in named
                seen["known"] += 1
            elif shown:
                assert any(w in c.split() for c in frame for w in GENERIC_NOUNS)
                seen["unknown"] += 1
    assert min(seen.values()) > 20


def test_howto100m_layouts(corpus: Path) -> None:
    ids = [f"sample_{i:04d}" for i in range(6)]
    with open(corpus / "HowTo100M_v1.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["video_id", "category_1", "category_2", "rank", "task_id"]
    assert [r["video_id"] for r in rows] == ids
    tasks = dict(line.split("\t") for line in (corpus / "task_ids.csv").read_text().splitlines())
    assert {r["task_id"] for r in rows} <= set(tasks) and {"make a tomato salad", "change the oil"} <= set(
        tasks.values()
    )
    assert len(tasks) == len(TASKS)
    categories = {(d.category_1, d.category_2) for d in DOMAINS}
    assert all((r["category_1"], r["category_2"]) in categories for r in rows)
    for sub in ("features/2d", "features/3d", "dense_captions"):
        assert sorted(p.stem for p in (corpus / sub).glob("*.npy")) == ids
    assert not list(corpus.rglob("*.tmp"))
    assert is_sample_corpus(corpus)
    meta = json.loads((corpus / "meta.json").read_text())
    assert meta["format"] == SAMPLE_FORMAT and meta["arguments"]["videos"] == 6
    assert meta["counts"]["captions"] == sum(len(v) for v in load_alignment(corpus).values())


def test_segments(corpus: Path) -> None:
    for entry in _truth(corpus).values():
        segments = entry["segments"]
        assert 10 <= len(segments) <= 16 and 0 <= segments[0][0] <= 1.5
        assert all(3 <= e - s <= 6 for s, e, _o, _a in segments)
        assert all(a[1] == b[0] and a[2] != b[2] for a, b in zip(segments, segments[1:]))  # contiguous, object changes
        assert 4 <= len({o for _s, _e, o, _a in segments}) <= 6


def test_captions_read_with_the_howto100m_reader(corpus: Path) -> None:
    source = open_captions(corpus / "caption.json")
    alignment = load_alignment(corpus)
    truth = _truth(corpus)
    assert source.ids() == sorted(alignment)
    for vid in source.ids():
        raw = source.get(vid)
        cleaned = clean_captions(raw, trim_rolling=False)
        assert cleaned.text == raw.text and cleaned.start == raw.start  # already clean and sorted
        assert len(cleaned) == len(alignment[vid]) == len(truth[vid]["segments"])
        for i, (start, end, text) in enumerate(zip(cleaned.start, cleaned.end, cleaned.text)):
            seg = truth[vid]["segments"][i]
            assert seg[0] <= start < end <= seg[1]  # timed inside its own segment
            assert 1 <= len(text.split()) <= 12 and text == text.lower() and text.isascii()
            described = alignment[vid][i]
            words = set(text.split())
            if described < 0:
                assert text in IRRELEVANT and not words & set(OBJECTS + ACTIONS)
            else:
                _s, _e, obj, action = truth[vid]["segments"][described]
                assert words & set(OBJECTS) == {obj} and words & set(ACTIONS) == {action}
                assert abs(described - i) <= 1


def test_features_cover_every_second_unit_norm(corpus: Path) -> None:
    for vid, entry in _truth(corpus).items():
        seconds = math.ceil(entry["segments"][-1][1])
        raw_2d = np.load(corpus / "features" / "2d" / f"{vid}.npy")
        assert raw_2d.dtype == np.float16 and raw_2d.shape == (seconds, DIM)
        f2, f3 = load_features(
            corpus / "features" / "2d" / f"{vid}.npy", corpus / "features" / "3d" / f"{vid}.npy", dim_2d=DIM, dim_3d=DIM
        )
        for f in (f2, f3):
            assert f.dtype == np.float32 and f.shape == (seconds, DIM)
            np.testing.assert_allclose(np.linalg.norm(f, axis=1), 1.0, atol=5e-3)


def test_dense_captions_in_the_papers_layout(corpus: Path) -> None:
    for vid, entry in _truth(corpus).items():
        frames = read_paper_npy(corpus / "dense_captions" / f"{vid}.npy")  # the pickle-refusing reader
        assert len(frames) == math.ceil(math.ceil(entry["segments"][-1][1]) / 2)
        assert 3 <= sum(map(len, frames)) / len(frames) <= 5
        kept = normalise_frames(frames)
        assert sum(map(len, kept)) < sum(map(len, frames))  # background repeated on contiguous frames
        assert any("<unk>" in c for f in frames for c in f)
        for k, frame in enumerate(frames):
            objects = [o for s0, s1, o, _a in entry["segments"] if s0 <= 2 * k < s1]
            if objects and objects[0] in CAPTIONER_OBJECTS:  # the object of the segment at the frame's time is named
                assert any(objects[0] in c for c in frame)


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    args = {"videos": 3, "feature_dim_2d": 16, "feature_dim_3d": 8}
    a = _files(generate(tmp_path / "a", seed=3, **args))
    b = _files(generate(tmp_path / "b", seed=3, **args))
    c = _files(generate(tmp_path / "c", seed=4, **args))
    assert a == b
    assert a.keys() == c.keys()
    same_for_any_seed = ("task_ids.csv", "msrvtt/MSRVTT_train.9k.csv")  # fixed names and the list of clip ids
    assert all(a[name] != c[name] for name in a if name not in same_for_any_seed and "meta" not in name)


def test_misaligned_and_irrelevant_fractions(tmp_path: Path) -> None:
    for misaligned, irrelevant in ((0.5, 0.1), (0.2, 0.3), (0.0, 0.0)):
        root = generate(
            tmp_path / f"{misaligned}-{irrelevant}",
            videos=40,
            feature_dim_2d=8,
            feature_dim_3d=8,
            misaligned=misaligned,
            irrelevant=irrelevant,
        )
        kinds = [k for v in _truth(root).values() for k in v["caption_kind"]]
        assert abs(kinds.count("shifted") / len(kinds) - misaligned) < 0.08
        assert abs(kinds.count("irrelevant") / len(kinds) - irrelevant) < 0.08
        for entry in _truth(root).values():  # each segment is described at most once
            described = [s for s in entry["caption_segment"] if s >= 0]
            assert len(described) == len(set(described))
            for i, (s, kind) in enumerate(zip(entry["caption_segment"], entry["caption_kind"])):
                assert (kind == "aligned") == (s == i) and (kind == "irrelevant") == (s == -1)


@pytest.mark.parametrize("dim", [DIM, 2048])
def test_nearest_prototype_recovers_segment_object_and_action(tmp_path: Path, dim: int) -> None:
    root = generate(tmp_path / "c", videos=6 if dim == DIM else 2, feature_dim_2d=dim, feature_dim_3d=dim)
    objects, actions = prototypes(0, dim, dim)
    hits_2d = hits_3d = total = 0
    for vid, entry in _truth(root).items():
        f2, f3 = load_features(
            root / "features" / "2d" / f"{vid}.npy", root / "features" / "3d" / f"{vid}.npy", dim_2d=dim, dim_3d=dim
        )
        for start, end, obj, action in entry["segments"]:
            inside = [t for t in range(len(f2)) if start <= t + 0.5 < end]
            hits_2d += OBJECTS[int(np.argmax(objects @ f2[inside].mean(0)))] == obj
            hits_3d += ACTIONS[int(np.argmax(actions @ f3[inside].mean(0)))] == action
            total += 1
    assert hits_2d / total > 0.9 and hits_3d / total > 0.9


def test_noise_controls_the_signal(tmp_path: Path) -> None:
    objects, _ = prototypes(0, DIM, DIM)
    cosines = []
    for noise in (0.0, 2.0):
        root = generate(tmp_path / str(noise), videos=2, feature_dim_2d=DIM, feature_dim_3d=DIM, noise=noise)
        entry = _truth(root)["sample_0000"]
        f2 = np.load(root / "features" / "2d" / "sample_0000.npy").astype(np.float32)
        start, end, obj, _action = entry["segments"][1]
        t = math.ceil(start)
        cosines.append(float(f2[t] @ objects[OBJECTS.index(obj)]))
    assert cosines[0] > 0.9 > cosines[1]


def test_refuses_a_foreign_directory(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(DecembertError, match=str(tmp_path)):
        generate(tmp_path, videos=2, feature_dim_2d=8, feature_dim_3d=8)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"] and (tmp_path / "keep.txt").read_text() == "mine"


def test_an_older_format_corpus_is_another_corpus(tmp_path: Path) -> None:
    root = tmp_path / "old"
    root.mkdir()
    meta = {"format": "decembert.sample/1", "arguments": {"videos": 2}}
    (root / "meta.json").write_text(json.dumps(meta))
    assert not is_sample_corpus(root)
    with pytest.raises(DecembertError, match="older format .*choose another directory or delete"):
        generate(root, videos=2, feature_dim_2d=8, feature_dim_3d=8)
    assert [p.name for p in root.iterdir()] == ["meta.json"]


def test_rerun_is_a_noop_and_other_arguments_are_refused(tmp_path: Path) -> None:
    root = generate(tmp_path / "c", videos=2, feature_dim_2d=8, feature_dim_3d=8)
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    assert generate(root, videos=2, feature_dim_2d=8, feature_dim_3d=8) == root
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before
    with pytest.raises(DecembertError, match="choose another directory"):
        generate(root, videos=3, feature_dim_2d=8, feature_dim_3d=8)


def test_an_interrupted_run_is_regenerated(tmp_path: Path) -> None:
    args = {"videos": 2, "feature_dim_2d": 8, "feature_dim_3d": 8}
    expected = _files(generate(tmp_path / "ref", **args))
    root = generate(tmp_path / "c", videos=3, feature_dim_2d=8, feature_dim_3d=8)
    (root / "meta.json").unlink()  # as if killed before the end
    (root / "features" / "2d" / ".sample_0000.npy.abc123.tmp").write_bytes(b"half")
    (root / "caption.json").write_text("{")
    assert not is_sample_corpus(root)
    generate(root, **args)
    assert _files(root) == expected  # stale video 2 and the temp file are gone


def test_bad_arguments_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(DecembertError, match="sum"):
        generate(tmp_path / "x", misaligned=0.8, irrelevant=0.3)
    assert not (tmp_path / "x").exists()
    with pytest.raises(DecembertError, match="alignment"):
        load_alignment(tmp_path)


def test_sample_data_command(tmp_path: Path) -> None:
    import typer
    from typer.testing import CliRunner

    from decembert_cli.commands.sample_data import sample_data

    app = typer.Typer()
    app.command()(sample_data)
    result = CliRunner().invoke(app, [str(tmp_path / "c"), "--videos", "3", "--feature-dim", "8", "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert "3 videos" in result.output and "captions" in result.output
    meta = json.loads((tmp_path / "c" / "meta.json").read_text())
    assert meta["arguments"]["seed"] == 1 and meta["arguments"]["feature_dim_3d"] == 8
    assert np.load(tmp_path / "c" / "features" / "3d" / "sample_0000.npy").shape[1] == 8


def test_rendered_videos_last_as_long_as_the_plan_and_show_its_objects(tmp_path: Path) -> None:
    import cv2

    from decembert_cli.data.sample import video as sample_video
    from decembert_cli.data.sample.corpus import OBJECTS, _plan_video

    root = generate(tmp_path / "c", videos=2, render=True, features="none")
    assert not (root / "features").exists()
    meta = json.loads((root / "meta.json").read_text())
    assert meta["videos"]["fps"] == 24 and meta["arguments"]["render"] is True
    plan = _plan_video(0, 0, 0.5, 0.1)
    capture = cv2.VideoCapture(str(root / "videos" / "sample_0000.mp4"))
    assert capture.get(cv2.CAP_PROP_FRAME_COUNT) == plan["seconds"] * 24
    assert (capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (160, 120)
    start, end, obj, _action = plan["segments"][0]
    capture.set(cv2.CAP_PROP_POS_FRAMES, int((start + end) / 200 * 24))  # mid-segment
    ok, frame = capture.read()
    capture.release()
    assert ok
    _shape, colour = sample_video.object_look(OBJECTS.index(obj))
    near = np.abs(frame.astype(int) - np.array(colour)).max(axis=2) < 40  # the object's colour is on screen
    assert near.sum() > 200
    again = generate(tmp_path / "d", videos=2, render=True, features="none")
    assert (again / "videos" / "sample_0001.mp4").read_bytes() == (root / "videos" / "sample_0001.mp4").read_bytes()
    with pytest.raises(DecembertError, match="needs its videos"):
        generate(tmp_path / "e", videos=2, render=False, features="none")


def test_every_object_and_action_looks_different() -> None:
    from decembert_cli.data.sample import video as sample_video
    from decembert_cli.data.sample.corpus import ACTIONS, OBJECTS

    looks = [sample_video.object_look(i) for i in range(len(OBJECTS))]
    assert len(set(looks)) == len(OBJECTS)
    motions = [sample_video.action_motion(i)[:2] for i in range(len(ACTIONS))]
    assert len(set(motions)) == len(ACTIONS)
