"""The C4 split (Appendix A): trunk = conv1..conv4_x at stride 16, head = conv5_x + global average pool."""

from __future__ import annotations

import pytest
import torch
import torchvision

from backbones import build_resnet, split_c4


@pytest.mark.parametrize(
    ("depth", "base_width", "trunk_channels", "head_channels"),
    [(18, 64, 256, 512), (34, 16, 64, 128), (50, 64, 1024, 2048), (101, 8, 128, 256)],
)
def test_strides_and_channels(depth: int, base_width: int, trunk_channels: int, head_channels: int) -> None:
    model = build_resnet(depth, base_width=base_width).eval()
    trunk, head = split_c4(model)
    assert (trunk.out_channels, head.out_channels, trunk.stride) == (trunk_channels, head_channels, 16)
    with torch.no_grad():
        features = trunk(torch.randn(1, 3, 96, 64))
        assert features.shape == (1, trunk_channels, 6, 4)
        pooled = head(torch.randn(5, trunk_channels, 14, 14))  # R = 5 RoI features
        assert pooled.shape == (5, head_channels)


def test_trunk_head_reproduce_classifier_and_share_modules() -> None:
    model = build_resnet(50, base_width=8).eval()
    trunk, head = split_c4(model)
    assert trunk.conv1 is model.conv1 and trunk.layer3 is model.layer3 and head.layer4 is model.layer4
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model.fc(head(trunk(x))), model(x), atol=1e-6)
        model.conv1.weight.mul_(2)  # a change to the classifier is seen by the trunk
        assert torch.equal(trunk.conv1.weight, model.conv1.weight)
    assert set(trunk.state_dict()) | set(head.state_dict()) | {"fc.weight", "fc.bias"} == set(model.state_dict())


def test_resnet101_trunk_has_91_conv_layers() -> None:
    trunk, _ = split_c4(build_resnet(101, base_width=8))
    weighted = [m for n, m in trunk.named_modules() if isinstance(m, torch.nn.Conv2d) and "downsample" not in n]
    assert len(weighted) == 1 + 3 * (3 + 4 + 23) == 91


def test_freeze_at_two_freezes_conv1_and_conv2_x_only() -> None:
    trunk, _ = split_c4(build_resnet(18, base_width=8))
    trunk.freeze_at(2)
    frozen = {n.split(".")[0] for n, p in trunk.named_parameters() if not p.requires_grad}
    trainable = {n.split(".")[0] for n, p in trunk.named_parameters() if p.requires_grad}
    assert frozen == {"conv1", "bn1", "layer1"} and trainable == {"layer2", "layer3"}


def test_works_on_torchvision_resnet() -> None:
    trunk, head = split_c4(torchvision.models.resnet18())
    assert (trunk.out_channels, head.out_channels) == (256, 512)
