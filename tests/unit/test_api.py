"""The public API (`decembert_cli.api`) is complete enough to live in: every name documented, the package
typed (`py.typed`), and the example plugin type-checks strictly against it."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import decembert_cli.api as api

ROOT = Path(__file__).resolve().parents[2]


def test_every_public_class_and_function_has_its_own_docstring() -> None:
    missing = []
    for name in api.__all__:
        obj = getattr(api, name)
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue  # the range types of config fields (typing.Annotated aliases) carry no docstring
        doc = (obj.__doc__ or "").strip()
        if not doc or doc.startswith(f"{obj.__name__}("):  # a dataclass's generated signature is not a docstring
            missing.append(name)
    assert not missing, f"undocumented in decembert_cli.api: {missing}"


def test_the_package_ships_py_typed() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    assert (ROOT / "decembert_cli" / "py.typed").is_file()
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "py.typed" in data["decembert_cli"]


PLUGINS = {"decembert-mc": "decembert_mc", "decembert-jsonl-corpus": "decembert_jsonl_corpus"}
PLUGINS["decembert-grid-captioner"] = "decembert_grid_captioner"


def test_the_example_plugins_pass_mypy_strict_against_the_package(tmp_path: Path) -> None:
    """decembert_cli is read as an installed typed library is (follow_imports = silent: its types are used,
    its own errors are not the plugins'); the plugins (a task, a corpus, a captioner) are checked with --strict."""
    assert sorted(PLUGINS) == sorted(p.name for p in (ROOT / "plugins").iterdir() if (p / "pyproject.toml").is_file())
    paths = ":".join([str(ROOT), *(str(ROOT / "plugins" / folder) for folder in PLUGINS)])
    config = tmp_path / "mypy.ini"
    config.write_text(
        f"[mypy]\nstrict = True\nmypy_path = {paths}\n\n[mypy-decembert_cli.*]\nfollow_imports = silent\n"
    )
    cache = ROOT / ".mypy_cache" / "plugin-strict"  # kept between runs: the first one reads torch's types
    packages = [arg for package in PLUGINS.values() for arg in ("-p", package)]
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(config), "--cache-dir", str(cache), *packages],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout + done.stderr
