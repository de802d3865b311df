"""What the clip-based task families (retrieval, captioning) share: a task that is its own dataset
adapter, reading each split once from its annotation files."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from decembert_cli.data.video_store import dataset_file
from decembert_cli.protocols import DataCheck, Task


class ClipTask(Task, ABC):
    """Subclasses read a split's annotations in `read(split)`; `cached(split)` reads it once."""

    version = "1.0"

    def __init__(self, config: Any, state: dict[str, Any] | None = None) -> None:
        self.config = config
        self._splits: dict[str, Any] = {}

    def state(self) -> dict[str, Any]:
        return {}  # nothing learnt from the training data that evaluation needs

    def adapter(self) -> ClipTask:
        return self

    @abstractmethod
    def has_split(self, split: str) -> bool:
        """Whether the files of `split` (train / val / test) are there."""

    @abstractmethod
    def check(self) -> DataCheck:
        """Read the annotation files only and report (decembert data check)."""

    @abstractmethod
    def dataset(self, split: str, tokenizer: Any, model: Any, *, train: bool) -> Any:
        """The samples of `split`, as the task family builds them."""

    @abstractmethod
    def read(self, split: str) -> Any:
        """The split's clips and texts, from the task's annotation files."""

    def cached(self, split: str) -> Any:
        if split not in self._splits:
            self._splits[split] = self.read(split)
        return self._splits[split]

    def _path(self, name: str) -> Path:
        return dataset_file(self.config, name)
