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


def plugin_env(folder: Path, group: str, modules: dict[str, str]) -> dict[str, str]:
    """A throwaway distribution `broken-pkg` registering each module's `Plugin` in `group` (entry point name:
    the module's name with dashes); the environment variables that make `run_cli` find it."""
    info = folder / "broken_pkg-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-pkg\nVersion: 0.1\n")
    lines = [f"[{group}]"] + [f"{name.replace('_', '-')} = {name}:Plugin" for name in modules]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    for name, source in modules.items():
        (folder / f"{name}.py").write_text(source)
    return {"PYTHONPATH": os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")])}
