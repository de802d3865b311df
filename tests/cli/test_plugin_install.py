"""The example plugin (plugins/decembert-mc) installed as a separate package: found, fine-tuned, evaluated."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = ROOT / "plugins" / "decembert-mc"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The plugin pip-installed into its own folder (not into the environment), put on PYTHONPATH."""
    import shutil

    target = tmp_path_factory.mktemp("site")
    source = tmp_path_factory.mktemp("build") / "decembert-mc"  # a copy: the build leaves build/ and egg-info beside it
    shutil.copytree(PLUGIN, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=source,
    )
    assert build.returncode == 0, build.stderr
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")]),
        "HF_HUB_OFFLINE": "1",
    }


def _decembert(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "decembert_cli", *args], capture_output=True, text=True, env=env, timeout=600
    )


def test_installed_plugin_is_listed_fine_tuned_and_evaluated(installed: dict[str, str], tmp_path: Path) -> None:
    listed = _decembert(installed, "tasks")
    assert listed.returncode == 0, listed.stderr
    assert "msrvtt-mc" in listed.stdout and "decembert-mc" in listed.stdout and "0.1.0" in listed.stdout
    from decembert_cli.data.sample.corpus import generate

    root = generate(tmp_path / "corpus", videos=2, clips=40, feature_dim_2d=16, feature_dim_3d=16)
    sets = [
        f"task.root={root / 'msrvtt'}",
        "model.arch=tiny",
        "model.init=none",
        "model.feature_dim_2d=16",
        "model.feature_dim_3d=16",
        "train.max_steps=3",
        "train.batch_size=10",
        "train.device=cpu",
    ]
    tuned = _decembert(
        installed, "finetune", "msrvtt-mc", *[x for s in sets for x in ("--set", s)], "--out", str(tmp_path / "run")
    )
    assert tuned.returncode == 0, tuned.stderr + tuned.stdout
    scored = _decembert(installed, "evaluate", "msrvtt-mc", "--checkpoint", str(tmp_path / "run"))
    assert scored.returncode == 0, scored.stderr + scored.stdout
    metrics = json.loads((tmp_path / "run" / "eval-test" / "metrics.json").read_text())
    assert metrics["metrics"]["questions"] == 8 and 0 <= metrics["metrics"]["accuracy"] <= 100


def test_the_plugins_own_tests_pass(installed: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(PLUGIN / "tests")],
        capture_output=True,
        text=True,
        env=installed,
        timeout=600,
        cwd=PLUGIN,
    )
    assert result.returncode == 0, result.stdout + result.stderr
