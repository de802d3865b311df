"""Options shared by every command that takes a config."""

from __future__ import annotations

from typing import Any, List, Optional, TypeVar

import typer

T = TypeVar("T")

ConfigOption = typer.Option(
    None, "--config", "-c", help="YAML config file, or a packaged preset name (paper, demo, tiny)."
)
SetOption = typer.Option(
    [], "--set", help="Override one key, e.g. --set loss.constrained_lambda=0.5 (repeatable; value read as YAML)."
)
PrintConfigOption = typer.Option(False, "--print-config", help="Print the resolved config as YAML and exit.")


def resolve(cls: type[T], config: Optional[str], overrides: List[str], print_config: bool) -> T:
    """Load the config; with --print-config, print it and stop."""
    from decembert_cli.config import load_config, to_yaml

    resolved: Any = load_config(cls, config, overrides)
    if print_config:
        typer.echo(to_yaml(resolved), nl=False)
        raise typer.Exit()
    return resolved


def parse_shard(value: str) -> tuple[int, int]:
    """`i/n` -> (i, n), checked."""
    from decembert_cli.errors import DecembertError

    try:
        i, n = (int(x) for x in value.split("/"))
    except ValueError:
        raise DecembertError(f"--shard {value}: write it as i/n, e.g. 0/4 for the first of 4 shards") from None
    if not (n >= 1 and 0 <= i < n):
        raise DecembertError(f"--shard {value}: need 0 <= i < n")
    return i, n
