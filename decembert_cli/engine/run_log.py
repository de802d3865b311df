"""A run's metrics: `metrics.jsonl` always, and TensorBoard and Weights & Biases when `train.log_to` names them.

Every sink gets the same scalars: each numeric value of a `metrics.jsonl` line, tagged
`train/<key>` or `val/<key>` (the line's split) at the line's step. Pictures (the validation
metrics as a table) go to the sinks that show images. Only the main process logs.

- TensorBoard (`pip install 'decembert[tensorboard]'`): event files in RUN_DIR/tensorboard, through
  `torch.utils.tensorboard`; on --resume the events after the checkpoint's step are purged, as
  metrics.jsonl is cut back.
- W&B (`pip install 'decembert[wandb]'`): a run in RUN_DIR/wandb named after the run folder, with
  the resolved config as the run config; `WANDB_MODE=offline` (or `disabled`) is respected, and
  --resume continues the same W&B run (its id is kept in RUN_DIR/wandb_id). W&B cannot rewind:
  after a resume it keeps the points it already had for the steps between the checkpoint and the
  interruption.
"""

from __future__ import annotations

import json
import math
import secrets
from pathlib import Path
from typing import Any

from decembert_cli.errors import DecembertError
from decembert_cli.io import append_jsonl, atomic_write_text, read_jsonl

SINKS = ("jsonl", "tensorboard", "wandb")


def _need(module: str, extra: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise DecembertError(
            f"train.log_to includes {extra}, but {module.split('.')[0]} is not installed: "
            f"pip install 'decembert[{extra}]' (or remove {extra} from train.log_to)"
        ) from None


def check_sinks(sinks: tuple[str, ...] | list[str]) -> None:
    """Refuse an unknown sink or one whose package is missing before a run starts."""
    for sink in sinks:
        if sink not in SINKS:
            raise DecembertError(f"train.log_to: unknown '{sink}'; choose from {', '.join(SINKS)}")
    if "tensorboard" in sinks:
        _need("torch.utils.tensorboard", "tensorboard")
    if "wandb" in sinks:
        _need("wandb", "wandb")


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """The record's numeric values, tagged with its split (train unless it says otherwise)."""
    split = record.get("split", "train")
    return {
        f"{split}/{key}": float(value)
        for key, value in record.items()
        if key not in ("step", "split") and isinstance(value, (int, float)) and not isinstance(value, bool)
        if math.isfinite(float(value))
    }


class RunLog:
    """metrics.jsonl plus the sinks of `train.log_to`; does nothing on other processes than the main one."""

    def __init__(self, run_dir: Path, enabled: bool, sinks: tuple[str, ...] = ("jsonl",)) -> None:
        self.run_dir = run_dir
        self.path = run_dir / "metrics.jsonl"
        self.enabled = enabled
        self.sinks = tuple(sinks)
        check_sinks(self.sinks)
        self._tensorboard: Any = None
        self._wandb: Any = None

    @property
    def shows_images(self) -> bool:
        return self.enabled and any(s in self.sinks for s in ("tensorboard", "wandb"))

    def open(self, start: int, config: dict[str, Any]) -> None:
        """Start the sinks at step `start` (after a resume: drop what TensorBoard holds beyond it)."""
        if not self.enabled:
            return
        if "tensorboard" in self.sinks:
            tensorboard = _need("torch.utils.tensorboard", "tensorboard")
            self._tensorboard = tensorboard.SummaryWriter(
                log_dir=str(self.run_dir / "tensorboard"), purge_step=start + 1 if start else None
            )
            if not start:
                self._tensorboard.add_text("config", f"```\n{json.dumps(config, indent=2)}\n```", 0)
        if "wandb" in self.sinks:
            wandb = _need("wandb", "wandb")
            id_file = self.run_dir / "wandb_id"
            run_id = id_file.read_text(encoding="utf-8").strip() if id_file.is_file() else secrets.token_hex(4)
            atomic_write_text(id_file, run_id + "\n")
            self._wandb = wandb.init(
                project="decembert",
                name=self.run_dir.name,
                id=run_id,
                resume="allow",
                dir=str(self.run_dir),
                config=config,
            )

    def keep_until(self, step: int) -> str | None:
        """On resume: drop lines written after the checkpoint's step (they will be written again) and
        a torn last line; returns a note when there was one."""
        if not self.enabled or not self.path.exists():
            return None
        rows, note = read_jsonl(self.path)
        kept = [row for row in rows if row.get("step", 0) <= step]
        atomic_write_text(self.path, "".join(json.dumps(row) + "\n" for row in kept))
        return note

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        append_jsonl(self.path, record)
        values = scalars(record)
        step = int(record.get("step", 0))
        if self._tensorboard is not None:
            for tag, value in values.items():
                self._tensorboard.add_scalar(tag, value, step)
            self._tensorboard.flush()
        if self._wandb is not None:
            self._wandb.log(values, step=step)

    def image(self, tag: str, png: Path, step: int) -> None:
        """A picture (PNG) at `step` in the sinks that show images."""
        if not self.shows_images:
            return
        if self._tensorboard is not None:
            from matplotlib.image import imread

            pixels = imread(png)[..., :3]  # RGBA floats in [0, 1]
            self._tensorboard.add_image(tag, pixels, step, dataformats="HWC")
            self._tensorboard.flush()
        if self._wandb is not None:
            import wandb

            self._wandb.log({tag: wandb.Image(str(png))}, step=step)

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None
