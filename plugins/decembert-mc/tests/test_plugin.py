"""The plugin against decembert's contract, on decembert's sample corpus (no download, CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from decembert_cli.api import DecembertError, check_task, generate_sample_corpus
from decembert_mc import MSRVTTMultipleChoice, questions, read_msrvtt


def test_contract(tmp_path: Path) -> None:
    root = generate_sample_corpus(tmp_path / "corpus", videos=2, clips=60, feature_dim_2d=16, feature_dim_3d=16)
    result = check_task(
        MSRVTTMultipleChoice, MSRVTTMultipleChoice.sample_settings(root), feature_dims=(16, 16), items=5
    )
    assert result.metrics["questions"] == 12  # the 12 test clips, each a question


def test_questions_hold_the_right_caption_once(tmp_path: Path) -> None:
    from decembert_mc import MCConfig

    root = generate_sample_corpus(tmp_path / "corpus", videos=2, clips=60, feature_dim_2d=16, feature_dim_3d=16)
    items = questions(MCConfig(root=str(root / "msrvtt")), "test")
    assert len(items) == 12 and all(len(set(q.candidates)) == 5 and 0 <= q.answer < 5 for q in items)
    assert {q.answer for q in items} != {items[0].answer}  # the right caption is not always in one place


def test_a_malformed_annotation_file_is_one_message_naming_the_record(tmp_path: Path) -> None:
    path = tmp_path / "MSRVTT_data.json"
    path.write_text(
        json.dumps({"videos": [{"video_id": "video0", "split": "train"}, {"video_id": "video1"}], "sentences": []})
    )
    with pytest.raises(DecembertError, match=r"MSRVTT_data.json: videos\[1\] \(video1\) needs a \"split\""):
        read_msrvtt(path)
    path.write_text('{"videos": [\n}')
    with pytest.raises(DecembertError, match=r"not readable JSON .*line 2"):
        read_msrvtt(path)
    path.write_text(json.dumps({"videos": [{"video_id": "video0", "split": "test"}], "sentences": [{"caption": "x"}]}))
    with pytest.raises(DecembertError, match=r"sentences\[0\] needs"):
        read_msrvtt(path)
