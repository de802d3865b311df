"""The corpus plugin on decembert's sample corpus, its captions rewritten as JSON Lines (no download, CPU)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from decembert_jsonl_corpus import JsonlCaptions, open_jsonl

from decembert_cli.api import DataConfig, DataReport, DecembertError, generate_sample_corpus

DIM = 16


def as_jsonl(root: Path, out: Path) -> Path:
    """A copy of a sample corpus (HowTo100M's caption.json layout) with its captions as captions.jsonl."""
    shutil.copytree(root, out)
    captions = json.loads((out / "caption.json").read_text())
    lines = [
        json.dumps({"video_id": video, "start": s, "end": e, "text": t})
        for video, c in captions.items()
        for s, e, t in zip(c["start"], c["end"], c["text"])
    ]
    (out / "caption.json").unlink()
    (out / "captions.jsonl").write_text("\n".join(reversed(lines)) + "\n")  # any order
    return out


def test_the_same_videos_and_captions_as_the_caption_json(tmp_path: Path) -> None:
    root = generate_sample_corpus(tmp_path / "corpus", videos=4, clips=0, feature_dim_2d=DIM, feature_dim_3d=DIM)
    flat = as_jsonl(root, tmp_path / "flat")
    config = DataConfig(root=str(flat), use_dense=False)
    records = open_jsonl(config, DataReport(), (DIM, DIM))
    expected = json.loads((root / "caption.json").read_text())
    assert sorted(r.video_id for r in records) == sorted(expected)
    for r in records:
        assert r.captions.text == expected[r.video_id]["text"] and r.seconds > 0


def test_a_malformed_line_is_one_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "captions.jsonl"
    path.write_text('{"video_id": "a", "start": 0, "end": 1, "text": "hi"}\n{"video_id": "a", "start": "x"}\n')
    with pytest.raises(DecembertError, match=r"captions.jsonl, line 2: \"video_id\" and \"text\" must be strings"):
        JsonlCaptions(path)
