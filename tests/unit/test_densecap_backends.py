"""Florence-2 dense region captions: our parser against transformers' own, and a tiny model end to end."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from decembert_cli.densecap.backends import Frame
from decembert_cli.densecap.regions import Region, dequantise, parse_florence2
from tests.florence_tiny import save_tiny_florence2

TASK = "<DENSE_REGION_CAPTION>"


def test_parser_on_hand_written_generations():
    text = (
        "</s><s>a red car<loc_54><loc_375><loc_906><loc_707>door<loc_710><loc_276><loc_908><loc_537>"
        "wheel<loc_708><loc_531><loc_906><loc_704><loc_0><loc_0><loc_999><loc_999><loc_5><pad></s>"
    )
    regions = parse_florence2(text, (1000, 500))
    assert [r.caption for r in regions] == ["a red car", "door", "wheel", "wheel"]  # a caption with two boxes
    assert regions[0].box == (54.5, 187.75, 906.5, 353.75)  # bin centres: (b + 0.5) / 1000 * size
    assert regions[3].box == (0.5, 0.25, 999.5, 499.75)  # the trailing lone <loc_5> is dropped
    # no caption / no box
    assert parse_florence2("</s><s><loc_1><loc_2><loc_3><loc_4>  a  cup <loc_1></s>", (100, 100)) == []
    assert parse_florence2("</s><s>A green car parked in front of a building.</s>", (100, 100)) == []
    assert dequantise(1500, 10) == pytest.approx(9.995)  # out-of-range bins are clamped


@pytest.fixture(scope="module")
def tiny_florence(tmp_path_factory):
    return save_tiny_florence2(tmp_path_factory.mktemp("florence2"))


def test_tiny_florence2_runs_through_from_pretrained_and_parses_like_transformers(tiny_florence):
    from decembert_cli.densecap.backends import captioners

    factory = captioners.load("florence2")
    captioner = factory(str(tiny_florence), torch.device("cpu"), None, {"num_beams": "1", "max_new_tokens": 60})
    assert captioner.generate["num_beams"] == 1  # --option values arrive as text
    captioner.generate.update(min_new_tokens=60, do_sample=True)
    vocab = captioner.processor.tokenizer.get_vocab()
    letters = [vocab[c] for c in "abcdefghijklmnopqrstuvwxyz"]
    locs = [vocab[f"<loc_{b}>"] for b in range(1000)]

    def grammar(_batch: int, ids: torch.Tensor) -> list[int]:  # well-formed output: 3 letters, then one box, repeated
        n = len(ids)
        return letters if (n - 1) % 7 < 3 else locs  # ids[0] is the decoder start token

    captioner.generate["prefix_allowed_tokens_fn"] = grammar
    meta = captioner.meta()
    assert meta["backend"] == "florence2" and meta["model"] == str(tiny_florence) and len(meta["model_sha256"]) == 64
    torch.manual_seed(0)
    frames = [np.random.default_rng(i).integers(0, 255, (120, 160, 3), dtype=np.uint8) for i in range(4)]
    raw = captioner.raw(frames)
    total = 0
    for text, frame in zip(raw, frames):
        ours = parse_florence2(text, (frame.shape[1], frame.shape[0]))
        ref = captioner.processor.post_process_generation(text, task=TASK, image_size=(160, 120))[TASK]
        pairs = [(" ".join(label.split()), box) for label, box in zip(ref["labels"], ref["bboxes"]) if label.strip()]
        assert [r.caption for r in ours] == [label for label, _ in pairs]
        assert [[math.floor(v) for v in r.box] for r in ours] == [
            list(map(int, box)) for _, box in pairs
        ]  # theirs: truncated
        total += len(ours)
    assert total > 0, "the sampled output held no region to compare"
    regions = captioner.caption([Frame("v", Path("v.mp4"), 2.0 * i, f) for i, f in enumerate(frames[:2])])
    assert len(regions) == 2 and all(isinstance(r, Region) for frame in regions for r in frame)


def test_dense_caption_command_writes_a_store_the_corpus_reads(tiny_florence, tmp_path):
    import json

    from typer.testing import CliRunner

    from decembert_cli.app import app
    from decembert_cli.data.densecap import read_dense_captions
    from tests.videos import write_video

    (tmp_path / "videos").mkdir()
    write_video(tmp_path / "videos" / "a.avi", 24, 24 * 5)  # 5 s: frames at 0, 2 and 4 s
    (tmp_path / "videos" / "broken.mp4").write_bytes(b"not a video")
    args = [
        "dense-caption",
        str(tmp_path / "videos"),
        "--out",
        str(tmp_path / "dc"),
        "--model",
        str(tiny_florence),
        "--num-beams",
        "1",
        "--max-new-tokens",
        "12",
        "--batch-size",
        "2",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "1 captioned, 0 already done, 1 failed of 2 videos; 3 frames" in result.output
    record = json.loads((tmp_path / "dc" / "a.json").read_text())
    assert record["format"] == "decembert.densecap/1" and record["backend"] == "florence2" and record["interval"] == 2.0
    assert [f["time"] for f in record["frames"]] == [0.0, 2.0, 4.0] and (record["width"], record["height"]) == (96, 64)
    frames, interval = read_dense_captions(tmp_path / "dc" / "a.json", 2.0)
    assert len(frames) == 3 and interval == 2.0
    failures = [json.loads(line) for line in (tmp_path / "dc" / "failures.jsonl").read_text().splitlines()]
    assert [f["video_id"] for f in failures] == ["broken"]
    again = CliRunner().invoke(app, args)
    assert "0 captioned, 1 already done, 1 failed of 2 videos" in again.output
    other = CliRunner().invoke(app, [*args[:-4], "--interval", "1", "--batch-size", "2"])
    assert other.exit_code == 2 and "densecap.json was written with" in other.output


def test_top_k_keeps_the_best_scored_regions_or_the_first_ones():
    from decembert_cli.densecap.pipeline import _keep

    box = (0.0, 0.0, 1.0, 1.0)
    scored = [Region("a", box, 0.2), Region("b", box, 0.9), Region("c", box, 0.5)]
    assert [r.caption for r in _keep(scored, 2)] == ["b", "c"]
    assert _keep(scored, 0) == scored and _keep(scored, 5) == scored
    unscored = [Region("a", box), Region("b", box), Region("c", box)]
    assert [r.caption for r in _keep(unscored, 2)] == ["a", "b"]  # Florence-2 gives no scores: its own order


def test_backends_refuse_options_they_do_not_have(tiny_florence):
    from decembert_cli.densecap.backends import captioners
    from decembert_cli.errors import DecembertError

    with pytest.raises(DecembertError, match="florence2 has no option 'temperature'"):
        captioners.load("florence2")(str(tiny_florence), torch.device("cpu"), None, {"temperature": "0.5"})
    with pytest.raises(DecembertError, match="--num-beams: the oracle backend takes no model and no options"):
        captioners.load("oracle")(None, torch.device("cpu"), None, {"num_beams": 3})
    with pytest.raises(DecembertError, match="'num_beams': the import backend takes only"):
        captioners.load("import")(None, torch.device("cpu"), None, {"num_beams": 3})
