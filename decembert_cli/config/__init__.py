"""Configuration: frozen dataclasses (schema.py) loaded strictly from YAML (loader.py)."""

from decembert_cli.config.loader import (
    apply_override,
    from_dict,
    load_config,
    packaged_presets,
    save_config,
    to_dict,
    to_yaml,
)
from decembert_cli.config.schema import (
    Config,
    Count,
    DataConfig,
    Fraction,
    LossConfig,
    ModelConfig,
    NonNegative,
    NonNegativeInt,
    Positive,
    Probability,
    Range,
    Share,
    TrainConfig,
)

__all__ = [
    "Config",
    "Count",
    "Fraction",
    "NonNegative",
    "NonNegativeInt",
    "Positive",
    "Probability",
    "Range",
    "Share",
    "DataConfig",
    "LossConfig",
    "ModelConfig",
    "TrainConfig",
    "apply_override",
    "from_dict",
    "load_config",
    "packaged_presets",
    "save_config",
    "to_dict",
    "to_yaml",
]
