"""HowTo100M readers: both caption forms, cleaning, rolling-ASR trimming, features on the 1 s grid."""

from __future__ import annotations

import json
import random
import tracemalloc
import zipfile
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from decembert_cli.data.howto100m import (
    BadVideo,
    JsonCaptions,
    VideoCaptions,
    clean_captions,
    load_features,
    open_captions,
    trim_overlap,
)
from decembert_cli.errors import DecembertError
from decembert_cli.io import scan_json_object

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

CAPTIONS = {
    "vidA": {"start": [1.15, 3.5, 6.0], "end": [3.5, 6.0, 9.2], "text": ["end day", "chop onions", "fry them"]},
    "vidB": {"start": [0.0], "end": [2.0], "text": ["hello"]},
}


def _write_csv_folder(folder: Path, captions: dict[str, dict[str, list[Any]]]) -> None:
    folder.mkdir()
    for vid, c in captions.items():
        rows = ["start,end,text"] + [f"{s},{e},{t}" for s, e, t in zip(c["start"], c["end"], c["text"])]
        (folder / f"{vid}.csv").write_text("\n".join(rows) + "\n")


def test_all_three_caption_forms_read_the_same(tmp_path: Path) -> None:
    (tmp_path / "caption.json").write_text(json.dumps(CAPTIONS))
    _write_csv_folder(tmp_path / "howto100m_captions", CAPTIONS)
    with zipfile.ZipFile(tmp_path / "howto100m_captions.zip", "w") as zf:
        for path in sorted((tmp_path / "howto100m_captions").iterdir()):
            zf.write(path, f"howto100m_captions/{path.name}")
    forms = [
        open_captions(tmp_path / name) for name in ("caption.json", "howto100m_captions", "howto100m_captions.zip")
    ]
    for source in forms:
        assert source.ids() == ["vidA", "vidB"]
        cleaned = clean_captions(source.get("vidA"), trim_rolling=False)
        assert cleaned.start == [1.15, 3.5, 6.0] and cleaned.end == [3.5, 6.0, 9.2]
        assert cleaned.text == ["end day", "chop onions", "fry them"]


def test_messy_captions_are_normalised() -> None:
    raw = VideoCaptions(
        "v",
        [5.0, 1.0, 3.0, 7.0, 9.0, 11.0],
        [6.0, 2.0, 4.0, 8.0, 8.5, 12.0],
        ["  later  ", 42, "", "café crème", "♪ ♪", "..."],
    )
    counts: Counter[str] = Counter()
    cleaned = clean_captions(raw, trim_rolling=False, counts=counts)
    assert cleaned.text == [
        "42",
        "later",
        "café crème",
    ]  # sorted by start, number as text; empty and word-less lines dropped
    assert cleaned.start == [1.0, 5.0, 7.0]
    assert counts == {
        "videos with unsorted caption starts (sorted)": 1,
        "empty caption lines (dropped)": 1,
        "caption lines without a letter or digit (dropped)": 2,
    }


def test_real_non_ascii_caption_lines_are_kept_and_tokenise_to_words(tokenizer: PreTrainedTokenizerBase) -> None:
    lines = [
        "stitch ½ inch away raw edge fabric second",
        "fjällräven giveaway",
        "ocean córdoba's mahalo",
    ]  # real HowTo100M lines
    counts: Counter[str] = Counter()
    cleaned = clean_captions(
        VideoCaptions("v", [0.0, 2.0, 4.0], [2.0, 4.0, 3.0], lines), trim_rolling=True, counts=counts
    )
    assert cleaned.text == lines and cleaned.end == [2.0, 4.0, 4.0]
    assert counts == {
        "caption lines ending before they start (end set to start)": 1
    }  # nothing dropped, the fix counted
    for line in lines:
        tokens = tokenizer.tokenize(line)
        assert tokens and sum(t != tokenizer.unk_token for t in tokens) >= len(line.split()) - 1
    # the tokenizer strips accents as has_word assumes
    assert tokenizer.tokenize("córdoba") == tokenizer.tokenize("cordoba")


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (VideoCaptions("v", [0.0, 1.0], [1.0, 2.0], ["a"]), "unequal length"),
        (VideoCaptions("v", ["x"], [1.0], ["a"]), "not a number"),
        (VideoCaptions("v", [float("nan")], [1.0], ["a"]), "not a time"),
    ],
)
def test_bad_caption_lists_raise_bad_video(raw: VideoCaptions, reason: str) -> None:
    with pytest.raises(BadVideo, match=reason):
        clean_captions(raw, trim_rolling=False)


def test_rolling_asr_overlap_is_trimmed() -> None:
    assert trim_overlap("so today we are going", "we are going to make pasta") == "to make pasta"
    assert trim_overlap("Add the salt", "add the salt") == ""
    assert trim_overlap("stir it", "then bake") == "then bake"
    raw = VideoCaptions(
        "v",
        [0.0, 2.0, 4.0, 6.0],
        [3.0, 5.0, 7.0, 9.0],
        ["so today we are", "we are going to make", "going to make", "to make pasta now"],
    )
    cleaned = clean_captions(raw, trim_rolling=True)
    assert cleaned.text == ["so today we are", "going to make", "pasta now"]
    assert clean_captions(raw, trim_rolling=False).text == raw.text


def test_bad_caption_records_are_badvideo(tmp_path: Path) -> None:
    data = dict(CAPTIONS)
    data["vidC"] = {"start": [0.0, 1.0], "end": [1.0], "text": ["a", "b"]}
    data["vidD"] = {"start": [0.0]}
    (tmp_path / "caption.json").write_text(json.dumps(data))
    source = open_captions(tmp_path / "caption.json")
    assert isinstance(clean_captions(source.get("vidA"), trim_rolling=False), VideoCaptions)
    with pytest.raises(BadVideo, match="unequal length"):
        clean_captions(source.get("vidC"), trim_rolling=False)
    with pytest.raises(BadVideo, match="lacks end, text"):
        clean_captions(source.get("vidD"), trim_rolling=False)


def test_unreadable_caption_files_are_clear_errors(tmp_path: Path) -> None:
    bad = tmp_path / "caption.json"
    bad.write_text('{"vidA": {"start": [1,\n}')
    with pytest.raises(DecembertError, match=r"caption.json, line 2, column \d+: not valid JSON"):
        open_captions(bad)
    with pytest.raises(DecembertError, match="captions not found"):
        open_captions(tmp_path / "nothing.json")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DecembertError, match="no .csv caption files"):
        open_captions(tmp_path / "empty")
    _write_csv_folder(tmp_path / "csv", {"v": {"start": [], "end": [], "text": []}})
    (tmp_path / "csv" / "w.csv").write_text("begin,finish,words\n1,2,x\n")
    with pytest.raises(BadVideo, match="expected start,end,text"):
        open_captions(tmp_path / "csv").get("w")


def test_features_are_aligned_on_the_one_second_grid(tmp_path: Path) -> None:
    seconds = 20
    f2 = np.arange(seconds, dtype=np.float16)[:, None].repeat(8, 1)  # value = second
    f3 = (np.arange(30, dtype=np.float16) / 1.5)[:, None].repeat(4, 1)  # 1.5 per second: value = time
    np.save(tmp_path / "v_2d.npy", f2)
    np.save(tmp_path / "v_3d.npy", f3)
    a, b = load_features(tmp_path / "v_2d.npy", tmp_path / "v_3d.npy", dim_2d=8, dim_3d=4)
    assert a.dtype == np.float32 and a.shape == (20, 8) and b.shape == (20, 4)
    # 3D index floor(t * 24 / 16): second t reads the clip that starts at or just before t
    assert np.allclose(b[:, 0], np.floor(np.arange(20) * 1.5) / 1.5, atol=1e-2)
    assert np.all(b[:, 0] <= np.arange(20) + 1e-3) and np.all(np.arange(20) - b[:, 0] < 1)
    # a 3D stream that stops early bounds the grid
    np.save(tmp_path / "short_3d.npy", f3[:9])  # covers t < 6
    a, b = load_features(tmp_path / "v_2d.npy", tmp_path / "short_3d.npy", dim_2d=8, dim_3d=4)
    assert a.shape[0] == b.shape[0] == 6


def test_bad_feature_files_raise_bad_video(tmp_path: Path) -> None:
    good = tmp_path / "good.npy"
    np.save(good, np.ones((10, 8), dtype=np.float32))
    np.save(tmp_path / "wide.npy", np.ones((10, 16), dtype=np.float32))
    np.save(tmp_path / "flat.npy", np.ones(10, dtype=np.float32))
    np.save(tmp_path / "nan.npy", np.full((10, 8), np.nan, dtype=np.float32))
    truncated = tmp_path / "truncated.npy"
    truncated.write_bytes(good.read_bytes()[:100])
    cases = {
        "missing.npy": "missing",
        "truncated.npy": "truncated",
        "wide.npy": "16 wide, expected 8",
        "flat.npy": "shape",
        "nan.npy": "NaN",
    }
    for name, reason in cases.items():
        with pytest.raises(BadVideo, match=reason):
            load_features(tmp_path / name, good, dim_2d=8, dim_3d=8)


def _random_json(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(7 if depth < 3 else 4)
    if kind == 0:
        return rng.choice([rng.randint(-(10**12), 10**12), rng.random() * 1e3, True, False, None])
    if kind in (1, 2, 3):
        alphabet = 'ab "\\\n\u00e9\u2028\U0001f600\u4e2d/\t'
        return "".join(rng.choice(alphabet) for _ in range(rng.randrange(12)))
    if kind in (4, 5):
        return [_random_json(rng, depth + 1) for _ in range(rng.randrange(5))]
    return {str(_random_json(rng, 3)): _random_json(rng, depth + 1) for _ in range(rng.randrange(4))}


@pytest.mark.parametrize("seed", range(12))
def test_the_caption_json_scanner_finds_every_value_as_json_reads_it(tmp_path: Path, seed: int) -> None:
    """Random objects (any value, escapes, non-ASCII across piece boundaries, a BOM, any spacing), read in
    pieces of 1 to 4096 characters: each (key, offset, length) points at bytes that parse to json's value;
    a corrupted file gives json's error with the same line and column."""
    rng = random.Random(seed)
    data = {f"v{i}\u00e9" if i % 3 else f"v{i}": _random_json(rng) for i in range(rng.randrange(1, 30))}
    text = json.dumps(data, ensure_ascii=rng.random() < 0.3, indent=rng.choice([None, 0, 2]))
    raw = (b"\xef\xbb\xbf" if seed % 2 else b"") + text.encode("utf-8")
    path = tmp_path / "caption.json"
    path.write_bytes(raw)
    for chunk in (1, 2, 3, 7, 64, 4096):
        found = list(scan_json_object(path, chunk))
        assert [k for k, _, _ in found] == list(data)
        for key, offset, length in found:
            assert json.loads(raw[offset : offset + length]) == data[key]
    for _ in range(20):  # one character deleted or doubled: json's verdict, json's line and column
        cut = rng.randrange(1, len(text))
        broken = text[:cut] + text[cut + 1 :] if rng.random() < 0.5 else text[: cut + 1] + text[cut:]
        path.write_text(broken, encoding="utf-8")
        try:
            expected = json.loads(broken)
        except json.JSONDecodeError as exc:
            for chunk in (1, 5, 4096):
                with pytest.raises(DecembertError, match=rf"line {exc.lineno}, column {exc.colno}: not valid JSON"):
                    list(scan_json_object(path, chunk))
            continue
        if isinstance(expected, dict):
            assert [k for k, _, _ in scan_json_object(path, 3)] == list(expected)


def test_the_caption_json_scanner_holds_a_piece_not_the_file(tmp_path: Path) -> None:
    """A 24 MB caption.json read in 64 KiB pieces: the scan's peak allocation stays a few MB."""
    path = tmp_path / "caption.json"
    line = "so now we cut the onion and then you want to stir the pan \u00e9"
    entry = json.dumps(
        {"start": [float(i) for i in range(100)], "end": [i + 1.5 for i in range(100)], "text": [line] * 100}
    )
    with open(path, "w", encoding="utf-8") as out:
        out.write("{" + ",\n".join(f'"vid{i:06d}": {entry}' for i in range(3000)) + "}")
    assert path.stat().st_size > 20e6
    tracemalloc.start()
    try:
        count = sum(1 for _ in scan_json_object(path, 1 << 16))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count == 3000 and peak < 3e6, peak
    source = JsonCaptions(path)
    assert source.ids()[0] == "vid000000" and source.get("vid002999").text == [line] * 100
