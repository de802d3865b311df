"""The example plugins (plugins/: a task, a corpus and a captioner) installed as separate packages, each used
through the CLI as its users would, and each package's own tests run against the installed decembert."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PLUGINS = ROOT / "plugins"
NAMES = ("decembert-mc", "decembert-jsonl-corpus", "decembert-grid-captioner")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The plugins pip-installed into their own folder (not into the environment), put on PYTHONPATH."""
    import shutil

    target = tmp_path_factory.mktemp("site")
    sources = []
    for name in NAMES:  # copies: a build leaves build/ and egg-info beside the sources
        sources.append(tmp_path_factory.mktemp("build") / name)
        shutil.copytree(
            PLUGINS / name, sources[-1], ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
        )
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
            *map(str, sources),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=sources[0],
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

    root = generate(tmp_path / "corpus", videos=2, clips=60, feature_dim_2d=16, feature_dim_3d=16)
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
    logged = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    (validation,) = [x for x in logged if x.get("split") == "val"]  # the plugin's val split, scored by its metric
    assert validation["questions"] == 6 and 0 <= validation["accuracy"] <= 100
    scored = _decembert(installed, "evaluate", "msrvtt-mc", "--checkpoint", str(tmp_path / "run"))
    assert scored.returncode == 0, scored.stderr + scored.stdout
    metrics = json.loads((tmp_path / "run" / "eval-test" / "metrics.json").read_text())
    assert metrics["metrics"]["questions"] == 12 and 0 <= metrics["metrics"]["accuracy"] <= 100


def test_the_corpus_plugin_pretrains(installed: dict[str, str], tmp_path: Path) -> None:
    from decembert_cli.data.sample.corpus import generate

    root = generate(tmp_path / "corpus", videos=6, clips=0, feature_dim_2d=16, feature_dim_3d=16)
    captions = json.loads((root / "caption.json").read_text())
    lines = [
        json.dumps({"video_id": v, "start": s, "end": e, "text": t})
        for v, c in captions.items()
        for s, e, t in zip(c["start"], c["end"], c["text"])
    ]
    (root / "caption.json").unlink()
    (root / "captions.jsonl").write_text("\n".join(lines) + "\n")
    sets = [f"data.root={root}", "model.feature_dim_2d=16", "model.feature_dim_3d=16", "train.max_steps=2"]
    sets += ["train.batch_size=4", "train.device=cpu", "data.val_videos=1"]
    args = ["pretrain", "--data", "jsonl", "--config", "tiny", *[x for s in sets for x in ("--set", s)]]
    trained = _decembert(installed, *args, "--out", str(tmp_path / "run"))
    assert trained.returncode == 0, trained.stderr + trained.stdout
    assert "corpus jsonl: 6 of 6 videos usable" in trained.stdout
    assert (tmp_path / "run" / "checkpoints" / "step-00000002.pt").is_file()


def test_the_captioner_plugin_dense_captions_videos(installed: dict[str, str], tmp_path: Path) -> None:
    from decembert_cli.data.sample.corpus import generate

    root = generate(tmp_path / "corpus", videos=2, clips=0, feature_dim_2d=16, feature_dim_3d=16, render=True)
    out = tmp_path / "dc"
    args = ["dense-caption", str(root / "videos"), "--backend", "grid", "--option", "rows=3", "--out", str(out)]
    done = _decembert(installed, *args)
    assert done.returncode == 0, done.stderr + done.stdout
    stored = sorted(out.glob("sample_*.json"))
    record = json.loads(stored[0].read_text())
    assert len(stored) == 2 and record["backend"] == "grid" and record["model"] == "3x2 colour grid"
    regions = record["frames"][0]["regions"]
    assert len(regions) == 6 and all(r["caption"].endswith(" area") for r in regions)  # 3 rows x 2 columns


@pytest.mark.parametrize("name", NAMES)
def test_the_plugins_own_tests_pass(installed: dict[str, str], name: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(PLUGINS / name / "tests")],
        capture_output=True,
        text=True,
        env=installed,
        timeout=600,
        cwd=PLUGINS / name,
    )
    assert result.returncode == 0, result.stdout + result.stderr
