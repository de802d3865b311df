"""What the clip-based task families (retrieval, captioning) share: a task that is its own dataset
adapter, reading each split once from its annotation files; and the rules of a predictions file
(`decembert evaluate TASK --predictions FILE`): every id a safe name, every item predicted exactly once."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from decembert_cli.data.video_store import dataset_file
from decembert_cli.errors import DecembertError
from decembert_cli.io import MAX_ID_BYTES, safe_id
from decembert_cli.protocols import DataCheck, Task

K = TypeVar("K", bound=Hashable)


def prediction_id(row: dict[str, Any], field: str, where: str) -> str:
    """`row[field]`, the id a predictions file's row is for: a string that `safe_id` accepts (ids are
    names, never paths), else one error naming `where` (the file and line)."""
    value = row.get(field)
    shown = json.dumps(value)[:60]
    if not isinstance(value, str):
        raise DecembertError(f'{where}: "{field}" must be a string (an id), got {shown}')
    if not safe_id(value):
        raise DecembertError(
            f'{where}: "{field}" {shown} is not a safe id (ids are names: no "/", "\\", leading ".", control '
            f"character or empty string, at most {MAX_ID_BYTES} UTF-8 bytes); use the id the annotations give"
        )
    return value


def check_predicted_once(
    lines: dict[K, list[int]],
    expected: Sequence[K],
    source: str,
    name: Callable[[K], str],
    *,
    allow_partial: bool = False,
) -> None:
    """Each of `expected` predicted exactly once (`lines`: the file lines that predict each item): items
    predicted twice are one error naming them and their lines; items without a prediction are one error
    naming them, unless `allow_partial` (the task then scores them as it documents, e.g. empty)."""
    twice = [k for k in lines if len(lines[k]) > 1]
    if twice:
        shown = "; ".join(f"{name(k)} (lines {', '.join(map(str, lines[k]))})" for k in twice[:3])
        raise DecembertError(
            f"{source}: {len(twice)} item{'s' if len(twice) > 1 else ''} predicted more than once: {shown}"
            f"{'; ...' if len(twice) > 3 else ''}; "
            "keep one line per item"
        )
    missing = [k for k in expected if k not in lines]
    if missing and not allow_partial:
        shown = ", ".join(name(k) for k in missing[:5])
        raise DecembertError(
            f"{source}: no prediction for {len(missing)} of {len(expected)} items: {shown}"
            f"{', ...' if len(missing) > 5 else ''}; predict every item, or pass --allow-partial to score "
            "the file as it is (items without a prediction then score as empty)"
        )


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
