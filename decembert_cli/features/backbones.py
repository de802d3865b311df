"""Feature backbones: any timm model for 2D, a pluggable registry for 3D.

A `Backbone` is a module from normalised pixels to one pooled vector per image (2D: (B, 3, H, W))
or per clip (3D: (B, 3, T, H, W)), plus what it expects: input size, clip length and frame rate,
mean and std on 0-255 pixels. Weights come from a file (`--weights-2d/--weights-3d PATH`, loaded
strictly), from the library's own hub download (`"hub"`), or are random (`"random"`, seeded, for
tests and the demo). `meta()` records everything that decides the features, with a SHA-256 of the
weights actually loaded.

3D backbones are registered under the entry-point group `decembert.backbones_3d` as factories
`(weights: str) -> Backbone`; the built-in ones are Hara et al.'s ResNeXt-101 (the paper's),
ResNeXt-50, a tiny ResNeXt for tests, and pytorchvideo's Kinetics SlowOnly R50.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from safetensors.torch import load_file
from torch import nn

from decembert_cli.errors import DecembertError
from decembert_cli.features.resnext3d import (
    ARCHS,
    HARA_MEAN,
    HARA_STD,
    build_resnext3d,
    load_hara_state_dict,
    quiet_pytorchvideo,
    unwrap_checkpoint,
)
from decembert_cli.model.weights import state_sha256
from decembert_cli.registry import Registry

DEFAULT_2D = "resnet152.tv_in1k"  # torchvision's ImageNet ResNet-152, as HowTo100M's features
DEFAULT_3D = "resnext101"  # Hara et al.'s Kinetics ResNeXt-101, as HowTo100M's features
RANDOM_SEED = 0  # random-init backbones are seeded so reruns agree (and resume can check them)

backbones_3d = Registry("decembert.backbones_3d", "3D backbone")


@dataclass
class Backbone:
    stream: str  # "2d" | "3d"
    name: str
    module: nn.Module
    dim: int
    size: int  # input side in pixels (short side resized to it, centre crop)
    mean: tuple[float, ...]  # per channel (RGB), on 0-255 pixels
    std: tuple[float, ...]
    weights: str  # a file path, "hub:<id>" or "random"
    frames: int = 1  # clip length (3D)
    fps: float = 0.0  # clip frame rate (3D)
    _digest: str | None = field(default=None, repr=False)

    def weights_sha256(self) -> str:
        """SHA-256 over the module's state (names, shapes, dtypes, values), whatever the weights' source."""
        if self._digest is None:
            self._digest = state_sha256(self.module)
        return self._digest

    def meta(self) -> dict[str, Any]:
        out = {
            "backbone": self.name,
            "weights": self.weights,
            "weights_sha256": self.weights_sha256(),
            "dim": self.dim,
            "resolution": self.size,
            "crop": "resize short side, centre crop",
            "normalisation": {"mean": list(self.mean), "std": list(self.std), "pixels": "RGB 0-255"},
        }
        if self.stream == "3d":
            out.update(clip_frames=self.frames, clip_fps=self.fps)
        return out


def load_weights_file(path: str | Path, what: str) -> dict[str, torch.Tensor]:
    """A state dict from a .pth/.pt/.bin/.safetensors file, unwrapped; a clear error otherwise."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DecembertError(f"{what}: {path} does not exist; pass the path of a weights file")
    try:
        if path.suffix == ".safetensors":
            obj: object = load_file(str(path))
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and safetensors errors alike
        raise DecembertError(
            f"{what}: cannot read {path} as PyTorch weights ({exc.__class__.__name__}: {exc})"
        ) from None
    return unwrap_checkpoint(obj, str(path))


def _strict_load(
    module: nn.Module, state: dict[str, torch.Tensor], source: str, ignore_prefix: tuple[str, ...]
) -> None:
    own = module.state_dict()
    for key, value in state.items():
        if key not in own:
            if key.startswith(ignore_prefix):
                continue  # the classifier, which feature extraction removes
            raise DecembertError(f"{source}: unexpected key '{key}'; these weights are for another architecture")
        if tuple(value.shape) != tuple(own[key].shape):
            raise DecembertError(
                f"{source}: key '{key}' has shape {tuple(value.shape)}, the model expects {tuple(own[key].shape)}"
            )
    missing = [k for k in own if k not in state]
    if missing:
        raise DecembertError(
            f"{source}: no weights for '{missing[0]}' ({len(missing)} missing); "
            "the file is incomplete or for another architecture"
        )
    module.load_state_dict({k: state[k] for k in own}, strict=True)


def build_2d(name: str = DEFAULT_2D, weights: str = "hub", size: int | None = None) -> Backbone:
    """A timm model with its classifier removed (global-pooled features). `weights`: "hub", "random" or a path."""
    import timm

    pretrained = weights == "hub"
    if weights == "random":
        torch.manual_seed(RANDOM_SEED)
    try:
        model = timm.create_model(name, pretrained=pretrained, num_classes=0)
    except RuntimeError as exc:
        if "Unknown model" in str(exc):
            near = timm.list_models(f"*{name.split('.')[0]}*")[:8]
            raise DecembertError(f"unknown timm model '{name}'; similar names: {', '.join(near) or 'none'}") from None
        raise DecembertError(f"cannot build 2D backbone '{name}': {exc}") from None
    except Exception as exc:  # hub download failures: offline, no such weights tag, ...
        raise DecembertError(
            f"cannot download the weights of '{name}' ({exc.__class__.__name__}: {exc}); "
            "pass --weights-2d PATH to a local file, or --random-init for a random backbone"
        ) from None
    # timm sets both on every model it creates (create_model is typed as returning a plain nn.Module)
    cfg = cast(dict[str, Any], model.pretrained_cfg)
    num_features = cast(int, model.num_features)
    if weights not in ("hub", "random"):
        classifier = cfg.get("classifier") or "fc"
        prefixes = tuple(f"{c}." for c in ([classifier] if isinstance(classifier, str) else classifier))
        _strict_load(model, load_weights_file(weights, "--weights-2d"), weights, prefixes)
    mean = tuple(float(m) * 255 for m in cfg.get("mean", (0.485, 0.456, 0.406)))
    std = tuple(float(s) * 255 for s in cfg.get("std", (0.229, 0.224, 0.225)))
    side = int(size or cfg.get("input_size", (3, 224, 224))[-1])
    source = (
        f"hub:{name}"
        if pretrained
        else ("random" if weights == "random" else str(Path(weights).expanduser().resolve()))
    )
    return Backbone("2d", name, model.eval(), int(num_features), side, mean, std, source)


def build_3d(name: str = DEFAULT_3D, weights: str = "hub", size: int | None = None) -> Backbone:
    """The registered 3D backbone `name`. `weights`: "hub", "random" or a path."""
    factory = backbones_3d.load(name)
    if weights == "random":
        torch.manual_seed(RANDOM_SEED)
    backbone = factory(weights)
    if size:
        backbone.size = int(size)
    backbone.module.eval()
    return backbone


# --- built-in 3D backbones (registered in pyproject.toml) --------------------------------------------


def _hara(arch: str, weights: str) -> Backbone:
    module = build_resnext3d(arch)
    if weights == "hub":
        raise DecembertError(
            f"3D backbone '{arch}': Hara et al.'s Kinetics weights have no library download; get "
            f"{arch.replace('resnext', 'resnext-')}-kinetics.pth from github.com/kenshohara/3D-ResNets-PyTorch "
            "and pass --weights-3d PATH (or --random-init)"
        )
    source = "random"
    if weights != "random":
        load_hara_state_dict(module, load_weights_file(weights, "--weights-3d"), weights)
        source = str(Path(weights).expanduser().resolve())
    dim = 2 * ARCHS[arch][3][-1]
    return Backbone("3d", arch, module, dim, 112, HARA_MEAN, HARA_STD, source, frames=16, fps=24.0)


def resnext101(weights: str) -> Backbone:
    """Hara et al.'s 3D ResNeXt-101 (Kinetics, 16 frames at 24 fps, 112 px): the paper's 3D features."""
    return _hara("resnext101", weights)


def resnext50(weights: str) -> Backbone:
    """Hara et al.'s 3D ResNeXt-50 (resnext-50-kinetics.pth)."""
    return _hara("resnext50", weights)


def resnext3d_tiny(weights: str) -> Backbone:
    """A one-block-per-stage, narrow ResNeXt of the same design (256-d): random weights, for tests and the demo."""
    if weights != "random":
        raise DecembertError("3D backbone 'resnext3d-tiny' has no trained weights; use it with --random-init")
    return _hara("resnext3d-tiny", weights)


def slow_r50(weights: str) -> Backbone:
    """pytorchvideo's Kinetics-400 SlowOnly R50 (8 frames at 30/8 fps, 224 px), downloaded by pytorchvideo's hub."""
    with quiet_pytorchvideo():
        from pytorchvideo.models import hub

    try:
        model = hub.slow_r50(pretrained=weights == "hub")
    except Exception as exc:
        raise DecembertError(
            f"cannot download slow_r50 ({exc.__class__.__name__}: {exc}); pass --weights-3d PATH or --random-init"
        ) from None
    head = model.blocks[-1]
    head.proj = nn.Identity()  # pooled 2048-d features instead of Kinetics logits
    head.dropout = nn.Identity()
    head.pool = nn.AdaptiveAvgPool3d(1)
    source = "hub:pytorchvideo/slow_r50" if weights == "hub" else "random"
    if weights not in ("hub", "random"):
        state = load_weights_file(weights, "--weights-3d")
        _strict_load(model, state, weights, ("blocks.5.proj.",))
        source = str(Path(weights).expanduser().resolve())
    mean = tuple(m * 255 for m in (0.45, 0.45, 0.45))
    std = tuple(s * 255 for s in (0.225, 0.225, 0.225))
    return Backbone("3d", "slow_r50", model, 2048, 224, mean, std, source, frames=8, fps=30 / 8)


def normalise_pixels(pixels: torch.Tensor, backbone: Backbone) -> torch.Tensor:
    """uint8 (B, [T,] H, W, 3) -> float (B, 3, [T,] H, W) normalised for `backbone`, on pixels' device."""
    x = pixels.float()
    mean = torch.tensor(backbone.mean, device=x.device)
    std = torch.tensor(backbone.std, device=x.device)
    x = (x - mean) / std
    return x.permute(0, 4, 1, 2, 3) if x.ndim == 5 else x.permute(0, 3, 1, 2)
