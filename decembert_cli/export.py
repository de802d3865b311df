"""Models in the Hugging Face ecosystem's format: `decembert export` and `load_pretrained`.

An exported folder holds

    model.safetensors   the weights (no pickle): the pre-training model (encoder, MLM, VTM heads) or
                        a fine-tuned task model (encoder and the task's head)
    config.json         the encoder's BertConfig, and under "decembert" the resolved run config
                        (video settings, feature widths, the task's settings), the run metadata (the
                        task, its plugin version and state, e.g. the QA answer vocabulary) and the step
    vocab.txt, tokenizer.json, tokenizer_config.json, special_tokens_map.json   the tokenizer
    README.md           a model card: training data, config, metrics and the command that made it

It can be pushed to the Hub as it is. `load_pretrained(FOLDER or HUB_ID)` reads it back with
safetensors; `finetune --checkpoint` and `evaluate --checkpoint` take it as they take a checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
import yaml
from huggingface_hub import snapshot_download
from safetensors.torch import save_file
from torch import nn

from decembert_cli import checkpoint as ckpt
from decembert_cli.config import Config
from decembert_cli.config.loader import from_dict
from decembert_cli.engine.finetune import TaskModel, config_class, load_task
from decembert_cli.engine.run_log import last_validation, read_evaluation
from decembert_cli.errors import ConfigError, DecembertError
from decembert_cli.inference import Pretrained
from decembert_cli.io import FOLDER_MODE, METRICS_LOG, atomic_write_text, user_path
from decembert_cli.model import build_encoder, build_pretraining_model, build_tokenizer
from decembert_cli.model.weights import resolve_tokenizer


def _config_and_model(payload: dict[str, Any], file: Path) -> tuple[Any, nn.Module, nn.Module, Any]:
    """(config, model, encoder, task) built from the payload of checkpoint `file` (checked by load_checkpoint)
    and loaded with its weights."""
    meta = payload.get("meta", {})
    kind = meta.get("kind")
    task: Any = None
    try:
        if kind == "pretrain":
            config: Any = from_dict(Config, payload["config"], "config.")
        elif kind == "finetune":
            task_cls, _info = load_task(meta["task"])
            config = from_dict(config_class(task_cls), payload["config"], "config.")
            task = task_cls(config.task, state=meta.get("task_state"))
        else:
            raise DecembertError(f"a {kind or 'unknown'} checkpoint cannot be loaded as a model")
    except ConfigError as exc:  # name the file: the setting is the checkpoint's, not the user's
        raise DecembertError(f"{file}: {exc}") from None
    # the weights are the checkpoint's: nothing is downloaded; the tokenizer is the one it was trained with
    model_cfg = dataclasses.replace(config.model, init="none", tokenizer=resolve_tokenizer(config.model))
    config = dataclasses.replace(config, model=model_cfg)
    model: nn.Module
    if kind == "pretrain":
        model = build_pretraining_model(config, bert_config=meta.get("bert_config"))
        encoder = model.encoder
    else:
        encoder, _ = build_encoder(config.model, bert_config=meta.get("bert_config"))
        model = TaskModel(encoder, task.head(encoder))
    ckpt.load_weights(model, payload["model"], file, "its settings and its task's state")
    return config, model, encoder, task


def load_pretrained(source: str | Path, *, device: str | torch.device = "cpu") -> Pretrained:
    """A model from an exported folder, a Hub id of one (downloaded once into the Hub cache), a
    checkpoint file or a run folder; in eval mode on `device`."""
    path = Path(source).expanduser()
    if not path.exists():
        if str(source).count("/") != 1 or str(source).startswith((".", "/", "~")):
            raise DecembertError(
                f"{source}: no such folder or file (give an exported folder, a Hub id or a checkpoint)"
            )

        path = Path(snapshot_download(str(source)))
    file = ckpt.resolve(path)
    config, model, encoder, task = _config_and_model(ckpt.load_checkpoint(file), file)
    model.to(device).eval()
    kind = "pretrain" if task is None else "finetune"
    return Pretrained(model, encoder, build_tokenizer(config.model), config, kind, task, str(file))


def export_model(source: Path, out: Path, command: str = "") -> Path:
    """Write `source` (a checkpoint file or a run folder's newest checkpoint) as an exported folder `out`.
    `out` must not exist yet: it is written beside it and renamed into place when complete."""
    out = user_path(out)
    if out.exists() or out.is_symlink():
        raise DecembertError(f"--out {out} exists; choose a new folder (an export never overwrites one)")
    file = ckpt.resolve(source)
    payload = ckpt.load_checkpoint(file)
    config, model, _encoder, _task = _config_and_model(payload, file)  # refuses what cannot be loaded back
    meta = payload.get("meta", {})
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        # a folder of our own beside `out` (random suffix: never a user's), renamed into place when complete
        partial = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".partial"))
    except OSError as exc:
        raise DecembertError(f"cannot write into {out.parent}: {exc.strerror}; choose a writable --out") from None
    try:
        # tied weights (MLM decoder = word embeddings) are stored once per name: safetensors refuses shared storage
        state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(partial / ckpt.EXPORT_WEIGHTS), metadata={"format": "pt"})
        build_tokenizer(config.model).save_pretrained(str(partial))
        described = {
            **(meta.get("bert_config") or {}),
            "architectures": ["DecembertForPretraining" if meta.get("kind") == "pretrain" else "DecembertTaskModel"],
            "decembert": {
                "format": ckpt.EXPORT_FORMAT,
                "kind": meta.get("kind"),
                "step": int(payload.get("step", 0)),
                "config": payload["config"],
                "meta": meta,
            },
        }
        atomic_write_text(partial / "config.json", json.dumps(described, indent=2) + "\n")
        atomic_write_text(partial / "README.md", model_card(file, payload, command))
        if out.exists() or out.is_symlink():  # made by someone else meanwhile: keep theirs
            raise DecembertError(f"--out {out} appeared while exporting; nothing was written there")
        os.chmod(partial, FOLDER_MODE)  # mkdtemp makes it private
        partial.rename(out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return out


def _last_validation(file: Path) -> dict[str, Any]:
    """The run's last validation metrics and its evaluations (the run folder of checkpoint `file`), checked."""
    run = file.parent.parent
    if not (run / METRICS_LOG).exists():
        return {}
    found = last_validation(run)
    for path in sorted(run.glob("eval-*/metrics.json")):
        record = read_evaluation(path)
        found[f"{record.get('split')} ({path.parent.name})"] = record["metrics"]
    return found


def model_card(file: Path, payload: dict[str, Any], command: str) -> str:
    """The folder's README.md: what the model is, what it was trained on, its config and metrics."""
    meta, config = payload.get("meta", {}), payload["config"]
    kind = meta.get("kind")
    if kind == "pretrain":
        what = f"DeCEMBERT pre-trained on the `{meta.get('corpus')}` corpus"
        data = {k: config["data"][k] for k in ("root", "neighbours", "use_dense", "mask_prob", "negative_prob")}
    else:
        what = f"DeCEMBERT fine-tuned for `{meta.get('task')}` ({meta.get('task_package')} {meta.get('task_version')})"
        data = {k: v for k, v in config.get("task", {}).items() if k in ("root", "train_fraction", "answers")}
    metrics = _last_validation(file)
    lines = [
        "---",
        "library_name: decembert",
        "tags: [video-text, decembert, " + ("pretraining" if kind == "pretrain" else str(meta.get("task"))) + "]",
        "---",
        "",
        f"# {what}",
        "",
        f"Step {payload.get('step', 0)} of `{file}`, exported by `decembert export`.",
        "",
        "```python",
        "from decembert_cli.api import load_pretrained",
        'model = load_pretrained("THIS_FOLDER_OR_HUB_ID")',
        "```",
        "",
        "## Training data",
        "",
        "```yaml",
        yaml.safe_dump(data, sort_keys=False).strip(),
        "```",
        "",
        "## Metrics",
        "",
        "```json",
        json.dumps(metrics, indent=2) if metrics else "(none recorded next to the checkpoint)",
        "```",
        "",
        "## Config",
        "",
        "```yaml",
        yaml.safe_dump(config, sort_keys=False).strip(),
        "```",
        "",
        "## Made by",
        "",
        f"`{command or 'decembert export'}`",
        "",
    ]
    return "\n".join(lines)
