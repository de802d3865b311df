"""Atomic checkpoints with everything an exact resume needs, read back with `weights_only=True`.

A checkpoint holds the model, optimiser, scheduler and gradient-scaler states, the step, every
process's RNG states, the resolved config and run metadata. It is written to a temporary file and
renamed, so an interruption leaves the previous checkpoint intact and never half a new one.

An exported model folder (`decembert export`: model.safetensors, config.json, tokenizer files; no
pickle) reads back as a checkpoint without the training state, so whatever takes a checkpoint to
start from or to score (`finetune --checkpoint`, `evaluate --checkpoint`) takes an export too.

Reading one checks it before anything uses it: only regular files are opened (a FIFO would block), an
export must have its tokenizer, and the contents' types, the encoder's settings and every tensor's name
and shape (against the model those settings build, on the meta device: no memory, no time) must be what
decembert writes. Anything else is one error naming the file and the field.
"""

from __future__ import annotations

import dataclasses
import io
import random
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from decembert_cli.config import Config, ModelConfig
from decembert_cli.config.loader import from_dict
from decembert_cli.errors import ConfigError, DecembertError, shown
from decembert_cli.io import atomic_write_bytes, decode_json, regular_file
from decembert_cli.model import build_encoder, build_pretraining_model
from decembert_cli.model.weights import random_bert_config

FORMAT = "decembert.checkpoint/1"
_NAME = re.compile(r"^step-(\d+)\.pt$")


def checkpoint_dir(run_dir: Path) -> Path:
    return run_dir / "checkpoints"


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return checkpoint_dir(run_dir) / f"step-{step:08d}.pt"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoints of a run, oldest first. Something else under a checkpoint's name (a folder, a FIFO) is
    refused at once: only decembert writes there, and resuming, pruning or loading would trip over it."""
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    for _, path in found:
        regular_file(path, "the run's checkpoint")
    return [p for _, p in sorted(found)]


EXPORT_FORMAT = "decembert.export/1"
EXPORT_WEIGHTS = "model.safetensors"
EXPORT_CONFIG = "config.json"
# an export's tokenizer: one of VOCABULARY holds the words (without it every word would be [UNK]); all are
# read when present, so each must be a regular file
VOCABULARY = ("tokenizer.json", "vocab.txt")
TOKENIZER_FILES = (*VOCABULARY, "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json")


def is_export(path: Path) -> bool:
    """A folder with an export's files (checked when read: one that is not a regular file is refused there)."""
    return path.is_dir() and any((path / name).exists() for name in (EXPORT_WEIGHTS, EXPORT_CONFIG))


def _present(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def read_export(folder: Path) -> dict[str, Any]:
    """An exported folder as a checkpoint payload (model state, config, meta, step), checked as a checkpoint
    is; its tokenizer is its own. The encoder's BertConfig is config.json's top level, as Hugging Face reads it."""
    config_file, weights_file = folder / EXPORT_CONFIG, folder / EXPORT_WEIGHTS
    for path in (config_file, weights_file, *(folder / n for n in TOKENIZER_FILES if _present(folder / n))):
        regular_file(path, "export file")
    if not any(_present(folder / name) for name in VOCABULARY):
        raise DecembertError(
            f"{folder} is an export without its tokenizer (no {' or '.join(VOCABULARY)}): every word would be "
            "[UNK]; export the run again with decembert export, or copy the tokenizer files of the model it was "
            "trained with into it"
        )
    try:
        text = config_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CorruptCheckpoint(f"cannot read {config_file}: {exc}") from None
    described = decode_json(text, str(config_file))
    if not isinstance(described, dict):
        raise CorruptCheckpoint(f"{config_file}: expected a JSON object, got {shown(described)}")
    ours = described.get("decembert")
    if ours is None:
        raise CorruptCheckpoint(
            f"{config_file}: no 'decembert' section: not a decembert export (a plain BERT folder goes to model.init)"
        )
    if not isinstance(ours, dict) or ours.get("format") != EXPORT_FORMAT:
        got = shown(ours.get("format") if isinstance(ours, dict) else ours)
        raise CorruptCheckpoint(f"{config_file}: decembert.format: expected '{EXPORT_FORMAT}', got {got}")
    try:
        state = load_file(str(weights_file))
    except (OSError, ValueError, SafetensorError) as exc:
        raise CorruptCheckpoint(
            f"{weights_file} is not readable safetensors ({exc.__class__.__name__}: {exc})"
        ) from None
    meta = ours.get("meta")
    if isinstance(meta, dict):
        meta = {**meta, "bert_config": {k: v for k, v in described.items() if k != "decembert"}}
    data: dict[str, Any] = {"format": FORMAT, "model": state, "config": ours.get("config"), "meta": meta}
    data["step"] = ours.get("step")
    fix = "the export is damaged or hand-edited: export the run again (decembert export)"
    check_payload(data, _Fields(str(config_file), "decembert.", bert="", weights=str(weights_file), fix=fix))
    config = data["config"]
    data["config"] = {**config, "model": {**config["model"], "tokenizer": str(folder), "init": "none"}}
    return data


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
    """A checkpoint's contents, checked (`check_payload`); `required` keys must be there (RESUME_KEYS to
    continue training)."""
    path = Path(path)
    if is_export(path):
        data = read_export(path)
        missing = [key for key in required if key not in data]
        if missing:
            raise DecembertError(
                f"{path} is an exported model, without {', '.join(missing)}: training resumes from a run"
            )
        return data
    if not path.exists():
        raise DecembertError(f"checkpoint {path} not found")
    regular_file(path, "checkpoint")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
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
    check_payload(data, _Fields(str(path)))
    return data


KINDS = ("pretrain", "finetune")
# the sizes a BertConfig builds an encoder from: each a positive integer
BERT_SIZES = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "max_position_embeddings",
    "type_vocab_size",
)


@dataclasses.dataclass(frozen=True)
class _Fields:
    """Where the parts of a payload are in the file that messages name: a checkpoint's keys, or an export's
    config.json (its "decembert" section, the BertConfig at the top level) and model.safetensors."""

    file: str
    prefix: str = ""  # of config, meta and step
    bert: str = "meta.bert_config."  # of the BertConfig's keys
    weights: str = ""  # the file of the tensors, when another one
    fix: str = "the file is damaged or was not written by decembert: pass another checkpoint"

    def at(self, name: str) -> str:
        return f"{self.file}: {self.prefix}{name}"

    @property
    def settings(self) -> str:
        """What describes the model, as messages name it."""
        bert = self.bert.rstrip(".") or f"{Path(self.file).name}'s BERT settings"
        return f"{bert} and {self.prefix}config.model"


def _expect(ok: bool, where: str, wanted: str, value: Any) -> None:
    if not ok:
        raise CorruptCheckpoint(f"{where}: expected {wanted}, got {shown(value)}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_payload(data: dict[str, Any], fields: _Fields) -> None:
    """The types of a checkpoint's (or an export's) contents, its encoder settings, and every tensor's name and
    shape; CorruptCheckpoint naming the file and the first field that is not what decembert writes."""
    try:
        _check_payload(data, fields)
    except CorruptCheckpoint as exc:
        raise CorruptCheckpoint(f"{exc}; {fields.fix}") from None


def _check_payload(data: dict[str, Any], fields: _Fields) -> None:
    state: Any = data.get("model")
    weights = fields.weights or fields.file
    _expect(isinstance(state, Mapping), fields.weights or f"{weights}: model", "named tensors", state)
    for key, value in state.items():
        _expect(
            isinstance(key, str) and isinstance(value, torch.Tensor), f"{weights}: model[{key!r}]", "a tensor", value
        )
    config: Any = data.get("config")
    meta: Any = data.get("meta")
    _expect(isinstance(config, dict), fields.at("config"), "an object of settings", config)
    _expect(
        isinstance(config.get("model"), dict), fields.at("config.model"), "an object of settings", config.get("model")
    )
    _expect(isinstance(meta, dict), fields.at("meta"), "an object", meta)
    _expect(meta.get("kind") in KINDS, fields.at("meta.kind"), " or ".join(map(repr, KINDS)), meta.get("kind"))
    for key in ("step", "total_steps"):
        if key in data:
            _expect(_is_int(data[key]) and data[key] >= 0, fields.at(key), "a step number", data[key])
    if meta["kind"] == "finetune":
        _expect(isinstance(meta.get("task"), str), fields.at("meta.task"), "a task name", meta.get("task"))
        state_of_task = meta.get("task_state")
        _expect(
            state_of_task is None or isinstance(state_of_task, dict),
            fields.at("meta.task_state"),
            "an object",
            state_of_task,
        )
    if "corpus" in meta:
        _expect(isinstance(meta["corpus"], str), fields.at("meta.corpus"), "a corpus name", meta["corpus"])
    bert = meta.get("bert_config")
    where_bert = f"{fields.file}: {fields.bert.rstrip('.') or 'the top level'}"
    _expect(bert is None or isinstance(bert, dict), where_bert, "a BertConfig object", bert)
    try:
        model_cfg = from_dict(ModelConfig, config["model"], f"{fields.prefix}config.model.")
    except ConfigError as exc:
        raise CorruptCheckpoint(f"{fields.file}: {exc}") from None
    if bert is not None:
        for key in BERT_SIZES:
            value = bert.get(key)
            _expect(_is_int(value) and value >= 1, f"{fields.file}: {fields.bert}{key}", "a positive integer", value)
        if bert["hidden_size"] % bert["num_attention_heads"]:
            raise CorruptCheckpoint(
                f"{fields.file}: {fields.bert}num_attention_heads: {bert['num_attention_heads']} does not divide "
                f"{fields.bert}hidden_size {bert['hidden_size']}"
            )
    _check_tensors(state, model_cfg, bert, meta["kind"], fields)


def _check_tensors(
    state: Mapping[str, torch.Tensor], model_cfg: Any, bert: dict[str, Any] | None, kind: str, fields: _Fields
) -> None:
    """Every tensor against the model the settings build (a fine-tuned model's encoder: its head is the task's,
    checked by `load_weights` when the task builds it)."""
    settings = fields.settings
    model_cfg = dataclasses.replace(model_cfg, init="none")  # shapes only: nothing is read or downloaded
    described = bert if bert is not None else random_bert_config(model_cfg).to_dict()  # (older checkpoints)
    try:
        with torch.device("meta"):
            if kind == "pretrain":
                expected = build_pretraining_model(Config(model=model_cfg), bert_config=described).state_dict()
            else:
                encoder, _ = build_encoder(model_cfg, bert_config=described)
                expected = {f"encoder.{k}": v for k, v in encoder.state_dict().items()}
    except Exception as exc:  # settings no encoder can be built from
        reason = (str(exc).strip().splitlines() or [""])[0][:160]
        raise CorruptCheckpoint(
            f"{fields.file}: {settings} describe no encoder ({exc.__class__.__name__}: {reason})"
        ) from None
    check_state(
        fields.weights or fields.file, state, expected, settings, prefix="" if kind == "pretrain" else "encoder."
    )


def check_state(
    file: str, state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], source: str, prefix: str = ""
) -> None:
    """The tensors of `state` (those under `prefix`) have the names and shapes of `expected`, the state of the
    model built from `source`; else CorruptCheckpoint naming `file` and the first tensor that does not fit."""
    wanted = {k: tuple(v.shape) for k, v in expected.items() if k.startswith(prefix)}
    for key, shape in wanted.items():
        if key not in state:
            raise CorruptCheckpoint(f"{file}: no tensor {key} (the model built from {source} has one)")
        if tuple(state[key].shape) != shape:
            raise CorruptCheckpoint(
                f"{file}: tensor {key} has shape {tuple(state[key].shape)}; expected {shape} (from {source})"
            )
    extra = sorted(k for k in state if k.startswith(prefix) and k not in wanted)
    if extra:
        raise CorruptCheckpoint(f"{file}: unexpected tensor {extra[0]} (not in the model built from {source})")


def load_weights(module: torch.nn.Module, state: Mapping[str, torch.Tensor], file: Path, source: str) -> None:
    """`module.load_state_dict(state)` after `check_state`: a tensor that does not fit is one error naming it
    and the file that holds it (`file`: a checkpoint, or an export's model.safetensors)."""
    where = file / EXPORT_WEIGHTS if is_export(file) else file
    try:
        check_state(str(where), state, module.state_dict(), source)
    except CorruptCheckpoint as exc:
        raise CorruptCheckpoint(f"{exc}; the file is damaged, or was made for another version of the task") from None
    module.load_state_dict(state)


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
