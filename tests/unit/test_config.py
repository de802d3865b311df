"""Config: strict YAML -> frozen dataclasses, overrides, presets, round trip."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from decembert_cli.config import Config, apply_override, load_config, packaged_presets, save_config, to_dict
from decembert_cli.errors import ConfigError


def test_defaults_and_frozen() -> None:
    cfg = load_config(Config)
    assert cfg.model.arch == "small" and cfg.model.max_video_tokens == 100
    with pytest.raises(dataclasses.FrozenInstanceError):
        # the assignment a frozen dataclass refuses is what is tested
        cfg.seed = 3  # type: ignore[misc]


def test_yaml_scientific_notation_becomes_float(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("loss:\n  constrained_lambda: 1e-4\n")
    cfg = load_config(Config, str(path))
    assert isinstance(cfg.loss.constrained_lambda, float) and cfg.loss.constrained_lambda == 1e-4
    assert load_config(Config, None, ["loss.constrained_lambda=2e-3"]).loss.constrained_lambda == 2e-3
    assert load_config(Config, None, ["loss.constrained_lambda=2"]).loss.constrained_lambda == 2.0


def test_unknown_key_names_file_line_and_valid_keys(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("seed: 1\nmodel:\n  arch: tiny\n  hiden_size: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(Config, str(path))
    message = str(err.value)
    assert f"{path} line 4" in message and "model.hiden_size" in message and "model.max_video_tokens" in message


def test_unknown_section_and_wrong_types(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 1\n")
    with pytest.raises(ConfigError, match="line 1: unknown key 'optim'"):
        load_config(Config, str(path))
    path.write_text("model:\n  max_video_tokens: many\n")
    with pytest.raises(ConfigError, match="line 2: model.max_video_tokens: expected an integer"):
        load_config(Config, str(path))
    path.write_text("model:\n  attention: flash\n")
    with pytest.raises(ConfigError, match="use one of: auto, fused, eager"):
        load_config(Config, str(path))
    path.write_text("model: [1, 2]\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(Config, str(path))
    path.write_text("model:\n  arch: tiny\n   bad indent: 1\n")
    with pytest.raises(ConfigError, match="line 3: not valid YAML"):
        load_config(Config, str(path))
    with pytest.raises(ConfigError, match="expected true or false"):
        load_config(Config, None, ["loss.constrained_on_negatives=maybe"])


def test_overrides_apply_in_order_after_the_file() -> None:
    cfg = load_config(Config, "tiny", ["model.arch=base", "seed=5", "model.arch=small"])
    assert cfg.model.arch == "small" and cfg.model.init == "none" and cfg.seed == 5
    with pytest.raises(ConfigError, match="unknown key 'model.nope'.*model.arch"):
        apply_override(cfg, "model.nope=1")
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        apply_override(cfg, "model.arch")
    with pytest.raises(ConfigError, match="is a value, not a section"):
        apply_override(cfg, "seed.x=1")
    assert apply_override(cfg, "loss={constrained_lambda: 0.5}").loss.constrained_lambda == 0.5


def test_packaged_presets_and_missing_file() -> None:
    assert {"paper", "tiny", "demo"} <= set(packaged_presets())
    for name in packaged_presets():  # every preset loads strictly
        load_config(Config, name)
    paper = load_config(Config, "paper")
    assert paper.model.arch == "base" and paper.model.init == "bert-base-uncased"
    # the paper's forms of the grounding settings (the defaults differ: measured on the sample corpus)
    assert (paper.data.mask_unit, paper.data.negatives, paper.loss.mlm_on_negatives) == ("token", "asr", True)
    assert paper.model.video_positions == "shared"
    with pytest.raises(ConfigError, match="neither a file nor a packaged preset.*paper"):
        load_config(Config, "no-such-config.yaml")


def test_saved_config_loads_back_identical(tmp_path: Path) -> None:
    cfg = load_config(Config, "tiny", ["loss.constrained_lambda=1e-4", "model.attention=eager"])
    path = save_config(cfg, tmp_path / "run" / "config.yaml")
    assert load_config(Config, str(path)) == cfg
    assert to_dict(cfg)["loss"]["constrained_lambda"] == 1e-4
    assert not list((tmp_path / "run").glob(".*tmp"))  # no temporary file left behind


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.lr=0", "train.lr: 0 is out of range; use a value > 0"),
        ("train.lr=-1e-4", "train.lr: -0.0001 is out of range; use a value > 0"),
        ("train.lr=.inf", "train.lr: expected a finite number"),
        ("train.lr=.nan", "train.lr: expected a finite number"),
        ("train.lr=1" + "0" * 400, "train.lr: 10000000000000000000... is too large"),
        ("model.dropout=1", "model.dropout: 1 is out of range; use a value in [0, 1)"),
        ("model.dropout=-0.1", "model.dropout: -0.1 is out of range"),
        ("train.warmup=-1", "train.warmup: -1 is out of range; use a value in [0, 1)"),
        ("loss.constrained_warmup=-5", "loss.constrained_warmup: -5 is out of range; use a value >= 0"),
        ("data.mask_prob=1.2", "data.mask_prob: 1.2 is out of range; use a value in [0, 1]"),
        ("data.negative_prob=-0.5", "data.negative_prob: -0.5 is out of range"),
        ("train.batch_size=0", "train.batch_size: 0 is out of range; use a value >= 1"),
        ("model.feature_dim_2d=-2048", "model.feature_dim_2d: -2048 is out of range; use a value >= 1"),
        ("train.betas=[0.9, 1.5]", "train.betas[1]: 1.5 is out of range; use a value in [0, 1)"),
        ("seed=-1", "seed: -1 is out of range; use a value in [0, 4294967295]"),
    ],
)
def test_out_of_range_settings_are_refused_when_loaded(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(Config, "demo", [override])
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_out_of_range_in_a_file_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  batch_size: 16\n  lr: -3\n")
    with pytest.raises(ConfigError, match=r"bad.yaml line 3: train.lr: -3 is out of range; use a value > 0"):
        load_config(Config, str(path))
    edges = load_config(
        Config, "demo", ["data.mask_prob=0", "data.mask_prob=1", "model.dropout=0", "train.max_steps=0", "seed=0"]
    )
    assert edges.data.mask_prob == 1 and edges.model.dropout == 0  # the ends of a closed range are allowed


def test_task_settings_have_ranges_too() -> None:
    from decembert_cli.engine.finetune import resolve

    with pytest.raises(ConfigError, match=r"task.train_fraction: 0 is out of range; use a value in \(0, 1\]"):
        resolve("msrvtt-qa", None, ["task.train_fraction=0"], None)


def test_a_run_saved_before_a_default_changed_resumes_with_its_former_value(tmp_path: Path) -> None:
    """data.mask_unit's default became concept: a run config written without the key used token masking."""
    from decembert_cli.config.loader import former_defaults

    new = tmp_path / "new.yaml"
    save_config(Config(), new)
    assert former_defaults(new) == []
    old = tmp_path / "old.yaml"
    old.write_text("\n".join(line for line in new.read_text().splitlines() if "mask_unit" not in line) + "\n")
    assert former_defaults(old) == ["data.mask_unit=token"]
    resumed = load_config(Config, str(old), former_defaults(old))
    assert resumed.data.mask_unit == "token" and Config().data.mask_unit == "concept"
