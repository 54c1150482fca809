"""CIFAR-10 ResNets (Sec. 4.2): Table 6 parameter counts, shapes, option A shortcuts, plain nets."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from backbones import build_cifar_resnet
from backbones.resnet import BasicBlock, ZeroPadShortcut


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("depth", "millions"), [(20, 0.27), (32, 0.46), (44, 0.66), (56, 0.85), (110, 1.7), (1202, 19.4)]
)
def test_parameter_counts_match_table_6(depth: int, millions: float) -> None:
    params = count(build_cifar_resnet(depth))
    digits = 1 if millions >= 1 else 2
    assert round(params / 1e6, digits) == millions


def test_resnet20_exact_parameter_count() -> None:
    # conv1 3*16*9 + BN; 3 blocks/stage of two 3x3 convs + BN each; option A adds nothing; fc 64*10 + 10.
    expected = 3 * 16 * 9 + 32
    for c_in, c in [(16, 16), (16, 32), (32, 64)]:
        expected += (c_in * c * 9 + 2 * c) + (c * c * 9 + 2 * c)  # first block of the stage
        expected += 2 * ((c * c * 9 + 2 * c) * 2)  # two more blocks
    expected += 64 * 10 + 10
    assert count(build_cifar_resnet(20)) == expected == 269_722


def test_structure_and_shapes() -> None:
    model = build_cifar_resnet(20).eval()
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    assert len(blocks) == 9 and 2 * len(blocks) + 2 == model.depth
    assert [b.stride for b in blocks] == [1, 1, 1, 2, 1, 1, 2, 1, 1]
    assert sum(isinstance(b.downsample, ZeroPadShortcut) for b in blocks) == 2
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        features = model.forward_features(x)
        assert features.shape == (4, 64, 8, 8)
        logits = model(x)
    assert logits.shape == (4, 10)
    assert torch.allclose(model.fc(features.mean(dim=(2, 3))), logits)


def test_plain_and_option_b_variants() -> None:
    plain = build_cifar_resnet(32, plain=True)
    assert count(plain) == count(build_cifar_resnet(32))  # option A is parameter-free
    assert all(not b.residual for b in plain.modules() if isinstance(b, BasicBlock))
    # B adds two projections (16->32, 32->64), each a 1x1 conv and a BN.
    extra = (16 * 32 + 64) + (32 * 64 + 128)
    assert count(build_cifar_resnet(32, shortcut="B")) == count(build_cifar_resnet(32)) + extra
    out = build_cifar_resnet(20, shortcut="C", num_classes=3)(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 3)


@pytest.mark.parametrize("depth", [7, 21, 2])
def test_depth_must_be_6n_plus_2(depth: int) -> None:
    with pytest.raises(ValueError, match="6n\\+2"):
        build_cifar_resnet(depth)
