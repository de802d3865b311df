"""`decembert tasks`, `decembert finetune TASK`, `decembert evaluate TASK` and `decembert data check`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from decembert_cli.commands._options import ConfigOption, SetOption, counting_progress, make_console, titled_table


def list_tasks(
    check: bool = typer.Option(
        False,
        "--check",
        help="Also check each task against the plugin contract (check_task) on a small built-in sample corpus.",
    ),
) -> None:
    """List the installed downstream tasks (entry points decembert.tasks) with their package and version.
    A task that cannot load is listed as broken with the reason, and the exit status is then 2. With
    --check, each task that says how to run on the sample corpus is fine-tuned for one batch and scored
    there by a tiny random model (`decembert_cli.testing.check_task`); status "ok" means it passed."""
    from rich.markup import escape

    from decembert_cli.errors import DecembertError
    from decembert_cli.registry import tasks

    available = tasks.available()
    loaded, broken = tasks.load_all()
    console = make_console()
    checked = _check_tasks(console, loaded) if check else {}
    failed = {name: why for name, why in checked.items() if why is not None}
    table = titled_table("installed tasks")
    for column in ("task", "package", "version", "main metric", "status"):
        table.add_column(column, overflow="fold")  # names are folded onto a second line, never cut
    for name, info in available.items():
        task = loaded.get(name)
        if task is None:
            status = f"[red]broken: {escape(broken[name])}[/red]"
        elif not check:
            status = "loads (--check runs the contract check)"
        elif name in failed:
            status = f"[red]fails the contract check: {escape(failed[name])}[/red]"
        elif name not in checked:
            status = "loads; not checked (no sample settings: its package tests it with check_task)"
        else:
            status = "ok"
        # what a plugin says is text, never markup (a reason with brackets in it)
        cells = (name, info.package, f"{info.version} (task {getattr(task, 'version', '?')})")
        table.add_row(*map(escape, cells), escape(str(getattr(task, "main_metric", "?"))), status)
    console.print(table if available else "no tasks installed (entry-point group decembert.tasks)")
    if broken or failed:
        names = [*broken, *failed]
        raise DecembertError(
            f"{len(names)} of {len(available)} installed tasks cannot load or fail the check ({', '.join(names)}): "
            "the status column says why; reinstall or fix their packages"
        )


def _check_tasks(console: Any, loaded: dict[str, Any]) -> dict[str, str | None]:
    """check_task for every loaded task with sample settings, on a small sample corpus in a temporary folder;
    task name -> why it failed (None: it passed). Tasks without sample settings are left out."""
    import tempfile

    from decembert_cli.data.sample.corpus import generate
    from decembert_cli.testing import check_task

    dim = 16  # feature width of the check's corpus (and of its tiny model)
    checked: dict[str, str | None] = {}
    with tempfile.TemporaryDirectory(prefix="decembert-check-") as tmp:
        with console.status("writing a small sample corpus for the check"):
            root = generate(Path(tmp) / "corpus", videos=8, clips=60, feature_dim_2d=dim, feature_dim_3d=dim)
        for name, task_cls in loaded.items():
            settings = task_cls.sample_settings(root)
            if settings is None:
                continue
            with console.status(f"checking {name}"):
                try:
                    check_task(task_cls, settings, feature_dims=(dim, dim))
                    checked[name] = None
                except Exception as exc:  # a plugin's failure of any kind is reported, the others still checked
                    checked[name] = str(exc) if isinstance(exc, AssertionError) else f"{type(exc).__name__}: {exc}"
    return checked


def finetune(
    task: str = typer.Argument(..., help="An installed task (decembert tasks lists them), e.g. msrvtt-qa."),
    checkpoint: Path | None = typer.Option(
        None,
        "--checkpoint",
        help="Pre-training checkpoint (file or run folder); its model settings are used. Without it: model.init.",
    ),
    config: str | None = ConfigOption,
    overrides: list[str] = SetOption,
    print_config: bool = typer.Option(False, "--print-config", help="Print the resolved config as YAML and exit."),
    out: Path | None = typer.Option(None, "--out", help="Run folder (default runs/finetune-TASK-TIME)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its newest checkpoint."),
    strict: bool = typer.Option(
        False,
        "--strict",
        help="Stop when a training or validation video lacks features, instead of leaving its items out.",
    ),
) -> None:
    """Fine-tune the encoder and the task's head; then evaluate with `decembert evaluate TASK --checkpoint RUN`.

    Task settings are `task.*` keys (decembert finetune TASK --print-config shows them), e.g.
    --set task.root=DATA. Training uses the paper's optimiser (AdamW 1e-4, betas 0.9/0.98, wd 0.01).
    """
    import time

    from decembert_cli.config import to_yaml
    from decembert_cli.engine.finetune import finetune as run_finetune
    from decembert_cli.engine.finetune import prepare, resolve
    from decembert_cli.errors import DecembertError
    from decembert_cli.viz.attention import validation_pictures

    if strict:
        overrides = [*overrides, "task.require_features=true"]
    if print_config:
        typer.echo(to_yaml(resolve(task, config, overrides, checkpoint).config), nl=False)
        raise typer.Exit()
    if out is None:
        if resume:
            raise DecembertError("--resume needs --out RUN_DIR (the run to continue)")
        out = Path("runs") / f"finetune-{task}-{time.strftime('%Y%m%d-%H%M%S')}"
    if resume and config is None and (out / "config.yaml").is_file():
        config = str(out / "config.yaml")
    console = make_console()
    with console.status(f"reading {task} and building the model"):
        setup = prepare(task, config, overrides, out, checkpoint)
    setup.job.pictures = validation_pictures()
    console.print(
        f"{task}: {setup.train_items} training items, {setup.val_items} validation items (scored as evaluate does); "
        f"encoder from {setup.init}",
        highlight=False,
    )

    def show(step: int, metrics: dict[str, float]) -> None:
        console.print(
            f"validation at step {step}: " + ", ".join(f"{k} {v:.2f}" for k, v in metrics.items()), highlight=False
        )

    result = run_finetune(setup, resume=resume, on_validation=show)
    console.print(
        f"done: step {result.steps}/{result.total_steps}, {result.samples_per_s:.1f} samples/s; "
        f"checkpoint {result.checkpoint}",
        highlight=False,
        soft_wrap=True,
    )
    typer.echo(str(out))


def evaluate(
    task: str = typer.Argument(..., help="The task the checkpoint was fine-tuned for."),
    checkpoint: Path | None = typer.Option(
        None, "--checkpoint", help="Fine-tuned checkpoint (file or run folder: its newest)."
    ),
    predictions: Path | None = typer.Option(
        None,
        "--predictions",
        help="Score this predictions.jsonl instead of a checkpoint (no model; --set task.root=... for the references).",
    ),
    allow_partial: bool = typer.Option(
        False,
        "--allow-partial",
        help="With --predictions: score a file that leaves items out (they score as empty) instead of refusing it.",
    ),
    split: str | None = typer.Option(None, help="Split to score (default: the task's test split)."),
    out: Path | None = typer.Option(
        None, "--out", help="Folder for metrics.json and predictions.jsonl (default RUN/eval-SPLIT)."
    ),
    overrides: list[str] = SetOption,
    batch_size: int = typer.Option(64, min=1, help="Items (for retrieval: text-video pairs) per forward pass."),
    rerank_k: int | None = typer.Option(
        None,
        "--rerank-k",
        min=0,
        help="Retrieval: re-score only each text's top K of a cheap cosine ranking (0: every pair).",
    ),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
) -> None:
    """Score a fine-tuned checkpoint: metrics.json (with the protocol) and one prediction per item.

    The checkpoint carries the task, its version, its state and config; --set task.root=DIR points
    it at data elsewhere. With --predictions FILE, a predictions file (e.g. from another run or
    another toolkit, in the same layout) is scored against the task's references without a model.
    """
    from decembert_cli.engine.finetune import evaluate as run_evaluate
    from decembert_cli.engine.finetune import score_predictions
    from decembert_cli.errors import DecembertError

    console = make_console()
    if rerank_k is not None:
        overrides = [*overrides, f"task.rerank_k={rerank_k}"]
    if (checkpoint is None) == (predictions is None):
        raise DecembertError(
            "give --checkpoint (a fine-tuned model to run) or --predictions (a file to score), one of the two"
        )
    if allow_partial:
        if predictions is None:
            raise DecembertError("--allow-partial is for --predictions (a checkpoint predicts every item)")
        overrides = [*overrides, "task.allow_partial=true"]
    if predictions is not None:
        from decembert_cli.io import regular_file

        regular_file(predictions, "predictions file")  # a FIFO would block the read
        result = score_predictions(task, predictions, out, split=split, overrides=overrides)
    else:
        assert checkpoint is not None  # exactly one of the two was given
        with counting_progress(console, "evaluating") as progress:
            result = run_evaluate(
                task,
                checkpoint,
                out,
                split=split,
                overrides=overrides,
                batch_size=batch_size,
                device=device,
                progress=progress,
            )
    _print_evaluation(console, task, result)


def _print_evaluation(console: Any, task: str, result: Any) -> None:
    """The metrics table (main metric in bold), the protocol and where the files went."""

    title = f"{task}, {result.split} split, {result.items} items ({result.seconds:.1f} s)"
    table = titled_table(title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in result.metrics.items():
        table.add_row(f"[bold]{key}[/bold]" if key == result.main_metric else key, f"{value:.2f}")
    console.print(table)
    protocol = ", ".join(f"{k} {v}" for k, v in result.protocol.items())
    console.print(f"protocol: {protocol}", highlight=False, soft_wrap=True)
    paths = f"metrics {result.metrics_path}; predictions {result.predictions_path}"
    console.print(paths, highlight=False, soft_wrap=True)


def data_check(
    name: str = typer.Argument(..., help="A task (decembert tasks) or a pre-training corpus (howto100m, sample)."),
    config: str | None = ConfigOption,
    overrides: list[str] = SetOption,
) -> None:
    """Validate a task's annotation files (or a corpus) and report counts, splits, question types,
    answer coverage and videos lacking features or dense captions; no model is loaded."""
    import json

    from decembert_cli.registry import corpora, tasks

    console = make_console()
    if name in tasks.available():
        from decembert_cli.config import load_config
        from decembert_cli.engine.finetune import config_class

        task_cls = tasks.load(name)
        cfg: Any = load_config(config_class(task_cls), config, overrides)  # a dataclass made at run time
        report = task_cls(cfg.task).adapter().check()
        for role, path in report.files.items():
            console.print(f"{role}: {path}", highlight=False)
        keys = sorted(
            {k for c in report.counts.values() for k in c},
            key=lambda k: [k for c in report.counts.values() for k in c].index(k),
        )
        table = titled_table(f"{name}: annotations")
        table.add_column("split")
        for key in keys:
            table.add_column(key, justify="right")
        for split, counts in report.counts.items():
            table.add_row(split, *(f"{counts[k]:,}" if k in counts else "" for k in keys))
        console.print(table)
        for key, value in report.details.items():
            console.print(
                f"{key}: {json.dumps(value) if not isinstance(value, str) else value}", highlight=False, soft_wrap=True
            )
        for problem in report.problems:
            console.print(f"[yellow]problem:[/yellow] {problem}", highlight=False, soft_wrap=True)
        return
    if name in corpora.available():
        from decembert_cli.commands._options import counting_progress
        from decembert_cli.config import Config, load_config
        from decembert_cli.data.corpus import open_corpus
        from decembert_cli.model import build_tokenizer

        cfg = load_config(Config, config, overrides)
        dims = (cfg.model.feature_dim_2d, cfg.model.feature_dim_3d)
        with counting_progress(console, "indexing videos") as progress:
            clips, report = open_corpus(
                name, cfg.data, dims, build_tokenizer(cfg.model), strict=False, progress=progress
            )
        console.print(
            f"corpus {name}: {report.videos_used or len(clips)} of {report.videos_seen} videos usable, "
            f"{clips.n_clips:,} clips, {clips.has_dense()} with dense captions",
            highlight=False,
        )
        console.print(json.dumps(report.as_dict(), indent=2), highlight=False)
        return
    from decembert_cli.errors import DecembertError

    raise DecembertError(
        f"'{name}' is neither an installed task ({', '.join(tasks.available()) or 'none'}) "
        f"nor a corpus ({', '.join(corpora.available())})"
    )


def data_index(
    name: str = typer.Argument(..., help="A pre-training corpus in HowTo100M's layout (howto100m, sample)."),
    config: str | None = ConfigOption,
    overrides: list[str] = SetOption,
    workers: int = typer.Option(
        0, "--workers", min=0, help="Processes that build the index (0: one per CPU, at most 8)."
    ),
    rebuild: bool = typer.Option(False, "--rebuild", help="Rescan every video instead of updating the index."),
    part_videos: int = typer.Option(1000, "--part-videos", min=1, help="Videos per resumable part of the build."),
) -> None:
    """Build or update the corpus index that pre-training reads: every video's captions cleaned and
    tokenised and its feature length, in memory-mapped columns. Interrupted, it resumes; run again
    after adding videos, it examines only the new ones (and those skipped before)."""
    import json

    from decembert_cli.commands._options import counting_progress
    from decembert_cli.config import Config, load_config
    from decembert_cli.data.corpus_index import IndexedCorpus, open_index
    from decembert_cli.errors import DecembertError
    from decembert_cli.model import build_tokenizer
    from decembert_cli.registry import corpora

    console = make_console()
    cfg = load_config(Config, config, overrides)
    corpus = corpora.load(name)
    if not isinstance(corpus, IndexedCorpus):
        raise DecembertError(
            f"corpus '{name}' is not in HowTo100M's layout and has no index; pretrain reads it directly"
        )
    dims = (cfg.model.feature_dim_2d, cfg.model.feature_dim_3d)
    with counting_progress(console, "indexing videos") as progress:
        table, report, folder = open_index(
            corpus,
            cfg.data,
            dims,
            build_tokenizer(cfg.model),
            name=name,
            mode="rebuild" if rebuild else "update",
            workers=workers,
            part_videos=part_videos,
            progress=progress,
        )
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    console.print(
        f"index {folder}: {len(table):,} videos, {table.n_clips:,} clips, {len(table.tokens):,} caption tokens; "
        f"{manifest.get('examined', 0):,} videos examined in {manifest.get('build_seconds', 0)} s "
        f"(of {report['videos_seen']:,} seen; parts: {manifest.get('parts')})",
        highlight=False,
        soft_wrap=True,
    )
    console.print(json.dumps(report, indent=2), highlight=False)


def export(
    source: Path = typer.Argument(..., help="A run folder (its newest checkpoint) or a checkpoint file."),
    out: Path = typer.Option(..., "--out", help="The folder to write (must not exist)."),
) -> None:
    """Export a pre-training or fine-tuned model as a Hugging Face-style folder: model.safetensors,
    config.json, the tokenizer files and a model card (README.md). No pickle; load it with
    decembert_cli.api.load_pretrained, or pass it to finetune/evaluate --checkpoint."""
    import shlex
    import sys

    from decembert_cli.export import export_model

    command = "decembert " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    folder = export_model(source, out, command)
    files = ", ".join(sorted(p.name for p in folder.iterdir()))
    make_console().print(f"exported {source} -> {folder} ({files})", highlight=False, soft_wrap=True)
