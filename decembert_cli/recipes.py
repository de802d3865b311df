"""Paper recipes: the whole chain of commands behind one of the paper's tables, with its compute and disk.

`decembert recipe table6 --dry-run` prints the chain (feature extraction, dense captioning, the corpus
index, pre-training, fine-tuning, evaluation) with the paper's settings, what each step costs on one
H200 and on disk, and the paper's numbers to compare with; `--run` executes it step by step,
resumably: finished steps are recorded in RUNS/recipe-state.json and skipped, an interrupted
training step continues with --resume, the extraction and captioning steps skip finished videos.

`TABLES` follows the paper (DESIGN.md §1): Tables 1-2 captioning (MSR-VTT, YouCook2), 3-4
text-to-video retrieval (MSR-VTT 1k-A, YouCook2), 5 MSRVTT-QA, 6 the pre-training ablation and 7 the
downstream ablation (MSR-VTT captioning and MSRVTT-QA on the val split, fine-tuned from each row of
Table 6). The ablation rows are cumulative, as in the paper: each adds one component to the row above.

Costs come from `RATES`: a measured rate where there is one (labelled "measured", with its file),
otherwise an estimate that says what it assumes. Dataset sizes are the published ones.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from decembert_cli.config import Config, load_config
from decembert_cli.errors import DecembertError, shown
from decembert_cli.io import METRICS_LOG, atomic_write_text, decode_json, regular_file

STATE_FILE = "recipe-state.json"


@dataclass(frozen=True)
class Rate:
    """Work per second on one H200, and where the number comes from."""

    per_s: float
    unit: str
    source: str
    measured: bool


# One H200 unless said otherwise. The measured pre-training step is benchmarks/encoder_step.py on an
# H200 (bf16, BERT-base, batch 64, 211 tokens, fused attention): 15.79 steps/s.
RATES = {
    "pretrain": Rate(
        1010.5,
        "samples/s",
        "measured: H200 bf16 training step, BERT-base, batch 64, 211 tokens "
        "(benchmarks/results/encoder_step_h200_base_bf16_b64_k1.json); the whole loop with data loading is not",
        True,
    ),
    "finetune": Rate(
        1010.5,
        "items/s",
        "estimate: the measured pre-training step rate (downstream sequences are shorter, so likely pessimistic)",
        False,
    ),
    "extract": Rate(
        526.0,
        "video-s/s",
        "estimate: decoding-bound: 16 CPU cores at the 987 frames/s per core measured on a 2-core CPU "
        "(640x360 MPEG-4, benchmarks/results/extract_paper_cpu2.json), 30 fps video; the GPU part, 42.2 GFLOPs "
        "per video-second (ResNet-152 at 224 px + ResNeXt-101 on 16 frames at 112 px, counted with "
        "torch.utils.flop_counter), would allow ~7,000 video-s/s at 30% of 990 TFLOP/s",
        False,
    ),
    "dense-caption": Rate(
        8.4,
        "frames/s",
        "estimate: Florence-2-large, beam 3, batch 32, up to 256 generated tokens at ~15 ms per decoding step "
        "(autoregressive decoding is memory-bound); not measured",
        False,
    ),
    "index": Rate(
        500.0,
        "videos/s",
        "estimate: 2.0 ms/video with 2 workers measured on a 2-core CPU "
        "(benchmarks/results/corpus_scale_cpu2.json); 16 cores would do more",
        False,
    ),
    "score-pairs": Rate(
        3030.0,
        "pairs/s",
        "estimate: a forward pass is a third of a training step's FLOPs: 3x the measured pre-training rate",
        False,
    ),
    "generate": Rate(
        200.0,
        "captions/s",
        "estimate: beam 5, 20 tokens, cached decoding, batch 64; not measured",
        False,
    ),
}

FEATURE_BYTES_PER_S = 2 * 2048 * 2  # 2D + 3D, 2048-d each, float16, 1 per second
DENSE_BYTES_PER_FRAME = 1000  # estimate: ~10 regions of caption + box + score as JSON
CHECKPOINT_BYTES = 113e6 * 12 * 2  # BERT-base + video embedding: fp32 weights + Adam moments, 2 kept


@dataclass(frozen=True)
class Dataset:
    """A dataset's videos (published sizes) and where the recipe keeps it under --root."""

    name: str
    folder: str
    videos: int
    hours: float
    source: str

    @property
    def seconds(self) -> float:
        return self.hours * 3600


HOWTO100M = Dataset("HowTo100M", "howto100m", 1_220_000, 134_472, "Miech et al. 2019: 1.22M videos, 134,472 h")
MSRVTT = Dataset("MSR-VTT", "msrvtt", 10_000, 41.2, "Xu et al. 2016: 10,000 clips, 41.2 h")
YOUCOOK2 = Dataset("YouCook2", "youcook2", 2_000, 176, "Zhou et al. 2018: 2,000 videos, 176 h")
HOWTO100M_CLIPS = 136_000_000


@dataclass(frozen=True)
class Downstream:
    """A fine-tuning task's dataset, training items per epoch and what its evaluation scores."""

    task: str
    data: Dataset
    train_items: int
    eval_work: float  # pairs scored (retrieval), items answered (QA) or captions generated
    eval_rate: str  # the RATES key of the evaluation
    paper: dict[str, float]  # the paper's numbers (DESIGN.md) by metric key


DOWNSTREAM = {
    # MSRVTT-QA: 158,581 training and 72,821 test questions (Xu et al. 2017)
    "msrvtt-qa": Downstream("msrvtt-qa", MSRVTT, 158_581, 72_821, "score-pairs", {"accuracy": 37.4}),
    # 7k training clips x 20 captions; 1k-A test: 1,000 texts x 1,000 clips scored by the cross-encoder
    "msrvtt-retrieval": Downstream(
        "msrvtt-retrieval",
        MSRVTT,
        140_200,
        1e6,
        "score-pairs",
        {"t2v_R@1": 17.5, "t2v_R@5": 44.3, "t2v_R@10": 58.6, "t2v_MedR": 9},
    ),
    # ~10,300 training clips; 3,350 validation clips scored all against all
    "youcook2-retrieval": Downstream(
        "youcook2-retrieval",
        YOUCOOK2,
        10_337,
        3_350**2,
        "score-pairs",
        {"t2v_R@1": 17.0, "t2v_R@5": 43.8, "t2v_R@10": 59.8, "t2v_MedR": 9},
    ),
    # 6,513 training videos x 20 captions; 2,990 test videos captioned
    "msrvtt-caption": Downstream(
        "msrvtt-caption",
        MSRVTT,
        130_260,
        2_990,
        "generate",
        {"BLEU@4": 45.2, "METEOR": 29.7, "ROUGE-L": 64.7, "CIDEr-D": 52.3},
    ),
    # 10,337 training segments; 3,492 validation segments captioned (paragraphs of 457 videos)
    "youcook2-caption": Downstream(
        "youcook2-caption",
        YOUCOOK2,
        10_337,
        3_492,
        "generate",
        {"BLEU@4": 11.92, "METEOR": 20.01, "ROUGE-L": 40.22, "CIDEr-D": 58.02},
    ),
}

# The pre-training rows of Tables 6 and 7, cumulative as in the paper: "MLM & Matching" (one ASR caption, no
# dense captions, no constrained loss), "+ neighbouring ASR captions", "+ dense captions", "+ constrained loss"
# (the full model).
ABLATIONS = {
    "mlm-matching": ["data.neighbours=0", "data.use_dense=false", "loss.constrained_lambda=0"],
    "neighbours": ["data.use_dense=false", "loss.constrained_lambda=0"],
    "dense": ["loss.constrained_lambda=0"],
    "full": [],
}
TABLE6_METRICS = ("mlm_acc_asr", "mlm_acc_dense", "vtm_acc")
# The paper's Table 6 (10k held-out HowTo100M videos) and Table 7 (val splits), by row
TABLE6_PAPER = {
    "mlm-matching": {"mlm_acc_asr": 21.95, "vtm_acc": 61.63},
    "neighbours": {"mlm_acc_asr": 48.42, "vtm_acc": 78.90},
    "dense": {"mlm_acc_asr": 49.78, "mlm_acc_dense": 84.06, "vtm_acc": 80.02},
    "full": {"mlm_acc_asr": 50.66, "mlm_acc_dense": 84.46, "vtm_acc": 80.32},
}
TABLE7_PAPER = {
    "mlm-matching": {"BLEU@4": 41.3, "METEOR": 27.6, "ROUGE-L": 60.3, "CIDEr-D": 48.1, "accuracy": 35.7},
    "neighbours": {"BLEU@4": 41.6, "METEOR": 28.0, "ROUGE-L": 60.5, "CIDEr-D": 47.8, "accuracy": 35.8},
    "dense": {"BLEU@4": 43.5, "METEOR": 29.6, "ROUGE-L": 63.9, "CIDEr-D": 49.4, "accuracy": 36.7},
    "full": {"BLEU@4": 44.6, "METEOR": 29.9, "ROUGE-L": 64.0, "CIDEr-D": 51.2, "accuracy": 37.0},
}


@dataclass(frozen=True)
class Table:
    """One of the paper's tables: the tasks fine-tuned, from which pre-training rows, scored on which split."""

    title: str
    tasks: tuple[str, ...] = ()  # downstream tasks (none: pre-training metrics only)
    rows: tuple[str, ...] = ("full",)  # pre-training rows (ABLATIONS) run, and fine-tuned from when tasks are given
    split: str = ""  # split evaluated ("": the task's test split)


ALL_ROWS = tuple(ABLATIONS)
TABLES: dict[str, Table] = {
    "table1": Table("MSR-VTT video captioning (test)", ("msrvtt-caption",)),
    "table2": Table("YouCook2 video captioning (val, paragraph level)", ("youcook2-caption",)),
    "table3": Table("MSR-VTT 1k-A text-to-video retrieval", ("msrvtt-retrieval",)),
    "table4": Table("YouCook2 text-to-video retrieval (val clips)", ("youcook2-retrieval",)),
    "table5": Table("video question answering (MSRVTT-QA, test)", ("msrvtt-qa",)),
    "table6": Table(
        "pre-training ablation, cumulative rows: MLM accuracy on ASR and dense captions, VTM accuracy", rows=ALL_ROWS
    ),
    "table7": Table(
        "downstream ablation: MSR-VTT captioning and MSRVTT-QA (val), fine-tuned from each Table 6 row",
        ("msrvtt-caption", "msrvtt-qa"),
        rows=ALL_ROWS,
        split="val",
    ),
}


@dataclass
class Step:
    """One command of a recipe, its cost on one H200 and the disk it writes."""

    name: str  # unique within a --runs folder: steps of several tables with the same name are the same step
    args: list[str]  # the decembert command line, without "decembert"
    work: float  # units of its rate
    rate: str  # key of RATES
    disk_bytes: float = 0.0
    run_dir: Path | None = None  # training steps: the run folder (an interrupted one continues with --resume)
    note: str = ""
    needs: tuple[Path, ...] = ()  # inputs that must exist before it runs (videos, a task's data folder)

    @property
    def hours(self) -> float:
        return self.work / RATES[self.rate].per_s / 3600

    def command(self) -> str:
        return shlex.join(["decembert", *self.args])


@dataclass
class Recipe:
    table: str
    title: str
    root: Path
    runs: Path
    steps: list[Step]
    paper: dict[str, dict[str, float]] = field(default_factory=dict)  # task -> metric -> paper value

    @property
    def hours(self) -> float:
        return sum(s.hours for s in self.steps)

    @property
    def disk_bytes(self) -> float:
        return sum(s.disk_bytes for s in self.steps)

    def all_measured(self) -> bool:
        return all(RATES[s.rate].measured for s in self.steps)


def known_tables() -> str:
    return ", ".join(f"{name} ({table.title})" for name, table in TABLES.items())


def _prepare(data: Dataset, root: Path) -> list[Step]:
    """Features and dense captions of one dataset's videos, into the folders its config reads."""
    base = root / data.folder
    frames = data.seconds / 2
    return [
        Step(
            f"features:{data.folder}",
            ["extract-features", str(base / "videos"), "--out", str(base / "features")],
            data.seconds,
            "extract",
            data.seconds * FEATURE_BYTES_PER_S,
            note=f"{data.name}: {data.hours:,.0f} h of video",
            needs=(base / "videos",),
        ),
        Step(
            f"dense-captions:{data.folder}",
            ["dense-caption", str(base / "videos"), "--out", str(base / "dense_captions")],
            frames,
            "dense-caption",
            frames * DENSE_BYTES_PER_FRAME,
            note=f"{frames / 1e6:,.1f}M frames, one every 2 s",
            needs=(base / "videos",),
        ),
    ]


def _pretrain_items(config: str, overrides: Sequence[str]) -> tuple[float, str]:
    """Samples a pre-training run of this config draws on HowTo100M, and how they were counted."""
    cfg = load_config(Config, config, list(overrides))
    unit = HOWTO100M.videos if cfg.train.epoch_unit == "video" else HOWTO100M_CLIPS
    if cfg.train.max_steps > 0:
        return cfg.train.max_steps * cfg.train.batch_size, f"{cfg.train.max_steps:,} steps of {cfg.train.batch_size}"
    return cfg.train.epochs * unit, f"{cfg.train.epochs:g} epochs of one item per {cfg.train.epoch_unit}"


def _pretrain(root: Path, runs: Path, row: str, config: str, overrides: Sequence[str]) -> Step:
    sets = [*ABLATIONS[row], *overrides]
    samples, how = _pretrain_items(config, sets)
    out = runs / f"pretrain-{row}"
    args = ["pretrain", "--data", "howto100m", "--config", config, "--set", f"data.root={root / HOWTO100M.folder}"]
    args += [x for s in sets for x in ("--set", s)] + ["--out", str(out)]
    return Step(f"pretrain:{row}", args, samples, "pretrain", CHECKPOINT_BYTES, run_dir=out, note=how)


def build(
    table: str, root: Path, runs: Path | None = None, config: str = "paper", overrides: Sequence[str] = ()
) -> Recipe:
    """The chain of commands for one table, with their costs."""
    if table not in TABLES:
        raise DecembertError(f"unknown table '{table}'; known: {known_tables()}")
    spec = TABLES[table]
    runs = runs if runs is not None else root / "runs"
    steps = _prepare(HOWTO100M, root)
    index_args = ["data", "index", "howto100m", "--config", config, "--set", f"data.root={root / HOWTO100M.folder}"]
    howto = root / HOWTO100M.folder
    steps.append(
        Step("index:howto100m", index_args, HOWTO100M.videos, "index", 0.0, note="once, on CPUs", needs=(howto,))
    )
    steps += [_pretrain(root, runs, row, config, overrides) for row in spec.rows]
    prepared = {s.name for s in steps}
    paper: dict[str, dict[str, float]] = {row: TABLE6_PAPER[row] for row in spec.rows} if not spec.tasks else {}
    for name in spec.tasks:
        task = DOWNSTREAM[name]
        steps += [s for s in _prepare(task.data, root) if s.name not in prepared]
        prepared |= {s.name for s in steps}
        for row in spec.rows:
            run, label = _task_run(runs, name, row, spec)
            finetune = ["finetune", name, "--checkpoint", str(runs / f"pretrain-{row}")]
            finetune += ["--set", f"task.root={root / task.data.folder}", "--out", str(run)]
            cost = 10 * task.train_items  # 10 epochs, fine-tuning's default
            data = (root / task.data.folder,)
            steps.append(Step(f"finetune:{label}", finetune, cost, "finetune", CHECKPOINT_BYTES, run, needs=data))
            split = ["--split", spec.split] if spec.split else []
            evaluate = ["evaluate", name, "--checkpoint", str(run), *split, "--out", str(_eval_dir(run, spec))]
            steps.append(Step(f"evaluate:{label}", evaluate, task.eval_work, task.eval_rate))
            wanted = TABLE7_PAPER[row] if table == "table7" else task.paper
            paper[label] = {k: v for k, v in wanted.items() if k in task.paper}
    return Recipe(table, spec.title, root, runs, steps, paper)


def _task_run(runs: Path, task: str, row: str, spec: Table) -> tuple[Path, str]:
    """(run folder, step label) of fine-tuning `task` from pre-training row `row`."""
    if spec.rows == ("full",):
        return runs / task, task
    return runs / f"{task}-{row}", f"{task}:{row}"


def _eval_dir(run: Path, spec: Table) -> Path:
    return run / f"eval-{spec.split or 'test'}"


# ---- running -----------------------------------------------------------------------------------


def _read_state(path: Path) -> dict[str, Any]:
    """RUNS/recipe-state.json, checked: {"done": {step: {"command": [args], "seconds": s}}}."""
    if not (path.exists() or path.is_symlink()):
        return {"done": {}}
    again = "move it away to start the recipe again"
    try:
        text = regular_file(path, "recipe state file").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DecembertError(f"cannot read {path}: {exc}; {again}") from None
    state = decode_json(text, f"{path} ({again})")
    if not isinstance(state, dict) or not isinstance(state.get("done"), dict):
        raise DecembertError(f"{path}: not a recipe state file (no 'done' table); {again}")
    for name, entry in state["done"].items():
        if not isinstance(entry, dict):
            raise DecembertError(f"{path}: done.{name}: expected an object, got {shown(entry)}; {again}")
        command, seconds = entry.get("command"), entry.get("seconds", 0)
        if not isinstance(command, list) or not all(isinstance(arg, str) for arg in command):
            raise DecembertError(
                f"{path}: done.{name}.command: expected a list of strings, got {shown(command)}; {again}"
            )
        if not isinstance(seconds, (int, float)) or isinstance(seconds, bool):
            raise DecembertError(f"{path}: done.{name}.seconds: expected a number, got {shown(seconds)}; {again}")
    return state


def _write_state(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(state, indent=2) + "\n")


def subprocess_runner(args: list[str]) -> int:
    """Run one decembert command in a fresh process, its output on this terminal."""
    return subprocess.run([sys.executable, "-m", "decembert_cli", *args], check=False).returncode


def _has_run(run_dir: Path) -> bool:
    return (run_dir / METRICS_LOG).exists() or (run_dir / "checkpoints").is_dir()


def run(
    recipe: Recipe,
    runner: Callable[[list[str]], int] = subprocess_runner,
    announce: Callable[[str], None] = print,
    skip: Sequence[str] = (),
) -> None:
    """Execute the steps not yet done; record each one finished. A failed step stops the recipe with
    its command; running the recipe again continues from it. `skip`: steps whose output the user
    already has (e.g. HowTo100M's released features), never run."""
    names = [s.name for s in recipe.steps]
    if unknown := [n for n in skip if n not in names]:
        raise DecembertError(
            f"--skip {unknown[0]}: recipe {recipe.table} has no such step; its steps: {', '.join(names)}"
        )
    state_path = recipe.runs / STATE_FILE
    state = _read_state(state_path)
    pending = [s for s in recipe.steps if s.name not in state["done"] and s.name not in skip]
    missing = sorted({str(p) for s in pending for p in s.needs if not p.exists()})
    if missing:
        raise DecembertError(
            f"recipe {recipe.table}: missing input {', '.join(missing)}; put each dataset under --root "
            f"({recipe.root}/howto100m, msrvtt, youcook2: videos/ and the annotation files), or --skip a step whose "
            "output you already have"
        )
    for number, step in enumerate(recipe.steps, 1):
        if step.name in skip:
            announce(f"[{number}/{len(recipe.steps)}] {step.name}: skipped (--skip)")
            continue
        done = state["done"].get(step.name)
        if done is not None:
            if done["command"] != step.args:
                raise DecembertError(
                    f"{state_path}: step {step.name} was done with another command:\n  {shlex.join(done['command'])}\n"
                    f"now:\n  {shlex.join(step.args)}\nuse another --runs folder for different settings"
                )
            announce(f"[{number}/{len(recipe.steps)}] {step.name}: done before, skipped")
            continue
        args = list(step.args)
        if step.run_dir is not None and _has_run(step.run_dir):
            args.append("--resume")  # an interrupted training run continues from its newest checkpoint
        announce(f"[{number}/{len(recipe.steps)}] {step.name}: {shlex.join(['decembert', *args])}")
        started = time.time()
        code = runner(args)
        if code != 0:
            raise DecembertError(
                f"recipe {recipe.table}: step {step.name} failed (exit {code}); fix its cause and run the "
                f"recipe again to continue from this step (finished steps are in {state_path})"
            )
        state["done"][step.name] = {"command": step.args, "seconds": round(time.time() - started, 1)}
        _write_state(state_path, state)


def results(recipe: Recipe) -> list[tuple[str, str, float | None, float | None]]:
    """(row, metric, ours, paper's) for every number of the table that its runs have produced so far (their
    files checked: a value that is not a number is one error naming the file)."""
    # lazy: engine.run_log loads torch and transformers; `decembert recipe --dry-run/--script` need neither
    from decembert_cli.engine.run_log import last_validation, read_evaluation

    rows: list[tuple[str, str, float | None, float | None]] = []
    spec = TABLES[recipe.table]
    if not spec.tasks:
        for row in spec.rows:
            val = last_validation(recipe.runs / f"pretrain-{row}")
            for key in TABLE6_METRICS:
                value = val.get(key)
                rows.append((row, key, value, recipe.paper[row].get(key)))
        return rows
    for task in spec.tasks:
        for row in spec.rows:
            run, label = _task_run(recipe.runs, task, row, spec)
            path = _eval_dir(run, spec) / "metrics.json"
            metrics = read_evaluation(path)["metrics"] if path.exists() or path.is_symlink() else {}
            for key, paper_value in recipe.paper[label].items():
                rows.append((label, key, metrics.get(key), paper_value))
    return rows
