"""The command line: help without torch, version, the error boundary, `check` and its options."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from decembert_cli.app import app

runner = CliRunner()


def test_help_does_not_import_torch() -> None:
    code = (
        "import sys\n"
        "from decembert_cli.app import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
        "heavy = [m for m in ('torch', 'transformers', 'numpy') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "check" in result.stdout


def test_version() -> None:
    from decembert_cli import __version__

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"decembert {__version__}"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["check", "--set", "model.hidden=3"], "unknown key 'model.hidden'"),
        (["check", "--config", "missing.yaml"], "neither a file nor a packaged preset"),
        (["check", "--config", "tiny", "--device", "cuda:7"], "--device cuda:7 is not available"),
        (["check", "--config", "tiny", "--device", "gpu"], "not a device name"),
    ],
)
def test_user_errors_are_one_message_and_exit_2(args: list[str], needle: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert needle in result.stderr and "Traceback" not in result.stderr + result.stdout
    assert result.stderr.strip().count("\n") == 0  # one line


def test_print_config_prints_resolved_yaml() -> None:
    result = runner.invoke(
        app, ["check", "--config", "tiny", "--set", "loss.constrained_lambda=1e-4", "--print-config"]
    )
    assert result.exit_code == 0
    assert "arch: tiny" in result.stdout and "constrained_lambda: 0.0001" in result.stdout
    assert "forward+backward" not in result.stdout  # it stops after printing


def test_check_runs_and_its_options_take_effect(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "check",
            "--config",
            "tiny",
            "--batch-size",
            "3",
            "--neighbours",
            "2",
            "--device",
            "cpu",
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.stdout + result.stderr
    out = result.stdout
    for label in ("MLM", "video-text matching", "constrained attention"):
        assert label in out
    assert "batch: 3 samples" in out and "5 candidate captions" in out and "cpu" in out
    assert (tmp_path / "config.yaml").read_text().startswith("model:")
    other = runner.invoke(app, ["check", "--config", "tiny", "--batch-size", "2", "--neighbours", "0"])
    assert "batch: 2 samples" in other.stdout and "1 candidate captions" in other.stdout
    assert "constrained attention" not in other.stdout or "0.0000" in other.stdout


def test_console_script_is_installed() -> None:
    import shutil

    exe = shutil.which("decembert") or str(__import__("pathlib").Path(sys.executable).parent / "decembert")
    result = subprocess.run([exe, "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("decembert ")


def test_seed_changes_the_generated_batch_and_weights() -> None:
    def losses(seed: int) -> str:
        result = runner.invoke(app, ["check", "--config", "tiny", "--set", f"seed={seed}"])
        assert result.exit_code == 0
        return "\n".join(line for line in result.stdout.splitlines() if "│" in line)

    assert losses(1) == losses(1)
    assert losses(1) != losses(2)


def test_extract_features_command(tmp_path: Path) -> None:
    from tests.videos import TINY_BACKBONES, write_video

    write_video(tmp_path / "clip.avi", 24, 60)
    tiny = TINY_BACKBONES
    result = runner.invoke(
        app, ["extract-features", str(tmp_path / "clip.avi"), "--out", str(tmp_path / "store"), *tiny]
    )
    assert result.exit_code == 0, result.output
    assert "1 extracted, 0 already done, 0 failed of 1 videos" in result.output
    assert (tmp_path / "store" / "2d" / "clip.npy").is_file() and (tmp_path / "store" / "3d" / "stream.json").is_file()
    for args, needle in (
        (["--shard", "3/2"], "--shard 3/2: need 0 <= i < n"),
        (["--shard", "x"], "--shard x: write it as i/n"),
        (["--decoder", "ffmpeg"], "--decoder ffmpeg: use auto, opencv or pyav"),
        (["--device", "tpu"], "--device tpu is not"),
        (["--backbone-3d", "c3d"], "unknown 3D backbone 'c3d'; installed:"),
    ):
        bad = runner.invoke(
            app, ["extract-features", str(tmp_path / "clip.avi"), "--out", str(tmp_path / "o2"), *tiny, *args]
        )
        assert bad.exit_code == 2 and needle in bad.output, (args, bad.output)
    missing = runner.invoke(app, ["extract-features", str(tmp_path / "nope"), "--out", str(tmp_path / "o3"), *tiny])
    assert missing.exit_code == 2 and "does not exist" in missing.output
    offline = runner.invoke(app, ["extract-features", str(tmp_path / "clip.avi"), "--out", str(tmp_path / "o4")])
    assert offline.exit_code == 2 and "HF_HUB_OFFLINE=1 and no --weights-2d" in offline.output
