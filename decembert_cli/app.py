"""The `decembert` command line: a Typer root with one error boundary.

Known user errors (`DecembertError`) become one red line on stderr and exit code 2, never a
traceback. Commands live in `decembert_cli/commands/`, one thin file each, and import the heavy
libraries (torch, transformers) only when they run, so `decembert --help` stays instant.
"""

from __future__ import annotations

import errno
import sys
from typing import TYPE_CHECKING, Any

import typer
from typer.core import TyperGroup

from decembert_cli import __version__
from decembert_cli.errors import DecembertError

if TYPE_CHECKING:
    # The Context that TyperGroup.invoke declares: typer's vendored click (typer.Context subclasses it).
    from typer._click.core import Context

USER_ERROR_EXIT = 2
# what the machine refuses, never a bug of ours: one error line naming the path, whichever command wrote
STORAGE_ERRORS = {
    errno.ENOSPC: "free some space and run again",
    errno.EDQUOT: "free some of your quota and run again",
    errno.EROFS: "the file system is read-only: choose a writable folder",
    errno.EACCES: "choose a folder you may write, or fix its permissions",
    errno.EPERM: "choose a folder you may write, or fix its permissions",
    errno.ENAMETOOLONG: "choose a shorter path",
}


def report_user_error(message: str) -> None:
    """Print one user-error line on stderr."""
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True, highlight=False, soft_wrap=True).print(f"[bold red]error:[/] {escape(message)}")


def _own_message(exc: DecembertError) -> str:
    """The error's message; for one raised in a data-loader worker, which torch raises again here with the
    worker's traceback inside the message, only the worker's own message (its last line)."""
    text = str(exc)
    if "Original Traceback" not in text:
        return text
    last = next((line for line in reversed(text.splitlines()) if line.strip()), text)
    return last.split(f"{DecembertError.__name__}: ", 1)[-1].strip()


class _Boundary(TyperGroup):
    """Turns a DecembertError raised anywhere below, and the storage errors of the machine (disk full,
    read-only, no permission, a name too long), into one message and exit code 2."""

    def invoke(self, ctx: Context) -> Any:
        try:
            return super().invoke(ctx)
        except DecembertError as exc:
            report_user_error(_own_message(exc))
            raise typer.Exit(code=USER_ERROR_EXIT) from None
        except OSError as exc:
            if exc.errno not in STORAGE_ERRORS:
                raise
            where = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None) or "a file"
            report_user_error(f"{where}: {exc.strerror}; {STORAGE_ERRORS[exc.errno]}")
            raise typer.Exit(code=USER_ERROR_EXIT) from None


app = typer.Typer(
    cls=_Boundary,
    name="decembert",
    help="DeCEMBERT: video-and-language pre-training on noisy instructional videos, and its downstream tasks.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,  # --install-completion, --show-completion (bash, zsh, fish, PowerShell)
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"decembert {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool | None = typer.Option(
        None, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """DeCEMBERT toolkit."""


def _register() -> None:
    from decembert_cli.commands import (
        check,
        dense_caption,
        extract_features,
        pretrain,
        recipe,
        sample_data,
        tasks,
        visualize,
    )

    app.command(name="extract-features")(extract_features.extract_features)
    app.command(name="dense-caption")(dense_caption.dense_caption)
    app.command(name="pretrain")(pretrain.pretrain)
    app.command(name="sample-data")(sample_data.sample_data)
    app.command(name="check")(check.check)
    app.command(name="tasks")(tasks.list_tasks)
    app.command(name="finetune")(tasks.finetune)
    app.command(name="evaluate")(tasks.evaluate)
    app.command(name="export")(tasks.export)
    app.command(name="recipe")(recipe.recipe)
    data = typer.Typer(help="Check datasets and corpora; index a pre-training corpus.", no_args_is_help=True)
    data.command(name="check")(tasks.data_check)
    data.command(name="index")(tasks.data_index)
    app.add_typer(data, name="data")
    app.add_typer(visualize.visualize, name="visualize")


_register()


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    app(args=argv if argv is not None else sys.argv[1:], prog_name="decembert")


if __name__ == "__main__":
    main()
