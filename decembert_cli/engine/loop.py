"""The training loop shared by pre-training and fine-tuning.

The loop trains any module that follows this contract (DecembertForPretraining does):
- `module.set_step(step, total_steps)`: called before each optimiser step (1-based), e.g. for a
  loss weight's warm-up;
- `module.target_counts(batch) -> {loss name: count}`: targets per loss, known before the forward;
- `module(batch, normalisers=...)` returns an object with `losses` (batch means and "total"),
  `sums`, `counts`, `weights` (per loss) and `stats` (summable tensors);
- `module.metrics(totals) -> {metric: value}` turns stats summed over a validation pass into metrics.

Each loss is divided by its count over the whole global batch (all processes, all accumulation
steps), so a global batch gives the same update however it is split.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from decembert_cli import checkpoint as ckpt
from decembert_cli.config.schema import TrainConfig
from decembert_cli.engine.distributed import DistInfo, all_sum, barrier, gather_objects, setup
from decembert_cli.engine.optim import build_optimizer, build_scheduler
from decembert_cli.engine.sampler import StepBatches
from decembert_cli.errors import DecembertError
from decembert_cli.io import METRICS_LOG, append_jsonl, atomic_write_text, read_jsonl
from decembert_cli.precision import autocast, autocast_dtype


@dataclass
class Job:
    """What to train and where its run lives."""

    model: nn.Module  # follows the contract in this module's docstring
    train_data: torch.utils.data.Dataset  # items keyed by (epoch, index)
    collate: Callable[[list[Any]], Any]  # samples -> batch (with a .to(device))
    config: TrainConfig
    seed: int
    run_dir: Path
    saved_config: dict[str, Any]  # the resolved config, stored in every checkpoint
    meta: dict[str, Any] = field(default_factory=dict)  # e.g. {"kind": "pretrain", "corpus": "sample"}
    val_data: torch.utils.data.Dataset | None = None
    val_keys: Sequence[Any] = ()  # validation item keys (the whole list; sharded by rank here)
    workers: int = 0  # data-loading worker processes per rank
    eval_kwargs: dict[str, Any] = field(default_factory=dict)  # extra forward arguments when validating
    diagnose: Callable[[dict[str, float]], str | None] | None = (
        None  # validation metrics -> a warning to log and show, or None
    )


@dataclass
class TrainResult:
    steps: int  # optimiser steps done (including those before a resume)
    total_steps: int
    validation: dict[str, float]  # metrics of the last validation ({} if none)
    samples_per_s: float  # over this invocation's steps, data loading included (validation and checkpoints not)
    data_wait: float  # share of this invocation's step time spent waiting for data
    checkpoint: Path | None


def _worker_init(_worker_id: int) -> None:
    torch.set_num_threads(1)


def _loader(
    data: torch.utils.data.Dataset, batches: Any, collate: Callable, workers: int, pin: bool
) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        data,
        batch_sampler=batches,
        collate_fn=collate,
        num_workers=workers,
        pin_memory=pin,
        worker_init_fn=_worker_init if workers else None,
        prefetch_factor=4 if workers else None,
        generator=torch.Generator(),  # its own: creating a loader must not draw from the global RNG (exact resume)
    )


def _progress(enabled: bool):  # type: ignore[no-untyped-def]
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TextColumn("{task.fields[rate]:.1f} samples/s"),
        TimeRemainingColumn(),
        disable=not enabled,
    )


class _Log:
    """The run's JSONL metrics log (main process only)."""

    def __init__(self, path: Path, enabled: bool) -> None:
        self.path = path
        self.enabled = enabled

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
        if self.enabled:
            append_jsonl(self.path, record)


def check_run_dir(run_dir: Path, resume: bool) -> Path | None:
    """The checkpoint to resume from (None for a fresh run); refuses to overwrite an existing run."""
    found = ckpt.list_checkpoints(run_dir)
    if resume:
        if not found and not (run_dir / METRICS_LOG).exists():
            raise DecembertError(
                f"--resume: {run_dir} has no checkpoint to resume from (looked in {ckpt.checkpoint_dir(run_dir)})"
            )
        return found[-1] if found else None  # a run stopped before its first checkpoint starts again
    if found or (run_dir / METRICS_LOG).exists():
        raise DecembertError(f"{run_dir} already holds a run; pass --resume to continue it, or choose another --out")
    return None


def evaluate(
    module: nn.Module,
    data: torch.utils.data.Dataset,
    keys: Sequence[Any],
    collate: Callable,
    *,
    batch_size: int,
    device: torch.device,
    dtype: torch.dtype | None,
    dist_info: DistInfo,
    workers: int = 0,
    forward_kwargs: dict[str, Any] | None = None,
) -> dict[str, float]:
    """Metrics over `keys` (sharded across processes, stats summed over all of them)."""
    mine = list(keys)[dist_info.rank :: dist_info.world]
    batches = [mine[i : i + batch_size] for i in range(0, len(mine), batch_size)]
    totals: dict[str, torch.Tensor] = {}
    was_training = module.training
    module.eval()
    with torch.no_grad():
        for batch in _loader(data, batches, collate, workers, device.type == "cuda"):
            batch = batch.to(device)
            with autocast(device, dtype):
                out = module(batch, **(forward_kwargs or {}))
            for name, value in out.stats.items():
                totals[name] = totals.get(name, torch.zeros((), device=device, dtype=torch.float64)) + value.double()
    module.train(was_training)
    # every process must join the same collective, even one that had no validation keys
    names = gather_objects(sorted(totals), dist_info.world)
    union = sorted(set().union(*names))
    summed = all_sum(
        {n: totals.get(n, torch.zeros((), device=device, dtype=torch.float64)) for n in union}, dist_info.world
    )
    return module.metrics({k: float(v) for k, v in summed.items()})


def train(
    job: Job,
    *,
    resume: bool = False,
    stop_after: int | None = None,
    on_log: Callable[[dict[str, Any]], None] | None = None,
    on_validation: Callable[[int, dict[str, float]], None] | None = None,
    progress: bool = True,
) -> TrainResult:
    """Run (or continue) the job. `stop_after`: leave after that many steps with a checkpoint, as an
    interruption right after a checkpoint would (used by the resume tests). `progress`: show a rich
    progress bar on the main process."""
    cfg = job.config
    dist_info, device = setup(cfg.device)
    main = dist_info.main
    run_dir = job.run_dir
    resume_from = check_run_dir(run_dir, resume)
    barrier(dist_info.world)  # every process has checked before the main one writes anything
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if orphans := ckpt.remove_orphans(run_dir):
            print(f"note: removed {orphans} unfinished checkpoint file(s) of an interrupted write", file=sys.stderr)
    dtype = autocast_dtype(cfg.precision, device)
    model = job.model.to(device)
    optimizer = build_optimizer(model, cfg)
    size = len(job.train_data)  # type: ignore[arg-type]
    if cfg.batch_size < 1 or cfg.accumulation < 1:
        raise DecembertError("train.batch_size and train.accumulation must be at least 1")
    steps_per_epoch = size // cfg.batch_size
    total_steps = cfg.max_steps if cfg.max_steps > 0 else max(1, math.ceil(cfg.epochs * max(1, steps_per_epoch)))
    scheduler = build_scheduler(optimizer, total_steps, cfg.warmup)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    log = _Log(run_dir / METRICS_LOG, main)

    start = 0
    found = ckpt.newest_intact(run_dir) if resume_from is not None else None
    if found is not None:
        resume_from, state, notes = found
        for note in notes if main else []:
            print(f"note: {note}", file=sys.stderr)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        start = int(state["step"])
        if int(state["total_steps"]) != total_steps:
            raise DecembertError(
                f"{resume_from} was made for {state['total_steps']} steps but the config now gives {total_steps}; "
                "resume with the run's own config (its config.yaml)"
            )
        rngs = state["rng"]
        if len(rngs) == dist_info.world:
            ckpt.set_rng_state(rngs[dist_info.rank])
        else:
            torch.manual_seed(job.seed + 7919 * start + dist_info.rank)
        torn = log.keep_until(start)
    else:
        torn = log.keep_until(0)  # (a resumed run that never reached a checkpoint starts again from step 0)
    if torn:
        print(f"note: {torn}", file=sys.stderr)
        torch.manual_seed(job.seed + dist_info.rank)

    wrapped: nn.Module = model
    if dist_info.world > 1:
        wrapped = nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)

    batches = StepBatches(
        size,
        global_batch=cfg.batch_size,
        world=dist_info.world,
        rank=dist_info.rank,
        accumulation=cfg.accumulation,
        seed=job.seed,
        start_step=start,
        total_steps=total_steps if stop_after is None else min(total_steps, stop_after),
    )
    end_step = batches.total_steps
    loader = iter(_loader(job.train_data, batches, job.collate, job.workers, device.type == "cuda"))
    micro_size = cfg.batch_size // dist_info.world // cfg.accumulation

    def validate(step: int) -> dict[str, float]:
        if job.val_data is None or not job.val_keys:
            return {}
        metrics = evaluate(
            model,
            job.val_data,
            job.val_keys,
            job.collate,
            batch_size=micro_size,
            device=device,
            dtype=dtype,
            dist_info=dist_info,
            workers=job.workers,
            forward_kwargs=job.eval_kwargs,
        )
        warning = job.diagnose(metrics) if job.diagnose is not None else None
        log.write({"step": step, "split": "val", **metrics, **({"warning": warning} if warning else {})})
        if warning and main:
            bar.console.print(f"[yellow]warning at step {step}:[/] {warning}", highlight=False)
        bar.update(task, description=f"{description} [yellow](see warning)[/]" if warning else description)
        if main and on_validation is not None:
            on_validation(step, metrics)
        return metrics

    def save(step: int) -> Path:
        rngs = gather_objects(ckpt.rng_state(), dist_info.world)
        path = ckpt.checkpoint_path(run_dir, step)
        if main:
            ckpt.save_checkpoint(
                path,
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(),
                    "step": step,
                    "total_steps": total_steps,
                    "rng": rngs,
                    "config": job.saved_config,
                    "meta": {**job.meta, "world": dist_info.world},
                },
            )
            ckpt.prune(run_dir, cfg.keep_checkpoints)
        barrier(dist_info.world)
        return path

    params = [p for p in model.parameters() if p.requires_grad]
    interval_sums: dict[str, torch.Tensor] = {}
    interval_counts: dict[str, torch.Tensor] = {}
    weights: dict[str, float] = {}
    wait = busy = 0.0
    samples_done = 0
    validation: dict[str, float] = {}
    last_path: Path | None = None
    model.train()
    step = start
    bar = _progress(main and progress)
    description = "pre-training" if job.meta.get("kind") == "pretrain" else "training"
    task = bar.add_task(description, total=total_steps, completed=start, loss=float("nan"), rate=0.0)
    with bar:
        for step in range(start + 1, end_step + 1):
            tick = time.perf_counter()
            try:
                micro = [next(loader).to(device) for _ in range(cfg.accumulation)]
            except StopIteration:  # pragma: no cover - the sampler yields exactly the steps asked for
                break
            loaded = time.perf_counter()
            wait += loaded - tick
            model.set_step(step, total_steps)
            local_counts: dict[str, torch.Tensor] = {}
            for b in micro:
                for name, n in model.target_counts(b).items():
                    local_counts[name] = local_counts.get(name, 0) + n
            global_counts = all_sum(local_counts, dist_info.world)
            normalisers = {k: (v / dist_info.world).float() for k, v in global_counts.items()}
            for m, b in enumerate(micro):
                sync = dist_info.world > 1 and m < len(micro) - 1
                with wrapped.no_sync() if sync else contextlib.nullcontext():  # type: ignore[operator]
                    with autocast(device, dtype):
                        out = wrapped(b, normalisers=normalisers)
                    scaler.scale(out.losses["total"]).backward()
                weights = out.weights
                for name, value in out.sums.items():
                    interval_sums[name] = interval_sums.get(name, 0) + value.detach().double()
            for name, value in global_counts.items():
                interval_counts[name] = interval_counts.get(name, 0) + value
            grad_norm = None
            if cfg.clip_grad > 0:
                scaler.unscale_(optimizer)
                grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            lr = scheduler.get_last_lr()[0]
            scheduler.step()
            samples_done += cfg.batch_size
            busy += time.perf_counter() - tick

            if step % cfg.log_every == 0 or step == end_step:
                sums = all_sum(interval_sums, dist_info.world)
                losses = {k: float(sums[k] / interval_counts[k].clamp(min=1)) for k in sums if k in interval_counts}
                total = sum(weights.get(k, 0.0) * v for k, v in losses.items() if weights.get(k, 0.0) > 0)
                record = {
                    "step": step,
                    "epoch": round(step / max(1, steps_per_epoch), 4),
                    "lr": lr,
                    "loss": total,
                    **{f"loss_{k}": v for k, v in losses.items()},
                    **{f"weight_{k}": w for k, w in weights.items()},  # e.g. lambda during its warm-up
                    "grad_norm": float(grad_norm) if grad_norm is not None else None,
                    "samples_per_s": samples_done / max(1e-9, busy),
                    "data_wait": wait / max(1e-9, busy),
                }
                log.write(record)
                if main and on_log is not None:
                    on_log(record)
                interval_sums, interval_counts = {}, {}
                bar.update(task, loss=total)
            bar.update(task, completed=step, rate=samples_done / max(1e-9, busy))
            if cfg.validate_every > 0 and step % cfg.validate_every == 0 and step != total_steps:
                validation = validate(step)
            if (cfg.checkpoint_every > 0 and step % cfg.checkpoint_every == 0) or step == end_step:
                last_path = save(step)
    if step == total_steps and step > start:
        validation = validate(step)
    return TrainResult(
        steps=step,
        total_steps=total_steps,
        validation=validation,
        samples_per_s=samples_done / max(1e-9, busy),
        data_wait=wait / max(1e-9, busy),
        checkpoint=last_path,
    )
