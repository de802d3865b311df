"""The distribution lists every package folder (tasks/ installs as decembert_tasks)."""

from __future__ import annotations

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[2]


def test_every_package_folder_is_in_pyproject() -> None:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    renamed = {folder: name for name, folder in setuptools["package-dir"].items()}
    found = set()
    for init in ROOT.glob("*/**/__init__.py"):
        parts = init.parent.relative_to(ROOT).parts
        if parts[0] in ("decembert_cli", *renamed):
            found.add(".".join((renamed.get(parts[0], parts[0]), *parts[1:])))
    assert found == set(setuptools["packages"])


def test_first_party_tasks_import_under_their_namespaced_name() -> None:
    import decembert_tasks.qa as qa

    assert Path(qa.__file__).resolve().parent == ROOT / "tasks"
