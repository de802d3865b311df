"""`decembert check`: build the configured encoder and run one training step on a generated batch."""

from __future__ import annotations

from pathlib import Path

import typer

from decembert_cli.commands._options import (
    ConfigOption,
    PrintConfigOption,
    SetOption,
    make_console,
    resolve,
    titled_table,
)


def check(
    config: str | None = ConfigOption,
    overrides: list[str] = SetOption,
    print_config: bool = PrintConfigOption,
    batch_size: int = typer.Option(4, min=1, help="Samples in the generated batch."),
    neighbours: int = typer.Option(1, min=0, help="k: candidate ASR captions s_{i-k}..s_{i+k}."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    out: Path | None = typer.Option(None, help="Also save the resolved config here (config.yaml)."),
) -> None:
    """Build the encoder from the config and run one forward/backward on a generated batch.

    Prints the model size, the three pre-training losses (MLM, VTM, constrained attention) and the
    step time: a quick check that an installation, a config and a device work together.
    """
    import time

    import torch

    from decembert_cli.config import Config, save_config
    from decembert_cli.data.sample.batches import BatchShape, random_batch
    from decembert_cli.engine.distributed import resolve_device
    from decembert_cli.model import build_pretraining_model, build_tokenizer, check_vocabulary
    from decembert_cli.model.weights import resolve_init

    cfg = resolve(Config, config, overrides, print_config)
    console = make_console()
    dev = resolve_device(device, option="--device")
    torch.manual_seed(cfg.seed)
    with console.status(f"building the {cfg.model.arch} encoder (init: {resolve_init(cfg.model)})"):
        model = build_pretraining_model(cfg).to(dev)
        tokenizer = build_tokenizer(cfg.model)
        check_vocabulary(tokenizer, model.encoder)
    shape = BatchShape(
        batch_size=batch_size,
        neighbours=neighbours,
        feature_dim_2d=cfg.model.feature_dim_2d,
        feature_dim_3d=cfg.model.feature_dim_3d,
    )
    batch = random_batch(tokenizer, shape, seed=cfg.seed, max_video_tokens=cfg.model.max_video_tokens).to(dev)
    model.train()
    start = time.perf_counter()
    output = model(batch)
    output.losses["total"].backward()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    seconds = time.perf_counter() - start
    grads = [p.grad.norm() for p in model.parameters() if p.grad is not None]
    grad_norm = float(torch.linalg.vector_norm(torch.stack(grads))) if grads else 0.0

    params = sum(p.numel() for p in model.parameters())
    table = titled_table(f"decembert check: {cfg.model.arch}, {params / 1e6:.1f}M parameters, {dev}")
    table.add_column("loss")
    table.add_column("value", justify="right")
    labels = {"mlm": "MLM", "vtm": "video-text matching", "constrained": "constrained attention (entropy)"}
    for key, label in labels.items():
        if key in output.losses:
            table.add_row(label, f"{output.losses[key].item():.4f}")
    table.add_row(f"total (lambda = {cfg.loss.constrained_lambda:g})", f"{output.losses['total'].item():.4f}")
    console.print(table)
    console.print(
        f"batch: {batch.batch_size} samples, "
        f"{batch.video_mask.shape[1]} video + {batch.text_ids.shape[1]} text tokens, "
        f"{2 * neighbours + 1} candidate captions; forward+backward {seconds:.2f} s; gradient norm {grad_norm:.3f}"
    )
    if out is not None:
        path = save_config(cfg, out / "config.yaml")
        console.print(f"resolved config saved to {path}")
