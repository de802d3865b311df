"""Caption metrics: BLEU@1-4, METEOR, ROUGE-L and CIDEr-D through pycocoevalcap's scorers, called directly.

As the COCO caption evaluation: references and predictions are tokenised by PTBTokenizer (Java),
then scored corpus-level. The `COCOEvalCap` wrapper is not used because it always builds SPICE,
which downloads Stanford models. PTBTokenizer and METEOR run the jars pycocoevalcap ships, so
`java` must be on PATH (`check_java` says how to get it). pycocoevalcap's `Cider` is CIDEr-D
(clipped counts, Gaussian length penalty, sigma 6, x10), with document frequencies from the
references being scored. Scores are reported x100, as papers do.

Paragraph captioning (YouCook2, the MART protocol): `paragraph` joins a video's sentences as MART
does (references with " ", predictions with ". ", then lower case and letters only) and the
paragraphs are scored without PTB tokenisation (`tokenize=False`), as MART's evaluation does;
`repetition_at_4` is its R@4 over a video's predicted sentences.

Scores never shift between items: PTBTokenizer and METEOR are line protocols (pycocoevalcap joins the
captions with newlines and reads the Java output back line by line), so every caption is first made one
line (`one_line`: line and paragraph separators, control characters -> spaces), and the tokenizer's output
is checked to hold exactly one line per caption sent, item by item, before anything is scored.
"""

from __future__ import annotations

import re
import shutil
import unicodedata
from collections import Counter

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

from decembert_cli.errors import DecembertError

METRICS = ("BLEU@1", "BLEU@2", "BLEU@3", "BLEU@4", "METEOR", "ROUGE-L", "CIDEr-D")


def check_java() -> None:
    """One clear message when Java, which PTBTokenizer and METEOR need, is missing."""
    if shutil.which("java") is None:
        raise DecembertError(
            "caption metrics need Java (pycocoevalcap's PTBTokenizer and METEOR are Java programs) "
            "and `java` is not on PATH; "
            "install a Java runtime (Debian/Ubuntu: apt-get install default-jre-headless) and run again"
        )


# what a line-based reader may end a line at (Java: \r, \u2028, \u2029, \v, \f) or choke on: controls (Cc),
# line and paragraph separators (Zl, Zp) and lone surrogates (Cs: not encodable, from JSON "\ud800")
_NOT_ONE_LINE = frozenset(("Cc", "Zl", "Zp", "Cs"))


def one_line(text: str) -> str:
    r"""`text` with every Unicode line or paragraph separator and control character (\r, \n, \v, \f, U+0085,
    U+2028, U+2029, NUL, ...) made a space: what the line-based scorers may see of a caption."""
    if text.isprintable():  # no control, separator or surrogate (but maybe a space): nothing to replace
        return text
    return "".join(" " if unicodedata.category(c) in _NOT_ONE_LINE else c for c in text)


def _ptb_lines(lines: list[str]) -> list[str]:
    """pycocoevalcap's PTBTokenizer (Java; lower case, punctuation dropped) over `lines`: the lines it
    returned, in order (pycocoevalcap drops any beyond as many as were sent)."""
    return PTBTokenizer().tokenize({0: [{"caption": line} for line in lines]}).get(0, [])


def _tokenize(groups: dict[tuple[str, str], list[str]]) -> dict[tuple[str, str], list[str]]:
    """PTB-tokenise the captions of every (side, key) group in one Java run, each group followed by a marker
    line, and check that every group came back with as many lines as it sent: a caption split in two or a
    dropped line moves the marker, and is one error naming the item instead of a shifted score."""
    text = " ".join(c.lower() for v in groups.values() for c in v)
    marker = "decembertendofitem"
    while marker in text:  # a word no caption contains, so it can only come back as the marker
        marker += "x"
    lines = [line for captions in groups.values() for line in (*captions, marker)]
    out = _ptb_lines(lines)
    tokenized, at = {}, 0
    for (side, key), captions in groups.items():
        got = out[at : at + len(captions)]
        if len(out) <= at + len(captions) or out[at + len(captions)] != marker or marker in got:
            raise DecembertError(
                f"the caption tokenizer (PTBTokenizer) did not return one line per caption for the {side} of "
                f"{key!r} ({len(captions)} sent; a character it reads as a line end?), so scores would shift onto "
                "other items; nothing was scored: remove unusual characters from that item's captions"
            )
        tokenized[(side, key)] = got
        at += len(captions) + 1
    return tokenized


def caption_scores(
    references: dict[str, list[str]], predictions: dict[str, str], *, tokenize: bool = True, meteor: bool = True
) -> dict[str, float]:
    """Corpus-level scores (x100) of one prediction per key against its references.

    Every key of `references` must have a prediction (a missing or empty one scores as empty) and
    at least one reference; predictions for other keys are an error. `tokenize`: PTB-tokenise both
    sides first (sentence captioning); False scores the strings as they are (MART's paragraphs).
    """
    extra = sorted(set(predictions) - set(references))
    if extra:
        raise DecembertError(f"{len(extra)} predictions have no references (first: {extra[0]})")
    if not references:
        raise DecembertError("no references to score against")
    empty = [k for k, refs in references.items() if not refs]
    if empty:
        raise DecembertError(f"{len(empty)} items have no reference caption (first: {empty[0]})")
    if tokenize or meteor:
        check_java()

    keys = sorted(references)
    gts = {k: [one_line(r) for r in references[k]] for k in keys}
    res = {k: [one_line(predictions.get(k, ""))] for k in keys}
    if tokenize:
        groups = _tokenize(
            {**{("references", k): v for k, v in gts.items()}, **{("prediction", k): res[k] for k in keys}}
        )
        gts = {k: groups[("references", k)] for k in keys}
        res = {k: groups[("prediction", k)] for k in keys}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    out = {f"BLEU@{n + 1}": 100.0 * float(b) for n, b in enumerate(bleu)}
    if meteor:
        scorer = Meteor()
        # " ||| " separates METEOR's fields: pycocoevalcap drops it from the prediction, not from references
        meteor_gts = {k: [" ".join(r.replace("|||", " ").split()) for r in v] for k, v in gts.items()}
        try:
            out["METEOR"] = 100.0 * float(scorer.compute_score(meteor_gts, res)[0])
        finally:  # end the JVM now; after a failure pycocoevalcap's __del__ would wait forever on its lock
            process = getattr(scorer, "meteor_p", None)
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
            lock = getattr(scorer, "lock", None)
            if lock is not None and lock.locked():
                lock.release()
    out["ROUGE-L"] = 100.0 * float(Rouge().compute_score(gts, res)[0])
    out["CIDEr-D"] = 100.0 * float(Cider().compute_score(gts, res)[0])
    return out


_NOT_LETTERS = re.compile(r"[^a-zA-Z]")


def paragraph(sentences: list[str], joiner: str) -> str:
    """MART's paragraph: the sentences joined (references by " ", predictions by ". "), lowered, letters only."""
    text = joiner.join(s.strip() for s in sentences)
    return " ".join(_NOT_LETTERS.sub(" ", text).lower().split())


def repetition_at_4(sentences: list[str]) -> float:
    """R@4 of one video's predicted sentences, as MART's evaluateRepetition: 4-grams are counted within
    each sentence (trailing "." dropped, "," read as a space) over the whole video; the share of
    4-gram occurrences that repeat one seen before (0 when there is none)."""
    grams: Counter[tuple[str, ...]] = Counter()
    for sentence in sentences:
        words = sentence.strip().removesuffix(".").replace(",", " ").split()
        grams.update(tuple(words[i : i + 4]) for i in range(len(words) - 3))
    total = sum(grams.values())
    return 0.0 if total == 0 else sum(c - 1 for c in grams.values()) / total
