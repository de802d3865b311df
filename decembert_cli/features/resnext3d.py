"""3D ResNeXt (Hara et al., 3D-ResNets-PyTorch) assembled from pytorchvideo blocks, and its weight map.

HowTo100M's and the paper's 3D features come from Hara et al.'s ResNeXt-101 trained on Kinetics
(`resnext-101-kinetics.pth`, 16-frame clips, 112 px, mean-subtracted 0-255 pixels). Its layout:

    conv1 7x7x7 stride (1,2,2), 64 ch -> bn1 -> relu -> maxpool 3x3x3 stride 2
    layer1..4: [3, 4, 23, 3] bottlenecks, 32 groups, widths 128/256/512/1024 (out 2x), the 3x3x3
               conv carries the stride (2 in time and space from layer2 on), shortcut B (1x1x1 + BN)
    avgpool -> 2048 -> fc (400 Kinetics classes; dropped: we keep the pooled features)

pytorchvideo's `create_resnet` cannot express the doubled bottleneck width, so the network is built
from its stem, stage and `Net` blocks directly. `hara_key_map` maps every key of Hara's checkpoint
onto this module; `load_hara_state_dict` checks that every key is mapped and every shape matches.
"""

from __future__ import annotations

import contextlib
import re
import warnings
from collections.abc import Iterator, Mapping

import torch
from torch import nn

from decembert_cli.errors import DecembertError

# (depths, stem channels, cardinality, bottleneck widths of the 4 stages)
ARCHS = {
    "resnext101": ((3, 4, 23, 3), 64, 32, (128, 256, 512, 1024)),
    "resnext50": ((3, 4, 6, 3), 64, 32, (128, 256, 512, 1024)),
    # for tests and the demo: the same design, one block per stage and narrow (random weights only)
    "resnext3d-tiny": ((1, 1, 1, 1), 16, 4, (16, 32, 64, 128)),
}
HARA_MEAN = (114.7748, 107.7354, 99.4750)  # Hara et al.'s Kinetics mean on 0-255 pixels; std 1
HARA_STD = (1.0, 1.0, 1.0)


class _Pool(nn.Module):
    """Global average pool over time and space: (B, C, T, H, W) -> (B, C)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3, 4))


@contextlib.contextmanager
def quiet_pytorchvideo() -> Iterator[None]:
    """Import pytorchvideo without its FutureWarning about torch.jit.script (its code, not ours)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=FutureWarning)
        yield


def build_resnext3d(arch: str = "resnext101") -> nn.Module:
    """A Hara-style 3D ResNeXt returning pooled features (B, 3, T, H, W) -> (B, widths[-1] * 2)."""
    with quiet_pytorchvideo():
        from pytorchvideo.models.net import Net
        from pytorchvideo.models.resnet import create_bottleneck_block, create_res_stage
        from pytorchvideo.models.stem import create_res_basic_stem

    depths, stem, groups, widths = ARCHS[arch]
    blocks: list[nn.Module] = [
        create_res_basic_stem(
            in_channels=3,
            out_channels=stem,
            conv_kernel_size=(7, 7, 7),
            conv_stride=(1, 2, 2),
            conv_padding=(3, 3, 3),
            pool=nn.MaxPool3d,
            pool_kernel_size=(3, 3, 3),
            pool_stride=(2, 2, 2),
            pool_padding=(1, 1, 1),
        )
    ]
    dim_in = stem
    for i, (depth, width) in enumerate(zip(depths, widths)):
        stride = 1 if i == 0 else 2
        blocks.append(
            create_res_stage(
                depth=depth,
                dim_in=dim_in,
                dim_inner=width,
                dim_out=2 * width,
                bottleneck=create_bottleneck_block,
                conv_a_kernel_size=(1, 1, 1),
                conv_a_stride=(1, 1, 1),
                conv_a_padding=(0, 0, 0),
                conv_b_kernel_size=(3, 3, 3),
                conv_b_stride=(stride,) * 3,
                conv_b_padding=(1, 1, 1),
                conv_b_num_groups=groups,
            )
        )
        dim_in = 2 * width
    blocks.append(_Pool())
    return Net(blocks=nn.ModuleList(blocks))


_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
_BLOCK = re.compile(
    r"layer(?P<stage>[1-4])\.(?P<block>\d+)\.(?P<part>conv[123]|bn[123]|downsample\.[01])\.(?P<leaf>\w+)"
)
_PARTS = {
    "conv1": "branch2.conv_a",
    "bn1": "branch2.norm_a",
    "conv2": "branch2.conv_b",
    "bn2": "branch2.norm_b",
    "conv3": "branch2.conv_c",
    "bn3": "branch2.norm_c",
    "downsample.0": "branch1_conv",
    "downsample.1": "branch1_norm",
}
DROPPED = ("fc.weight", "fc.bias")  # the Kinetics classifier: features are taken before it


def hara_key_map(key: str) -> str | None:
    """Our key for one key of Hara's checkpoint; None for the classifier; KeyError when unknown."""
    if key in DROPPED:
        return None
    if key == "conv1.weight":
        return "blocks.0.conv.weight"
    if key.startswith("bn1.") and key[4:] in _BN:
        return f"blocks.0.norm.{key[4:]}"
    match = _BLOCK.fullmatch(key)
    if match:
        return f"blocks.{match['stage']}.res_blocks.{match['block']}.{_PARTS[match['part']]}.{match['leaf']}"
    raise KeyError(key)


def unwrap_checkpoint(obj: object, source: str) -> dict[str, torch.Tensor]:
    """The state dict inside a checkpoint: plain, {'state_dict': ...} or {'model': ...}; 'module.' stripped."""
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    elif isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise DecembertError(
            f"{source} holds no state dict of tensors; pass a PyTorch checkpoint of the backbone's weights"
        )
    return {(k[7:] if k.startswith("module.") else k): v for k, v in obj.items()}


def load_hara_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Load Hara et al.'s weights into `model` strictly: every key mapped, none missing, shapes equal."""
    own = model.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        try:
            target = hara_key_map(key)
        except KeyError:
            raise DecembertError(
                f"{source}: key '{key}' is not part of a Hara et al. 3D ResNeXt checkpoint "
                "(expected conv1, bn1, layer1-4 ..., fc); is this the right file for this backbone?"
            ) from None
        if target is None:
            continue
        if target not in own:
            raise DecembertError(
                f"{source}: key '{key}' has no place in this backbone (it would be '{target}'); "
                "the checkpoint has more blocks than the architecture; check --backbone-3d"
            )
        if tuple(value.shape) != tuple(own[target].shape):
            raise DecembertError(
                f"{source}: key '{key}' has shape {tuple(value.shape)}, "
                f"the backbone expects {tuple(own[target].shape)} "
                f"for '{target}'; check --backbone-3d"
            )
        mapped[target] = value
    missing = [k for k in own if k not in mapped and not k.endswith("num_batches_tracked")]
    if missing:
        raise DecembertError(
            f"{source}: no weights for '{missing[0]}' ({len(missing)} missing); "
            "the checkpoint is incomplete or for another architecture"
        )
    for key in own:  # checkpoints from PyTorch < 0.4 have no BN step counters
        if key not in mapped:
            mapped[key] = own[key]
    model.load_state_dict(mapped, strict=True)
