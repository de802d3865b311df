"""Shared fixtures. Tests never touch the network: the hub is forced offline before anything imports it."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@pytest.fixture(scope="session")
def tokenizer() -> PreTrainedTokenizerBase:
    from decembert_cli.data.tokenizer import load_tokenizer
    from decembert_cli.packaged import MINILM_PACKAGE

    return load_tokenizer(MINILM_PACKAGE)
