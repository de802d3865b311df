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

`last_validation` and `read_evaluation` read a run's numbers back (a model card, a recipe's results table),
checked: a value that is not a number is one error naming the file and the key.

Units: a validation line carries `"percent": true`; its shares (accuracies, the alignment baselines, the
argmax-u offsets) are in per cent, like the paper's tables and every task metric. Lines written before
(without the mark) held pre-training shares as fractions; `model.pretraining.in_percent` reads both alike.
"""

from __future__ import annotations

import importlib
import json
import math
import secrets
from pathlib import Path
from typing import Any

from decembert_cli.errors import DecembertError, shown
from decembert_cli.io import METRICS_LOG, append_jsonl, atomic_write_text, decode_json, read_jsonl, regular_file
from decembert_cli.model.pretraining import PERCENT, in_percent

SINKS = ("jsonl", "tensorboard", "wandb")


def _need(module: str, extra: str) -> Any:
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


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def last_validation(run_dir: Path) -> dict[str, Any]:
    """The metrics of the last validation line of RUN_DIR/metrics.jsonl ({} without one; shares in per cent),
    checked: each is a number (a `warning` is text), else one error naming the file, the step and the key."""
    path = Path(run_dir) / METRICS_LOG
    if not (path.exists() or path.is_symlink()):
        return {}
    rows, _ = read_jsonl(regular_file(path, "metrics log"))
    row: dict[str, Any] = next((r for r in reversed(rows) if r.get("split") == "val"), {})
    found = {k: v for k, v in in_percent(row).items() if k not in ("step", "split", PERCENT)}
    for key, value in found.items():
        if key != "warning" and not _is_number(value):
            raise DecembertError(
                f"{path}: the validation line of step {row.get('step')}: {key}: expected a number, got "
                f"{shown(value)}; the log is damaged: correct or remove that line"
            )
    return found


def read_evaluation(path: Path) -> dict[str, Any]:
    """An evaluation record (EVAL_DIR/metrics.json, as `decembert evaluate` writes it), checked: a JSON object
    whose "metrics" maps each name to a number, else one error naming the file and the field."""
    regular_file(path, "evaluation record")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DecembertError(f"cannot read {path}: {exc}") from None
    record = decode_json(text, str(path))
    fix = "the record is damaged: run decembert evaluate again to rewrite it"
    if not isinstance(record, dict):
        raise DecembertError(f"{path}: expected a JSON object, got {shown(record)}; {fix}")
    metrics = record.get("metrics")
    if not isinstance(metrics, dict):
        raise DecembertError(f"{path}: metrics: expected an object of numbers, got {shown(metrics)}; {fix}")
    for key, value in metrics.items():
        if not _is_number(value):
            raise DecembertError(f"{path}: metrics.{key}: expected a number, got {shown(value)}; {fix}")
    if not isinstance(record.get("split", ""), str):
        raise DecembertError(f"{path}: split: expected a split name, got {shown(record['split'])}; {fix}")
    return record


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
