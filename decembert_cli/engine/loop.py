"""The training loop shared by pre-training and fine-tuning (the paper's Algorithm).

It trains an nn.Module that is a `decembert_cli.protocols.TrainableModel` (DecembertForPretraining,
fine-tuning's TaskModel) from the outputs its forward returns, `decembert_cli.protocols.ModelOutput`s.
Each loss is divided by its count over the whole global batch (all processes, all accumulation
steps), so a global batch gives the same update however it is split.
"""

from __future__ import annotations

import contextlib
import math
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn

from decembert_cli import checkpoint as ckpt
from decembert_cli.config.schema import TrainConfig
from decembert_cli.engine.distributed import DistInfo, all_sum, barrier, gather_objects, setup
from decembert_cli.engine.optim import build_optimizer, build_scheduler
from decembert_cli.engine.run_log import PERCENT, RunLog
from decembert_cli.engine.sampler import StepBatches
from decembert_cli.errors import DecembertError
from decembert_cli.io import METRICS_LOG, folder_lock
from decembert_cli.model.encoder import DecembertEncoder
from decembert_cli.model.flops import peak_flops
from decembert_cli.precision import autocast, autocast_dtype
from decembert_cli.protocols import ModelOutput, TaskDataset, TrainableModel


@dataclass
class Job:
    """What to train and where its run lives."""

    model: nn.Module  # a TrainableModel (decembert_cli.protocols)
    train_data: TaskDataset  # items keyed by (epoch, index)
    collate: Callable[[list[Any]], Any]  # samples -> batch (with a .to(device))
    config: TrainConfig
    seed: int
    run_dir: Path
    saved_config: dict[str, Any]  # the resolved config, stored in every checkpoint
    meta: dict[str, Any] = field(default_factory=dict)  # e.g. {"kind": "pretrain", "corpus": "sample"}
    val_data: TaskDataset | None = None
    val_keys: Sequence[Any] = ()  # validation item keys (the whole list; sharded by rank here)
    # instead of summing the model's stats over val_data: (model, device) -> metrics, run on the main process
    # in float32 while the others wait (fine-tuning: the task's own metric, as `evaluate` computes it)
    validate: Callable[[nn.Module, torch.device], dict[str, float]] | None = None
    workers: int = 0  # data-loading worker processes per rank
    eval_kwargs: dict[str, Any] = field(default_factory=dict)  # extra forward arguments when validating
    # validation metrics -> a warning to log and show, or None
    diagnose: Callable[[dict[str, float]], str | None] | None = None
    # pictures of a validation for TensorBoard and W&B: (model, step, folder, metrics) -> tag -> PNG written into
    # the folder; given by the command (e.g. viz.attention.validation_pictures): the engine draws nothing itself
    pictures: Callable[[nn.Module, int, Path, dict[str, float]], dict[str, Path]] | None = None
    # a (CPU) batch -> (training FLOPs, real tokens), for tokens/s and MFU in the log (model/flops.py)
    cost: Callable[[Any], tuple[float, int]] | None = None
    # estimated length of every training item, for length-aware batching (train.bucket_batches)
    lengths: Callable[[], Any] | None = None


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


def _loader(data: TaskDataset, batches: Any, collate: Callable, workers: int, pin: bool) -> torch.utils.data.DataLoader:
    # a map-style dataset is all a DataLoader needs: __getitem__ and __len__
    return torch.utils.data.DataLoader(
        cast("torch.utils.data.Dataset[Any]", data),
        batch_sampler=batches,
        collate_fn=collate,
        num_workers=workers,
        pin_memory=pin,
        worker_init_fn=_worker_init if workers else None,
        prefetch_factor=4 if workers else None,
        generator=torch.Generator(),  # its own: creating a loader must not draw from the global RNG (exact resume)
    )


def _progress(enabled: bool) -> Any:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TextColumn("{task.fields[rate]:.1f} samples/s"),
        TextColumn("{task.fields[mfu]}"),
        TimeRemainingColumn(),
        disable=not enabled,
    )


def run_folder_lock(run_dir: Path, main: bool) -> contextlib.AbstractContextManager[None]:
    """The run folder's one-writer lock, held by the main process for the whole run (other processes of a
    distributed run write nothing there)."""
    return folder_lock(run_dir) if main else contextlib.nullcontext()


def check_run_dir(run_dir: Path, resume: bool, *, new: bool = False) -> Path | None:
    """The checkpoint to resume from (None for a fresh run); refuses to overwrite an existing run, and (`new`:
    before a fresh run writes its first file) to start one in a folder that holds anything else, so a run
    never writes over a user's files."""
    if run_dir.exists() and not run_dir.is_dir():
        raise DecembertError(f"--out {run_dir} is a file; name a folder for the run")
    found = ckpt.list_checkpoints(run_dir)
    if resume:
        if not found and not (run_dir / METRICS_LOG).exists():
            raise DecembertError(
                f"--resume: {run_dir} has no checkpoint to resume from (looked in {ckpt.checkpoint_dir(run_dir)})"
            )
        return found[-1] if found else None  # a run stopped before its first checkpoint starts again
    if found or (run_dir / METRICS_LOG).exists():
        raise DecembertError(f"{run_dir} already holds a run; pass --resume to continue it, or choose another --out")
    others = sorted(p.name for p in run_dir.iterdir() if not p.name.startswith(".decembert")) if new else []
    if others:
        shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        raise DecembertError(
            f"--out {run_dir} holds files that are not a run ({shown}); "
            "a run starts in a new or empty folder: choose another --out"
        )
    return None


def evaluate(
    module: nn.Module,
    data: TaskDataset,
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
                out: ModelOutput = module(batch, **(forward_kwargs or {}))
            for name, value in out.stats.items():
                totals[name] = totals.get(name, torch.zeros((), device=device, dtype=torch.float64)) + value.double()
    module.train(was_training)
    # every process must join the same collective, even one that had no validation keys
    names = gather_objects(sorted(totals), dist_info.world)
    union = sorted(set().union(*names))
    summed = all_sum(
        {n: totals.get(n, torch.zeros((), device=device, dtype=torch.float64)) for n in union}, dist_info.world
    )
    return cast(TrainableModel, module).metrics({k: float(v) for k, v in summed.items()})


@dataclass
class _Run:
    """One invocation of `train`: what its set-up built, and where it shows and reports progress."""

    job: Job
    dist_info: DistInfo
    device: torch.device
    dtype: torch.dtype | None  # autocast's, None for float32
    model: nn.Module  # the job's model on the device
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    log: RunLog
    peak: float | None  # the device's dense peak FLOP/s (None: unknown, no MFU)
    steps_per_epoch: int
    total_steps: int  # of the whole run
    start: int = 0  # the step resumed after (0: from the beginning)
    end_step: int = 0  # the last step of this invocation (total_steps, or stop_after)
    wrapped: nn.Module = field(init=False)  # the model, or it in DistributedDataParallel with several processes
    params: list[nn.Parameter] = field(default_factory=list)  # those trained (gradient clipping)
    loader: Iterator[Any] = field(default_factory=lambda: iter(()))  # micro-batches from the step after `start`
    bar: Any = None  # the rich progress bar (disabled but updated off the main process)
    bar_task: Any = None
    description: str = "training"
    on_log: Callable[[dict[str, Any]], None] | None = None
    on_validation: Callable[[int, dict[str, float]], None] | None = None

    def __post_init__(self) -> None:
        self.wrapped = self.model

    @property
    def trainee(self) -> TrainableModel:
        """The model as the loop's contract sees it."""
        return cast(TrainableModel, self.model)


@dataclass
class _Interval:
    """What is summed between two log lines: loss sums (this process) and target counts (all processes)."""

    sums: dict[str, torch.Tensor] = field(default_factory=dict)
    counts: dict[str, torch.Tensor] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)  # of the last forward


@dataclass
class _Clock:
    """This invocation's optimiser steps: time spent in them (data loading included), waiting for data, samples."""

    busy: float = 0.0
    wait: float = 0.0
    samples: int = 0
    flops: float = 0.0  # this process's training FLOPs (Job.cost)
    tokens: int = 0  # this process's real (non-padding) tokens

    def rate(self) -> float:
        return self.samples / max(1e-9, self.busy)

    def mfu(self, peak: float | None) -> float | None:
        """Model FLOPs utilisation of this process's device: useful FLOPs/s over its peak."""
        return self.flops / max(1e-9, self.busy) / peak if peak and self.flops else None

    def wait_share(self) -> float:
        return self.wait / max(1e-9, self.busy)


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
    run = _set_up(job, resume, stop_after, progress)
    run.on_log, run.on_validation = on_log, on_validation
    interval, clock = _Interval(), _Clock()
    validation: dict[str, float] = {}
    last_path: Path | None = None
    run.model.train()
    step = run.start
    with run.bar, contextlib.closing(run.log):
        for step in range(run.start + 1, run.end_step + 1):
            tick = time.perf_counter()
            try:
                micro = [next(run.loader) for _ in range(cfg.accumulation)]
            except StopIteration:  # pragma: no cover - the sampler yields exactly the steps asked for
                break
            clock.wait += time.perf_counter() - tick
            if job.cost is not None:  # counted on the CPU copy: no synchronisation
                for flops, tokens in map(job.cost, micro):
                    clock.flops += flops
                    clock.tokens += tokens
            micro = [b.to(run.device) for b in micro]
            lr, grad_norm = _optimiser_step(run, step, micro, interval)
            clock.samples += cfg.batch_size
            clock.busy += time.perf_counter() - tick
            if step % cfg.log_every == 0 or step == run.end_step:
                _log(run, step, interval, lr, grad_norm, clock)
                interval = _Interval()
            mfu = clock.mfu(run.peak)
            run.bar.update(run.bar_task, completed=step, rate=clock.rate(), mfu=f"MFU {100 * mfu:.0f}%" if mfu else "")
            if cfg.validate_every > 0 and step % cfg.validate_every == 0 and step != run.total_steps:
                validation = _validate(run, step)
            if (cfg.checkpoint_every > 0 and step % cfg.checkpoint_every == 0) or step == run.end_step:
                last_path = _save(run, step)
        if step == run.total_steps and step > run.start:
            validation = _validate(run, step)
    return TrainResult(
        steps=step,
        total_steps=run.total_steps,
        validation=validation,
        samples_per_s=clock.rate(),
        data_wait=clock.wait_share(),
        checkpoint=last_path,
    )


def _set_up(job: Job, resume: bool, stop_after: int | None, progress: bool) -> _Run:
    """The process group, the run folder, the model with its optimiser and schedule on the device, their
    state when resuming, the data from the step after it, and the progress bar."""
    cfg = job.config
    check_compile_backend(cfg)
    dist_info, device = setup(cfg.device)
    resume_from = check_run_dir(job.run_dir, resume)
    barrier(dist_info.world)  # every process has checked before the main one writes anything
    if dist_info.main:
        job.run_dir.mkdir(parents=True, exist_ok=True)
        if orphans := ckpt.remove_orphans(job.run_dir):
            print(f"note: removed {orphans} unfinished checkpoint file(s) of an interrupted write", file=sys.stderr)
    dtype = autocast_dtype(cfg.precision, device)
    model = job.model.to(device)
    optimizer = build_optimizer(model, cfg, fused=device.type == "cuda")
    size = len(job.train_data)
    if cfg.batch_size < 1 or cfg.accumulation < 1:
        raise DecembertError("train.batch_size and train.accumulation must be at least 1")
    steps_per_epoch = size // cfg.batch_size
    total_steps = cfg.max_steps if cfg.max_steps > 0 else max(1, math.ceil(cfg.epochs * max(1, steps_per_epoch)))
    scheduler = build_scheduler(optimizer, total_steps, cfg.warmup)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    log = RunLog(job.run_dir, dist_info.main, cfg.log_to)
    peak = peak_flops(device, dtype, cfg.peak_tflops)
    run = _Run(
        job, dist_info, device, dtype, model, optimizer, scheduler, scaler, log, peak, steps_per_epoch, total_steps
    )
    run.start = _resume(run, resume_from)
    run.log.open(run.start, job.saved_config)
    if dist_info.world > 1:
        run.wrapped = nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    if cfg.compile:
        run.wrapped = cast(nn.Module, torch.compile(run.wrapped, dynamic=True, backend=cfg.compile_backend))
    if dist_info.main:
        print(f"note: {_path_note(model, device, cfg.compile, peak)}", file=sys.stderr)
        if cfg.bucket_batches and job.lengths is None:
            print("note: train.bucket_batches is ignored: this dataset gives no item lengths", file=sys.stderr)
    batches = StepBatches(
        size,
        global_batch=cfg.batch_size,
        world=dist_info.world,
        rank=dist_info.rank,
        accumulation=cfg.accumulation,
        seed=job.seed,
        start_step=run.start,
        total_steps=total_steps if stop_after is None else min(total_steps, stop_after),
        lengths=job.lengths() if cfg.bucket_batches and job.lengths is not None else None,
        window=cfg.bucket_batches,
    )
    run.end_step = batches.total_steps
    run.loader = iter(_loader(job.train_data, batches, job.collate, job.workers, device.type == "cuda"))
    run.params = [p for p in model.parameters() if p.requires_grad]
    run.bar = _progress(dist_info.main and progress)
    run.description = "pre-training" if job.meta.get("kind") == "pretrain" else "training"
    run.bar_task = run.bar.add_task(
        run.description, total=total_steps, completed=run.start, loss=float("nan"), rate=0.0, mfu=""
    )
    return run


def check_compile_backend(cfg: TrainConfig) -> None:
    """An unknown torch.compile backend is a config error, found before the run folder is made."""
    known = torch.compiler.list_backends(exclude_tags=())
    if cfg.compile and cfg.compile_backend not in known:
        raise DecembertError(
            f"train.compile_backend = {cfg.compile_backend!r} is not a torch.compile backend; use one of: "
            + ", ".join(known)
        )


def _path_note(model: nn.Module, device: torch.device, compiled: bool, peak: float | None) -> str:
    """What the run chose for this device: the attention path, compilation, the peak FLOP/s behind MFU."""
    encoder = next((m for m in model.modules() if isinstance(m, DecembertEncoder)), None)
    parts = [f"training on {device}"]
    if encoder is not None:
        path = "eager" if encoder.uses_eager(device) else "fused"
        parts.append(f"attention {path}" + (" (model.attention auto)" if encoder.eager is None else ""))
    parts.append("torch.compile" if compiled else "not compiled")
    parts.append(f"MFU against {peak / 1e12:.0f} TFLOP/s" if peak else "no MFU (peak unknown: train.peak_tflops)")
    return ", ".join(parts)


def _resume(run: _Run, resume_from: Path | None) -> int:
    """The step to continue after: the newest intact checkpoint's, whose model, optimiser, schedule,
    scaler and random state are restored (0 without one). The metrics log is cut back to that step."""
    job, dist_info = run.job, run.dist_info
    start = 0
    found = ckpt.newest_intact(job.run_dir) if resume_from is not None else None
    if found is not None:
        resume_from, state, notes = found
        for note in notes if dist_info.main else []:
            print(f"note: {note}", file=sys.stderr)
        run.model.load_state_dict(state["model"])
        run.optimizer.load_state_dict(state["optimizer"])
        run.scheduler.load_state_dict(state["scheduler"])
        run.scaler.load_state_dict(state["scaler"])
        start = int(state["step"])
        if int(state["total_steps"]) != run.total_steps:
            raise DecembertError(
                f"{resume_from} was made for {state['total_steps']} steps but the config now gives "
                f"{run.total_steps}; resume with the run's own config (its config.yaml)"
            )
        rngs = state["rng"]
        if len(rngs) == dist_info.world:
            ckpt.set_rng_state(rngs[dist_info.rank])
        else:
            torch.manual_seed(job.seed + 7919 * start + dist_info.rank)
    # (a resumed run that never reached a checkpoint starts again from step 0)
    torn = run.log.keep_until(start)
    if torn:
        print(f"note: {torn}", file=sys.stderr)
        torch.manual_seed(job.seed + dist_info.rank)
    return start


def _optimiser_step(
    run: _Run, step: int, micro: list[Any], interval: _Interval
) -> tuple[float | torch.Tensor, torch.Tensor | None]:
    """One optimiser step on a global batch, this process's share of it in `micro` micro-batches whose
    gradients accumulate (under DDP they are all-reduced on the last one only); each loss is divided by
    its count over the whole global batch. Returns the step's learning rate and gradient norm (when clipped)."""
    cfg, world = run.job.config, run.dist_info.world
    run.trainee.set_step(step, run.total_steps)
    local_counts: dict[str, torch.Tensor] = {}
    for b in micro:
        for name, n in run.trainee.target_counts(b).items():
            local_counts[name] = local_counts.get(name, 0) + n
    global_counts = all_sum(local_counts, world)
    normalisers = {k: (v / world).float() for k, v in global_counts.items()}
    ddp = run.wrapped if isinstance(run.wrapped, nn.parallel.DistributedDataParallel) else None  # world > 1
    for m, b in enumerate(micro):
        with ddp.no_sync() if ddp is not None and m < len(micro) - 1 else contextlib.nullcontext():
            with autocast(run.device, run.dtype):
                out: ModelOutput = run.wrapped(b, normalisers=normalisers)
            run.scaler.scale(out.losses["total"]).backward()
        interval.weights = out.weights
        for name, value in out.sums.items():
            interval.sums[name] = interval.sums.get(name, 0) + value.detach().double()
    for name, value in global_counts.items():
        interval.counts[name] = interval.counts.get(name, 0) + value
    grad_norm = None
    if cfg.clip_grad > 0:
        run.scaler.unscale_(run.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(run.params, cfg.clip_grad)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.optimizer.zero_grad(set_to_none=True)
    lr = run.scheduler.get_last_lr()[0]
    run.scheduler.step()
    return lr, grad_norm


def _log(
    run: _Run, step: int, interval: _Interval, lr: float | torch.Tensor, grad_norm: torch.Tensor | None, clock: _Clock
) -> None:
    """A line of the metrics log: each loss over the interval's targets (all processes), and their weighted sum."""
    sums = all_sum(interval.sums, run.dist_info.world)
    losses = {k: float(sums[k] / interval.counts[k].clamp(min=1)) for k in sums if k in interval.counts}
    weights = interval.weights
    total = sum(weights.get(k, 0.0) * v for k, v in losses.items() if weights.get(k, 0.0) > 0)
    record = {
        "step": step,
        "epoch": round(step / max(1, run.steps_per_epoch), 4),
        "lr": lr,
        "loss": total,
        **{f"loss_{k}": v for k, v in losses.items()},
        **{f"weight_{k}": w for k, w in weights.items()},  # e.g. lambda during its warm-up
        "grad_norm": float(grad_norm) if grad_norm is not None else None,
        "samples_per_s": clock.rate(),
        "data_wait": clock.wait_share(),
    }
    if clock.flops:
        world = run.dist_info.world
        record["tokens_per_s"] = clock.tokens * world / max(1e-9, clock.busy)  # real tokens, all processes
        record["tflops_per_s"] = clock.flops / max(1e-9, clock.busy) / 1e12  # this process's device
        if (mfu := clock.mfu(run.peak)) is not None:
            record["mfu"] = mfu
    run.log.write(record)
    if run.dist_info.main and run.on_log is not None:
        run.on_log(record)
    run.bar.update(run.bar_task, loss=total)


def _validate(run: _Run, step: int) -> dict[str, float]:
    """The validation metrics ({} without validation): the job's `validate`, or the model's stats summed."""
    job, main = run.job, run.dist_info.main
    if job.validate is not None:
        metrics = job.validate(run.model, run.device) if main else {}
        barrier(run.dist_info.world)
    elif job.val_data is None or not job.val_keys:
        return {}
    else:
        metrics = _summed_validation(run)
    return _report_validation(run, step, metrics)


def _summed_validation(run: _Run) -> dict[str, float]:
    """The model's `metrics` of its stats summed over the job's validation items (all processes)."""
    job, cfg = run.job, run.job.config
    assert job.val_data is not None
    return evaluate(
        run.model,
        job.val_data,
        job.val_keys,
        job.collate,
        batch_size=cfg.batch_size // run.dist_info.world // cfg.accumulation,
        device=run.device,
        dtype=run.dtype,
        dist_info=run.dist_info,
        workers=job.workers,
        forward_kwargs=job.eval_kwargs,
    )


def _report_validation(run: _Run, step: int, metrics: dict[str, float]) -> dict[str, float]:
    """Log a validation's metrics with the diagnosis's warning if any; pictures; the progress line."""
    job, main = run.job, run.dist_info.main
    if not metrics:
        return {}
    warning = job.diagnose(metrics) if job.diagnose is not None else None
    mark = {"split": "val", PERCENT: True}
    run.log.write({"step": step, **mark, **metrics, **({"warning": warning} if warning else {})})
    if run.log.shows_images and job.pictures is not None:
        with tempfile.TemporaryDirectory() as tmp:
            for tag, png in job.pictures(run.model, step, Path(tmp), metrics).items():
                run.log.image(tag, png, step)
    if warning and main:
        run.bar.console.print(f"[yellow]warning at step {step}:[/] {warning}", highlight=False)
    description = f"{run.description} [yellow](see warning)[/]" if warning else run.description
    run.bar.update(run.bar_task, description=description)
    if main and run.on_validation is not None:
        run.on_validation(step, metrics)
    return metrics


def _save(run: _Run, step: int) -> Path:
    """A checkpoint of `step` with everything a resume needs (every process's random state included)."""
    rngs = gather_objects(ckpt.rng_state(), run.dist_info.world)
    path = ckpt.checkpoint_path(run.job.run_dir, step)
    if run.dist_info.main:
        ckpt.save_checkpoint(
            path,
            {
                "model": run.model.state_dict(),
                "optimizer": run.optimizer.state_dict(),
                "scheduler": run.scheduler.state_dict(),
                "scaler": run.scaler.state_dict(),
                "step": step,
                "total_steps": run.total_steps,
                "rng": rngs,
                "config": run.job.saved_config,
                "meta": {**run.job.meta, "world": run.dist_info.world},
            },
        )
        ckpt.prune(run.job.run_dir, run.job.config.keep_checkpoints)
    barrier(run.dist_info.world)
    return path
