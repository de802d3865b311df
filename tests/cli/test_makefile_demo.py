"""`make demo DEMO_STEPS=N` changes the demo's pre-training steps; without it the demo preset decides."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _pretrain_command(*args: str) -> str:
    out = subprocess.run(["make", "-n", "demo", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    joined = out.replace("\\\n", " ")
    return next(line for line in joined.splitlines() if " pretrain --data sample" in line)


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_demo_steps_reaches_pretrain_only_when_set() -> None:
    assert "train.max_steps=7" in _pretrain_command("DEMO_STEPS=7")
    assert "train.max_steps" not in _pretrain_command()
