"""Atomic checkpoints with everything an exact resume needs, read back with `weights_only=True`.

A checkpoint holds the model, optimiser, scheduler and gradient-scaler states, the step, every
process's RNG states, the resolved config and run metadata. It is written to a temporary file and
renamed, so an interruption leaves the previous checkpoint intact and never half a new one.

An exported model folder (`decembert export`: model.safetensors, config.json, tokenizer files; no
pickle) reads back as a checkpoint without the training state, so whatever takes a checkpoint to
start from or to score (`finetune --checkpoint`, `evaluate --checkpoint`) takes an export too.
"""

from __future__ import annotations

import io
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from decembert_cli.errors import DecembertError
from decembert_cli.io import atomic_write_bytes

FORMAT = "decembert.checkpoint/1"
_NAME = re.compile(r"^step-(\d+)\.pt$")


def checkpoint_dir(run_dir: Path) -> Path:
    return run_dir / "checkpoints"


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return checkpoint_dir(run_dir) / f"step-{step:08d}.pt"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoints of a run, oldest first."""
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


EXPORT_FORMAT = "decembert.export/1"
EXPORT_WEIGHTS = "model.safetensors"


def is_export(path: Path) -> bool:
    return path.is_dir() and (path / EXPORT_WEIGHTS).is_file() and (path / "config.json").is_file()


def read_export(folder: Path) -> dict[str, Any]:
    """An exported folder as a checkpoint payload (model state, config, meta, step); its tokenizer is its own."""
    import json

    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        described = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        ours = described["decembert"]
        if ours.get("format") != EXPORT_FORMAT:
            raise KeyError("format")
        state = load_file(str(folder / EXPORT_WEIGHTS))
    except (OSError, ValueError, KeyError, TypeError, SafetensorError) as exc:
        raise CorruptCheckpoint(
            f"{folder} is not a readable decembert export ({EXPORT_FORMAT}: {exc.__class__.__name__}: {exc})"
        ) from None
    config = ours["config"]
    config = {**config, "model": {**config["model"], "tokenizer": str(folder), "init": "none"}}
    return {"format": FORMAT, "model": state, "config": config, "meta": ours["meta"], "step": ours["step"]}


def resolve(path: Path) -> Path:
    """A checkpoint file as given, an exported model folder, or the newest checkpoint of a run folder."""
    path = Path(path).expanduser()
    if is_export(path):
        return path
    if path.is_dir():
        found = list_checkpoints(path)
        if not found:
            raise DecembertError(f"{path} is a folder without checkpoints (looked in {checkpoint_dir(path)})")
        return found[-1]
    return path


def rng_state() -> dict[str, Any]:
    """This process's RNG states (torch CPU and CUDA, Python, NumPy's global generator)."""
    np_state = np.random.get_state(legacy=True)
    assert isinstance(np_state, tuple)  # the legacy form: the global generator is always MT19937
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": list(random.getstate()[1]),
        "python_version": random.getstate()[0],
        "python_gauss": random.getstate()[2],
        "numpy": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))


def save_checkpoint(path: Path, payload: dict[str, Any]) -> Path:
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **payload}, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


# what --resume needs
RESUME_KEYS = (
    "model",
    "optimizer",
    "scheduler",
    "scaler",
    "step",
    "total_steps",
    "rng",
    "config",
)


class CorruptCheckpoint(DecembertError):
    """A checkpoint file that cannot be read (truncated, overwritten, not a checkpoint at all)."""


def _reason(exc: BaseException) -> str:
    """The first line of a loading error, without PyTorch's advice to load untrusted files with
    weights_only=False (a checkpoint never needs it)."""
    first = (str(exc).strip().splitlines() or [""])[0]
    if "weights_only" in first or "Weights only load failed" in first or not first:
        first = "it holds data a decembert checkpoint never has, or is damaged"
    return f"{exc.__class__.__name__}: {first[:160]}"


def load_checkpoint(
    path: Path, map_location: str | torch.device = "cpu", required: tuple[str, ...] = ("model", "config")
) -> dict[str, Any]:
    """A checkpoint's contents; `required` keys must be there (RESUME_KEYS to continue training)."""
    if is_export(Path(path)):
        data = read_export(Path(path))
        missing = [key for key in required if key not in data]
        if missing:
            raise DecembertError(
                f"{path} is an exported model, without {', '.join(missing)}: training resumes from a run"
            )
        return data
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise DecembertError(f"checkpoint {path} not found") from None
    except Exception as exc:  # truncated or foreign file
        raise CorruptCheckpoint(f"{path} is not a readable decembert checkpoint ({_reason(exc)})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CorruptCheckpoint(f"{path} is not a decembert checkpoint (format {FORMAT})")
    missing = [key for key in required if key not in data]
    if missing:
        raise DecembertError(
            f"checkpoint {path} lacks {', '.join(missing)}: it was not written by decembert "
            f"pretrain or finetune (or by an older version); start a new run or pass another checkpoint"
        )
    return data


def newest_intact(run_dir: Path) -> tuple[Path, dict[str, Any], list[str]] | None:
    """The newest checkpoint of a run that loads, with its contents and a note for each newer one
    that did not (a damaged file is skipped, not fatal); None if the run has none."""
    notes: list[str] = []
    for path in reversed(list_checkpoints(run_dir)):
        try:
            return path, load_checkpoint(path, required=RESUME_KEYS), notes
        except CorruptCheckpoint as exc:
            notes.append(f"{exc}; resuming from an older checkpoint")
    if notes:
        raise DecembertError(f"no intact checkpoint in {checkpoint_dir(run_dir)}: " + "; ".join(notes[-1:]))
    return None


def remove_orphans(run_dir: Path) -> int:
    """Delete temporary files a checkpoint write killed mid-way left behind; returns how many."""
    folder = checkpoint_dir(run_dir)
    orphans = list(folder.glob(".step-*.tmp")) if folder.is_dir() else []
    for orphan in orphans:
        orphan.unlink(missing_ok=True)
    return len(orphans)


def prune(run_dir: Path, keep: int) -> None:
    """Delete all but the newest `keep` checkpoints."""
    if keep <= 0:
        return
    for old in list_checkpoints(run_dir)[:-keep]:
        old.unlink(missing_ok=True)
