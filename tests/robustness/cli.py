"""Running the CLI as a user would, for the robustness suites: one subprocess per case, and the checks
every bad input must pass (exit status 2, exactly one `error:` line naming the problem, no traceback)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

USER_ERROR = 2


def run_cli(
    argv: list[str], cwd: Path, *, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`decembert ARGV` in a fresh process; `env`: variables set on top of this one's (e.g. PYTHONPATH)."""
    return subprocess.run(
        [sys.executable, "-m", "decembert_cli", *argv],
        cwd=cwd,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "400", "NO_COLOR": "1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_one_error(done: subprocess.CompletedProcess[str], needle: str, *, status: int = USER_ERROR) -> str:
    """The run ended with `status`, one `error:` line containing `needle`, no traceback; returns the line."""
    output = done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == status, output
    assert "Traceback" not in output, output
    assert len(errors) == 1 and needle in errors[0], output
    return errors[0]


def tree(folder: Path) -> dict[Path, bytes | None]:
    """Every path under `folder` with its bytes (None for folders): to show that nothing was changed."""
    return {p: (p.read_bytes() if p.is_file() and not p.is_symlink() else None) for p in folder.rglob("*")}
