"""Feature backbones: Hara et al.'s checkpoint layout loads strictly and computes the same features."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from decembert_cli.errors import DecembertError
from decembert_cli.features import backbones as B
from decembert_cli.features.resnext3d import build_resnext3d, hara_key_map


class _HaraBlock(nn.Module):
    """Hara et al.'s ResNeXt bottleneck, written from the paper's description (the reference)."""

    def __init__(self, inplanes: int, planes: int, cardinality: int, stride: int, downsample: nn.Module | None) -> None:
        super().__init__()
        mid = cardinality * (planes // 32)
        self.conv1 = nn.Conv3d(inplanes, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm3d(mid)
        self.conv2 = nn.Conv3d(mid, mid, 3, stride=stride, padding=1, groups=cardinality, bias=False)
        self.bn2 = nn.BatchNorm3d(mid)
        self.conv3 = nn.Conv3d(mid, planes * 2, 1, bias=False)
        self.bn3 = nn.BatchNorm3d(planes * 2)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return torch.relu(out + (self.downsample(x) if self.downsample is not None else x))


class _HaraResNeXt(nn.Module):
    """The layout of resnext-101-kinetics.pth: conv1, bn1, layer1-4, fc (400 classes)."""

    def __init__(self, layers=(3, 4, 23, 3), cardinality: int = 32) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(3, 64, 7, stride=(1, 2, 2), padding=3, bias=False)
        self.bn1 = nn.BatchNorm3d(64)
        self.maxpool = nn.MaxPool3d(3, stride=2, padding=1)
        inplanes = 64
        for i, (n, planes) in enumerate(zip(layers, (128, 256, 512, 1024)), start=1):
            stride = 1 if i == 1 else 2
            blocks = []
            for b in range(n):
                down = None
                if b == 0:
                    down = nn.Sequential(
                        nn.Conv3d(inplanes, planes * 2, 1, stride=stride, bias=False), nn.BatchNorm3d(planes * 2)
                    )
                blocks.append(_HaraBlock(inplanes, planes, cardinality, stride if b == 0 else 1, down))
                inplanes = planes * 2
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
        self.fc = nn.Linear(2048, 400)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
        return x.mean(dim=(2, 3, 4))  # Hara: AvgPool3d((1, 4, 4)) on a 1x4x4 map = the global mean


def _randomise_bn(model: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm3d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


@pytest.fixture(scope="module")
def hara_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    reference = _HaraResNeXt().eval()
    _randomise_bn(reference)
    state = {f"module.{k}": v for k, v in reference.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path_factory.mktemp("hara") / "resnext-101-kinetics.pth"
    torch.save({"epoch": 200, "arch": "resnext-101", "state_dict": state}, path)  # as the DataParallel original
    return reference, state, path


def test_hara_checkpoint_loads_strictly_and_computes_the_same_features(hara_checkpoint):
    reference, state, path = hara_checkpoint
    # conv1, bn1, blocks, downsamples, fc
    assert len(state) == 1 + 4 + sum(n * 15 + 5 for n in (3, 4, 23, 3)) + 2 == 522
    backbone = B.build_3d("resnext101", str(path))
    assert (backbone.dim, backbone.size, backbone.frames, backbone.fps) == (2048, 112, 16, 24.0)
    clip = torch.randn(2, 3, 16, 112, 112)
    with torch.inference_mode():
        ours, theirs = backbone.module(clip), reference.features(clip)
    assert ours.shape == (2, 2048)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
    assert backbone.meta()["weights_sha256"] == B.build_3d("resnext101", str(path)).weights_sha256()


def test_every_hara_key_maps_onto_a_distinct_key_of_ours(hara_checkpoint):
    _, state, _ = hara_checkpoint
    own = build_resnext3d("resnext101").state_dict()
    targets = [hara_key_map(k[len("module.") :]) for k in state]
    mapped = [t for t in targets if t is not None]
    assert len(mapped) == len(set(mapped)) and set(mapped) <= set(own)
    assert {k for k in own if not k.endswith("num_batches_tracked")} == set(mapped)
    assert targets.count(None) == 2  # fc.weight, fc.bias


@pytest.mark.parametrize(
    "edit,message",
    [
        (
            lambda s: s.pop("module.layer3.7.bn2.running_var"),
            "no weights for 'blocks.3.res_blocks.7.branch2.norm_b.running_var'",
        ),
        (
            lambda s: s.__setitem__("module.layer2.0.conv2.weight", torch.zeros(256, 8, 3, 3, 4)),
            "key 'layer2.0.conv2.weight' has shape (256, 8, 3, 3, 4)",
        ),
        (
            lambda s: s.__setitem__("module.layer5.0.conv1.weight", torch.zeros(1)),
            "key 'layer5.0.conv1.weight' is not part of",
        ),
        (
            lambda s: s.__setitem__("module.layer3.23.conv1.weight", torch.zeros(1)),
            "key 'layer3.23.conv1.weight' has no place",
        ),
    ],
)
def test_a_wrong_checkpoint_names_the_first_bad_key(hara_checkpoint, tmp_path, edit, message):
    _, state, _ = hara_checkpoint
    bad = dict(state)
    edit(bad)
    path = tmp_path / "bad.pth"
    torch.save({"state_dict": bad}, path)
    with pytest.raises(DecembertError, match=message.replace("(", r"\(").replace(")", r"\)")):
        B.build_3d("resnext101", str(path))


def test_3d_backbones_are_registered_plugins_with_clear_errors(tmp_path):
    assert {"resnext101", "resnext50", "resnext3d-tiny", "slow_r50"} <= set(B.backbones_3d.available())
    with pytest.raises(DecembertError, match="unknown 3D backbone 'nope'; installed: .*resnext101"):
        B.build_3d("nope", "random")
    with pytest.raises(DecembertError, match="resnext-101-kinetics.pth from github.com/kenshohara"):
        B.build_3d("resnext101", "hub")
    tiny = B.build_3d("resnext3d-tiny", "random", size=64)
    assert (tiny.dim, tiny.size) == (256, 64)
    with torch.inference_mode():
        assert tiny.module(torch.randn(1, 3, 16, 64, 64)).shape == (1, 256)
    assert B.build_3d("resnext3d-tiny", "random").weights_sha256() == tiny.weights_sha256()  # seeded


def test_2d_backbone_from_timm_with_a_weights_file(tmp_path):
    import timm

    source = timm.create_model("resnet18", pretrained=False, num_classes=1000).eval()
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)  # a classifier-carrying checkpoint, as torchvision ships them
    backbone = B.build_2d("resnet18", str(path), size=112)
    assert (backbone.stream, backbone.dim, backbone.size) == ("2d", 512, 112)
    assert backbone.mean == pytest.approx((0.485 * 255, 0.456 * 255, 0.406 * 255))
    x = torch.randn(2, 3, 112, 112)
    with torch.inference_mode():
        torch.testing.assert_close(backbone.module(x), source.forward_head(source.forward_features(x), pre_logits=True))
    bad = dict(source.state_dict())
    bad.pop("layer2.1.bn1.weight")
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(DecembertError, match="no weights for 'layer2.1.bn1.weight'"):
        B.build_2d("resnet18", str(tmp_path / "bad.pth"))
    with pytest.raises(DecembertError, match="unknown timm model 'resnet18x'"):
        B.build_2d("resnet18x", "random")
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(DecembertError, match="cannot read .*junk.pth as PyTorch weights"):
        B.build_2d("resnet18", str(tmp_path / "junk.pth"))


def test_pixels_are_normalised_channel_first():
    backbone = B.build_3d("resnext3d-tiny", "random")
    pixels = torch.full((2, 4, 8, 8, 3), 120, dtype=torch.uint8)
    x = B.normalise_pixels(pixels, backbone)
    assert x.shape == (2, 3, 4, 8, 8)
    torch.testing.assert_close(x[:, 0], torch.full((2, 4, 8, 8), 120 - 114.7748))


def test_any_timm_model_is_a_2d_backbone():
    vit = B.build_2d("test_vit", "random")  # a transformer: pooled (CLS/mean) features, its own input size
    x = torch.randn(2, 3, vit.size, vit.size)
    with torch.inference_mode():
        assert vit.module(x).shape == (2, vit.dim)
    assert vit.meta()["backbone"] == "test_vit" and vit.meta()["weights"] == "random"


def test_pytorchvideo_slow_r50_gives_pooled_features():
    slow = B.build_3d("slow_r50", "random")
    assert (slow.dim, slow.size, slow.frames, slow.fps) == (2048, 224, 8, 30 / 8)
    with torch.inference_mode():
        # Kinetics logits replaced by the pooled vector
        assert slow.module(torch.randn(1, 3, 8, 64, 64)).shape == (1, 2048)
