"""Caption metrics against independent straightforward implementations, and the MART paragraph rules."""

from __future__ import annotations

import math
import shutil
from collections import Counter
from pathlib import Path

import pytest

from decembert_cli.metrics.captions import caption_scores, paragraph, repetition_at_4

pytestmark = pytest.mark.skipif(
    shutil.which("java") is None, reason="pycocoevalcap's tokenizer and METEOR need Java (.ci/run installs it)"
)
REAL = Path(__file__).resolve().parents[1] / "data" / "real-annotations"


def _grams(words: list[str], n: int) -> Counter:
    return Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def _bleu(refs: dict[str, list[str]], hyps: dict[str, str], n_max: int = 4) -> list[float]:
    """Corpus BLEU with the closest reference length per sentence (ties: the shorter), as COCO."""
    matches, totals = [0] * n_max, [0] * n_max
    hyp_len = ref_len = 0
    for k, hyp in hyps.items():
        h = hyp.split()
        rs = [r.split() for r in refs[k]]
        hyp_len += len(h)
        ref_len += min((abs(len(r) - len(h)), len(r)) for r in rs)[1]
        for n in range(1, n_max + 1):
            best = Counter()
            for r in rs:
                best |= _grams(r, n)
            matches[n - 1] += sum(min(c, best[g]) for g, c in _grams(h, n).items())
            totals[n - 1] += max(len(h) - n + 1, 0)
    scores, log_sum = [], 0.0
    for n in range(n_max):
        log_sum += math.log((matches[n] + 1e-15) / (totals[n] + 1e-9))
        bp = 1.0 if hyp_len >= ref_len else math.exp(1 - ref_len / hyp_len)
        scores.append(100 * bp * math.exp(log_sum / (n + 1)))
    return scores


def _lcs(a: list[str], b: list[str]) -> int:
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            table[i + 1][j + 1] = table[i][j] + 1 if x == y else max(table[i][j + 1], table[i + 1][j])
    return table[-1][-1]


def _rouge_l(refs: dict[str, list[str]], hyps: dict[str, str], beta: float = 1.2) -> float:
    """Mean over items of the LCS F-measure (beta 1.2) from the best precision and the best recall over references."""
    total = 0.0
    for k, hyp in hyps.items():
        h = hyp.split()
        p = max(_lcs(r.split(), h) / len(h) for r in refs[k])
        r_ = max(_lcs(r.split(), h) / len(r.split()) for r in refs[k])
        total += 0.0 if p == 0 or r_ == 0 else (1 + beta**2) * p * r_ / (r_ + beta**2 * p)
    return 100 * total / len(hyps)


def _cider_d(refs: dict[str, list[str]], hyps: dict[str, str], sigma: float = 6.0) -> float:
    """CIDEr-D: tf-idf n-gram vectors (idf from the references of all items), clipped cosine, Gaussian
    penalty on the difference in length, mean over n = 1..4 and over references, x10."""
    df: Counter = Counter()
    for k in refs:
        df.update({g for r in refs[k] for n in range(1, 5) for g in _grams(r.split(), n)})
    log_items = math.log(len(refs))

    def vectors(text: str) -> tuple[list[dict], int]:
        words = text.split()
        vecs = [
            {g: c * (log_items - math.log(max(1.0, df[g]))) for g, c in _grams(words, n).items()} for n in range(1, 5)
        ]
        return vecs, len(words)

    total = 0.0
    for k, hyp in hyps.items():
        hv, hl = vectors(hyp)
        per_ref = []
        for ref in refs[k]:
            rv, rl = vectors(ref)
            sims = []
            for n in range(4):
                norm_h = math.sqrt(sum(v * v for v in hv[n].values()))
                norm_r = math.sqrt(sum(v * v for v in rv[n].values()))
                dot = sum(min(v, rv[n].get(g, 0.0)) * rv[n].get(g, 0.0) for g, v in hv[n].items())
                sim = dot / (norm_h * norm_r) if norm_h and norm_r else 0.0
                sims.append(sim * math.exp(-((hl - rl) ** 2) / (2 * sigma**2)))
            per_ref.append(sum(sims) / 4)
        total += 10 * sum(per_ref) / len(per_ref)
    return 100 * total / len(hyps)


REFS = {
    "video1": ["a man is slicing a tomato on a board", "someone cuts a red tomato", "a person slices tomatoes"],
    "video2": ["a dog runs across the park", "a brown dog is running on grass"],
}
HYPS = {"video1": "a man is cutting a tomato", "video2": "a dog is running in the park"}


def test_two_videos_by_hand() -> None:
    ours = caption_scores(REFS, HYPS, meteor=False)
    for n, value in enumerate(_bleu(REFS, HYPS)):
        assert ours[f"BLEU@{n + 1}"] == pytest.approx(value, rel=1e-6), n
    assert ours["ROUGE-L"] == pytest.approx(_rouge_l(REFS, HYPS), rel=1e-9)
    assert ours["CIDEr-D"] == pytest.approx(_cider_d(REFS, HYPS), rel=1e-9)


def test_cider_d_of_a_prediction_equal_to_one_reference() -> None:
    refs = {"a": ["the cat sat on the mat"], "b": ["a dog ran in the park"]}
    assert caption_scores(refs, {"a": "the cat sat on the mat", "b": "a dog ran in the park"}, meteor=False)[
        "CIDEr-D"
    ] == pytest.approx(1000.0)
    refs["a"].append("a cat is sitting")
    hyps = {"a": "the cat sat on the mat", "b": "a dog ran in the park"}
    ours = caption_scores(refs, hyps, meteor=False)["CIDEr-D"]
    # the other reference of "a" is not matched
    assert ours == pytest.approx(_cider_d(refs, hyps), rel=1e-9) and ours < 1000.0


def test_meteor_is_scored_and_missing_predictions_score_as_empty() -> None:
    full = caption_scores(REFS, HYPS)
    assert 0 < full["METEOR"] < 100
    partial = caption_scores(REFS, {"video1": HYPS["video1"]}, meteor=False)
    assert partial["CIDEr-D"] < full["CIDEr-D"]
    from decembert_cli.errors import DecembertError

    with pytest.raises(DecembertError, match="have no references"):
        caption_scores(REFS, {**HYPS, "video9": "x"})


def test_paragraphs_as_mart_on_a_real_youcook2_validation_video() -> None:
    from decembert_cli.data.annotations.youcook2 import read_youcook2

    video = next(
        v for v in read_youcook2(REAL / "youcookii_annotations_trainval.json").values() if v.subset == "validation"
    )
    sentences = [s.sentence for s in video.segments]  # in time order
    reference = paragraph(sentences, " ")
    assert reference == " ".join(
        w for s in sentences for w in "".join(c if c.isalpha() else " " for c in s).lower().split()
    )
    predicted = paragraph(["Add salt, pepper.", "Stir the 2 eggs"], ". ")
    assert predicted == "add salt pepper stir the eggs"


def test_repetition_at_4_counts_within_sentences_over_the_video() -> None:
    # 3 4-grams twice
    assert repetition_at_4(["add the oil to the pan", "add the oil to the pan."]) == pytest.approx(3 / 6)
    assert repetition_at_4(["add the oil", "to the pan"]) == 0.0  # no sentence has 4 words; grams never cross sentences
    # "," read as a space: 2 identical 4-grams
    assert repetition_at_4(["cut, cut, cut, cut, cut"]) == pytest.approx(1 / 2)


# A line break or control character inside a caption: pycocoevalcap's PTBTokenizer joins the captions with
# newlines and splits the Java tokenizer's output by lines, so one that Java reads as a line end (\r, U+2028,
# U+2029, \v, \f) used to shift every later caption onto the wrong item. Each scores as a space.
BREAKS = ["\r", "\n", "\r\n", "\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1c", "\x00", "\x1b", "\x7f"]
SHIFT_REFS = {
    "v1": ["a man is{} slicing a tomato on a board", "someone cuts a red tomato"],
    "v2": ["a dog runs across the{}park", "a brown dog is running on grass"],
    "v3": ["two women are singing on a stage", "people sing a{}song"],
    "v4": ["a car drives down a road", "a red car on the highway"],
}
SHIFT_HYPS = {
    "v1": "a man is{}cutting a tomato",
    "v2": "a dog is running in the park",
    "v3": "women{}sing",
    "v4": "a car",
}


def _with(char: str) -> tuple[dict[str, list[str]], dict[str, str]]:
    return (
        {k: [r.format(char) for r in refs] for k, refs in SHIFT_REFS.items()},
        {k: h.format(char) for k, h in SHIFT_HYPS.items()},
    )


@pytest.fixture(scope="module")
def spaced() -> dict[str, float]:
    return caption_scores(*_with(" "), meteor=False)


@pytest.mark.parametrize(
    "char", BREAKS, ids=["CR", "LF", "CRLF", "LS", "PS", "NEL", "VT", "FF", "FS", "NUL", "ESC", "DEL"]
)
def test_a_line_break_or_control_character_in_a_caption_scores_as_a_space(char: str, spaced: dict[str, float]) -> None:
    refs, hyps = _with(char)
    assert caption_scores(refs, hyps, meteor=False) == pytest.approx(spaced, rel=1e-12)


@pytest.mark.parametrize("fault", ["drop", "split"])
def test_the_scorer_refuses_what_the_tokenizer_did_not_return_one_line_per_caption(
    monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    """A tokenizer that drops a caption or splits one in two (a line end the normalisation missed) is caught
    per item, not scored shifted."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    from decembert_cli.errors import DecembertError

    original = PTBTokenizer.tokenize

    def faulty(self: PTBTokenizer, captions: dict) -> dict:
        captions = {k: [dict(c) for c in v] for k, v in captions.items()}
        first = next((v for v in captions.values() if len(v) > 1), None)  # where video1's 3 references are
        if first is None:
            pass
        elif fault == "drop":
            del first[1]
        else:
            first[1]["caption"] = first[1]["caption"].replace(" ", "\r", 1)
        return original(self, captions)

    monkeypatch.setattr(PTBTokenizer, "tokenize", faulty)
    with pytest.raises(DecembertError, match=r"one line per caption for the references of .video1. \(3 sent"):
        caption_scores(REFS, HYPS, meteor=False)


def test_meteor_reads_untokenised_captions_with_line_breaks_and_its_field_separator_as_spaces() -> None:
    """METEOR is a line protocol too (`SCORE ||| ref ||| ... ||| hypothesis` per line); the paragraph path
    (tokenize=False) hands it the strings as they are."""
    refs = {"a": ["a man is{}cooking{}food", "someone cooks"], "b": ["a dog runs", "a brown{}dog"]}
    hyps = {"a": "a man{}cooks", "b": "a{}dog"}

    def scores(a: str, b: str) -> dict[str, float]:
        return caption_scores(
            {k: [r.format(a, b) for r in v] for k, v in refs.items()},
            {k: h.format(a) for k, h in hyps.items()},
            tokenize=False,
        )

    # two METEOR runs (a JVM each): "|||" is a word to the other metrics, so only METEOR is compared
    assert scores("\r", " ||| ")["METEOR"] == pytest.approx(scores(" ", " ")["METEOR"], rel=1e-12)
