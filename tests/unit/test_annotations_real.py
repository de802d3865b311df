"""The official annotation readers on real files (tests/data/real-annotations, copied from ../shared)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from decembert_cli.data.annotations.msrvtt import (
    answer_vocabulary,
    read_1ka,
    read_msrvtt_data,
    read_qa,
    read_video_list,
)
from decembert_cli.data.annotations.youcook2 import read_clip_list, read_youcook2
from decembert_cli.errors import DecembertError

REAL = Path(__file__).resolve().parents[1] / "data" / "real-annotations"


def test_msrvtt_qa_validation_set() -> None:
    qa = read_qa(REAL / "val_qa.json")
    assert len(qa) == 12278 and len({q.video_id for q in qa}) == 497
    assert {q.video_id for q in qa} == {f"video{n}" for n in range(6513, 7010)}  # the validate split's videos
    assert Counter(q.qtype for q in qa) == {"what": 8337, "who": 3439, "how": 344, "when": 106, "where": 52}
    assert all(len(q.answer.split()) == 1 for q in qa)  # every answer is one word
    assert answer_vocabulary(qa, 3) == ["man", "woman", "talk"]  # 1171, 546, 545 questions
    assert len(answer_vocabulary(qa, 10**6)) == 1602


def test_msrvtt_1ka_test_and_train_list() -> None:
    pairs = read_1ka(REAL / "MSRVTT_JSFUSION_test.csv")
    assert len(pairs) == 1000 and len({v for v, _ in pairs}) == 1000
    assert pairs[0] == ("video9770", "a person is connecting something to system")
    train = read_video_list(REAL / "MSRVTT_train.9k.csv")
    assert len(train) == 9000 and not set(train) & {v for v, _ in pairs}


def test_youcook2_trainval() -> None:
    videos = read_youcook2(REAL / "youcookii_annotations_trainval.json")
    by_subset = {s: [v for v in videos.values() if v.subset == s] for s in ("training", "validation")}
    assert len(by_subset["training"]) == 1333 and sum(len(v.segments) for v in by_subset["training"]) == 10337
    assert len(by_subset["validation"]) == 457 and sum(len(v.segments) for v in by_subset["validation"]) == 3492
    for v in videos.values():
        assert [s.start for s in v.segments] == sorted(s.start for s in v.segments)


def test_bad_files_name_the_file_and_the_record_or_line(tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text('[{"question": "what?",\n "answer": }]')
    with pytest.raises(DecembertError, match=r"broken.json, line 2, column 12: not valid JSON"):
        read_qa(tmp_path / "broken.json")
    item = {"answer": "couch", "category_id": 14, "id": 1, "question": "what is it?", "video_id": 6513}
    (tmp_path / "noanswer.json").write_text(json.dumps([item, {**item, "answer": ""}]))
    with pytest.raises(DecembertError, match=r"noanswer.json, record 1: the question has no \"answer\""):
        read_qa(tmp_path / "noanswer.json")
    (tmp_path / "mixed.json").write_text(json.dumps([item, item, {**item, "video_id": "video6513"}]))
    with pytest.raises(
        DecembertError, match=r"mixed.json, record 2: \"video_id\" is a str here but record 0 has a int"
    ):
        read_qa(tmp_path / "mixed.json")
    (tmp_path / "strings.json").write_text(json.dumps([{**item, "video_id": "video6513"}]))
    assert read_qa(tmp_path / "strings.json")[0].video_id == "video6513"  # one form throughout is fine
    (tmp_path / "clips.csv").write_text("end,start,task,text,video_id\n12,3,113,cut the bread,abc\n5,9,113,bad,abc\n")
    with pytest.raises(DecembertError, match=r"clips.csv, line 3: needs a video_id and start <= end"):
        read_clip_list(tmp_path / "clips.csv")
    (tmp_path / "test.csv").write_text("key,vid_key,video_id,sentence\nret0,msr1,clip1,a man\n")
    with pytest.raises(DecembertError, match=r"test.csv, line 2: needs a video_id"):
        read_1ka(tmp_path / "test.csv")
    data = {
        "videos": [{"video_id": "video0", "split": "train"}],
        "sentences": [{"caption": "a man", "video_id": "video0"}, {"caption": "a cat", "video_id": "video7"}],
    }
    (tmp_path / "MSRVTT_data.json").write_text(json.dumps(data))
    with pytest.raises(
        DecembertError, match=r"MSRVTT_data.json, record 1: sentence of video7, which is not among the file's videos"
    ):
        read_msrvtt_data(tmp_path / "MSRVTT_data.json")
    with pytest.raises(DecembertError, match=r"nothere.json not found"):
        read_qa(tmp_path / "nothere.json")
