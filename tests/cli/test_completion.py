"""Shell completion (Typer's --install-completion / --show-completion) completes subcommands."""

from __future__ import annotations

import os
import subprocess
import sys


def _run(*args: str, **env: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "decembert_cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_bash_completion_answers() -> None:
    # (--show-completion / --install-completion detect the shell from the process tree, so they are not run here)
    words = _run(_DECEMBERT_COMPLETE="complete_bash", COMP_WORDS="decembert data ", COMP_CWORD="2").split()
    assert words == ["check", "index"]
    top = _run(_DECEMBERT_COMPLETE="complete_bash", COMP_WORDS="decembert pre", COMP_CWORD="1").split()
    assert top == ["pretrain"]
