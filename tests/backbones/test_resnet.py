"""ImageNet ResNets: torchvision equivalence, Table 1 parameter counts, shortcut options A/B/C, plain nets."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from backbones import MSRA_INPUT, TORCHVISION_INPUT, build_resnet, load_weights
from backbones.resnet import BasicBlock, Bottleneck, ZeroPadShortcut

TORCHVISION_PARAMS = {18: 11_689_512, 34: 21_797_672, 50: 25_557_032, 101: 44_549_160, 152: 60_192_808}


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def randomize_bn(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial BN statistics, so that a wrong BN mapping shows in the logits."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)


@pytest.mark.parametrize("depth", [18, 34, 50, 101, 152])
def test_torchvision_checkpoint_loads_strictly_and_gives_same_logits(depth: int, tmp_path: Path) -> None:
    torch.manual_seed(depth)
    reference = torchvision.models.get_model(f"resnet{depth}").eval()
    randomize_bn(reference)
    path = tmp_path / f"resnet{depth}.pth"
    torch.save(reference.state_dict(), path)

    model = build_resnet(depth).eval()
    assert count(model) == TORCHVISION_PARAMS[depth]
    assert {k: v.shape for k, v in model.state_dict().items()} == {
        k: v.shape for k, v in reference.state_dict().items()
    }
    result = load_weights(model, path)
    assert result.missing == [] and result.unexpected == []

    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = reference(x)
        logits = model(x)
        assert (logits - expected).abs().max().item() < 1e-4
        assert torch.equal(model.forward_head(model.forward_features(x)), logits)


def test_forward_features_shape_and_attributes() -> None:
    model = build_resnet(50, base_width=16, num_classes=7)
    features = model.forward_features(torch.randn(2, 3, 64, 96))
    assert features.shape == (2, 16 * 8 * 4, 2, 3)
    assert model.depth == 50 and model.num_features == 512 and model.stage_channels == (64, 128, 256, 512)
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 7)


def test_he_initialisation_like_torchvision() -> None:
    torch.manual_seed(0)
    model = build_resnet(18)
    weight = model.layer4[1].conv2.weight  # 512 * 3 * 3 fan_out
    assert weight.std().item() == pytest.approx(math.sqrt(2.0 / (512 * 9)), rel=0.02)
    assert torch.all(model.bn1.weight == 1) and torch.all(model.bn1.bias == 0)


def test_base_width_scales_every_stage() -> None:
    model = build_resnet(18, base_width=16)
    assert model.conv1.out_channels == 16
    assert [getattr(model, f"layer{i}")[0].conv1.out_channels for i in (1, 2, 3, 4)] == [16, 32, 64, 128]
    assert model.fc.in_features == 128


def test_shortcut_a_is_parameter_free_and_pads_zeros() -> None:
    shortcut = ZeroPadShortcut(2, 4, stride=2)
    x = torch.arange(2 * 4 * 4, dtype=torch.float32).view(1, 2, 4, 4)
    y = shortcut(x)
    assert y.shape == (1, 4, 2, 2)
    assert torch.equal(y[:, :2], x[:, :, ::2, ::2])
    assert torch.all(y[:, 2:] == 0)
    assert count(shortcut) == 0


def projection_params(in_channels: int, out_channels: int) -> int:
    return in_channels * out_channels + 2 * out_channels  # 1x1 conv without bias + BN weight/bias


def test_parameter_counts_of_options_a_b_c_and_plain_resnet34() -> None:
    b = TORCHVISION_PARAMS[34]
    projections_b = projection_params(64, 128) + projection_params(128, 256) + projection_params(256, 512)
    assert count(build_resnet(34, shortcut="B")) == b
    assert count(build_resnet(34, shortcut="A")) == b - projections_b == 21_623_848
    assert count(build_resnet(34, plain=True)) == b - projections_b
    # Option C adds a projection to each of the 16 - 3 identity shortcuts.
    identity_blocks = [(64, 3), (128, 3), (256, 5), (512, 2)]
    extra_c = sum(n * projection_params(c, c) for c, n in identity_blocks)
    assert count(build_resnet(34, shortcut="C")) == b + extra_c


@pytest.mark.parametrize("depth", [18, 50])
@pytest.mark.parametrize("options", [{"shortcut": "A"}, {"shortcut": "B"}, {"shortcut": "C"}, {"plain": True}])
def test_every_variant_builds_and_runs(depth: int, options: dict) -> None:
    model = build_resnet(depth, base_width=8, num_classes=5, **options).eval()
    blocks = [m for m in model.modules() if isinstance(m, (BasicBlock, Bottleneck))]
    shortcuts = [b.downsample for b in blocks]
    if options.get("plain"):
        assert all(s is None for s in shortcuts) and not any(b.residual for b in blocks)
    elif options["shortcut"] == "A":
        assert all(s is None or isinstance(s, ZeroPadShortcut) for s in shortcuts)
        assert any(isinstance(s, ZeroPadShortcut) for s in shortcuts)
    elif options["shortcut"] == "B":
        # Projections exactly where dimensions change: first block of stages 2-4, plus layer1.0 of bottleneck nets.
        expected = 4 if depth >= 50 else 3
        assert sum(isinstance(s, nn.Sequential) for s in shortcuts) == expected
    else:
        assert all(isinstance(s, nn.Sequential) for s in shortcuts)
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 5) and torch.isfinite(out).all()


def test_residual_block_adds_shortcut_and_plain_block_does_not() -> None:
    torch.manual_seed(0)
    residual = build_resnet(18, shortcut="A", base_width=8).layer2[0].eval()
    plain = build_resnet(18, plain=True, base_width=8).layer2[0].eval()
    plain.load_state_dict(residual.state_dict())  # option A adds no parameters: same keys as plain
    for block in (residual, plain):  # zero the residual branch
        nn.init.zeros_(block.bn2.weight)
        nn.init.zeros_(block.bn2.bias)
    x = torch.randn(1, 8, 8, 8)
    with torch.no_grad():
        assert torch.equal(residual(x), torch.relu(ZeroPadShortcut(8, 16, 2)(x)))
        assert torch.equal(plain(x), torch.zeros(1, 16, 4, 4))


def test_msra_style_puts_stride_on_first_1x1_and_keeps_keys() -> None:
    msra = build_resnet(50, style="msra", base_width=8)
    block = msra.layer2[0]
    assert block.conv1.stride == (2, 2) and block.conv2.stride == (1, 1)
    torchvision_style = build_resnet(50, base_width=8)
    assert torchvision_style.layer2[0].conv2.stride == (2, 2)
    assert msra.state_dict().keys() == torchvision_style.state_dict().keys()
    assert msra.forward_features(torch.randn(1, 3, 64, 64)).shape == (1, 256, 2, 2)
    assert msra.input_spec is MSRA_INPUT and torchvision_style.input_spec is TORCHVISION_INPUT


def test_input_specs_normalize() -> None:
    rgb = torch.tensor([0.2, 0.5, 1.0]).view(3, 1, 1)
    bgr = MSRA_INPUT.normalize(rgb).flatten()
    assert torch.allclose(bgr, torch.tensor([255.0 - 103.530, 127.5 - 116.280, 51.0 - 123.675]))
    tv = TORCHVISION_INPUT.normalize(rgb[None]).flatten()
    assert torch.allclose(tv, torch.tensor([(0.2 - 0.485) / 0.229, (0.5 - 0.456) / 0.224, (1.0 - 0.406) / 0.225]))


@pytest.mark.parametrize("kwargs", [{"depth": 20}, {"depth": 50, "shortcut": "D"}, {"depth": 50, "style": "caffe"}])
def test_invalid_arguments_raise(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        build_resnet(**kwargs)
