"""Frozen BatchNorm (Appendix A): exact affine map, nothing trainable, torchvision state loads, conv folding."""

from __future__ import annotations

import torch
import torchvision
from torch import nn

from backbones import FrozenBatchNorm2d, build_resnet, freeze_bn, fuse_conv_frozen_bn, load_weights, split_c4


def random_frozen_bn(channels: int, seed: int = 0) -> FrozenBatchNorm2d:
    g = torch.Generator().manual_seed(seed)
    bn = FrozenBatchNorm2d(channels)
    bn.weight.copy_(torch.randn(channels, generator=g))
    bn.bias.copy_(torch.randn(channels, generator=g))
    bn.running_mean.copy_(torch.randn(channels, generator=g))
    bn.running_var.copy_(torch.rand(channels, generator=g) + 0.1)
    return bn


def randomize_bn_stats(model: nn.Module) -> None:
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d)):
            with torch.no_grad():
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)


def close(got: torch.Tensor, expected: torch.Tensor) -> bool:
    """Equal up to float32 rounding relative to the output scale (random BN statistics give large logits)."""
    return bool((got - expected).abs().max() <= 1e-5 * expected.abs().max().clamp(min=1.0))


def test_is_the_exact_affine_map() -> None:
    bn = random_frozen_bn(3)
    x = torch.randn(2, 3, 4, 5)
    s = bn.weight / torch.sqrt(bn.running_var + 1e-5)
    b = bn.bias - bn.running_mean * s
    expected = x * s.view(1, 3, 1, 1) + b.view(1, 3, 1, 1)
    assert torch.allclose(bn(x), expected, atol=1e-6)
    # Hand-computed: weight 2, bias 1, mean 3, var 4 - eps  ->  y = (x - 3) / 2 * 2 + 1 = x - 2.
    one = FrozenBatchNorm2d(1)
    one.weight.fill_(2.0)
    one.bias.fill_(1.0)
    one.running_mean.fill_(3.0)
    one.running_var.fill_(4.0 - 1e-5)
    assert torch.allclose(one(torch.tensor([[[[0.0, 5.0]]]])), torch.tensor([[[[-2.0, 3.0]]]]))


def test_matches_batchnorm_in_eval_mode_and_ignores_train_mode() -> None:
    bn = nn.BatchNorm2d(4)
    randomize_bn_stats(bn)
    bn.eval()
    frozen = FrozenBatchNorm2d.from_batch_norm(bn)
    frozen.train()
    x = torch.randn(3, 4, 5, 5) * 3 + 1
    before = {k: v.clone() for k, v in frozen.state_dict().items()}
    assert torch.allclose(frozen(x), bn(x), atol=1e-6)
    # Training mode neither uses batch statistics nor updates the stored ones.
    assert all(torch.equal(v, frozen.state_dict()[k]) for k, v in before.items())


def test_nothing_trainable_and_state_keys() -> None:
    bn = FrozenBatchNorm2d(8)
    assert list(bn.parameters()) == []
    assert set(bn.state_dict()) == {"weight", "bias", "running_mean", "running_var"}
    assert bn.eps == 1e-5


def test_loads_batchnorm_state_with_num_batches_tracked() -> None:
    bn = nn.BatchNorm2d(4)
    randomize_bn_stats(bn)
    state = bn.state_dict()
    assert "num_batches_tracked" in state
    frozen = FrozenBatchNorm2d(4)
    frozen.load_state_dict(state, strict=True)
    assert torch.equal(frozen.running_var, bn.running_var) and torch.equal(frozen.weight, bn.weight)
    assert "num_batches_tracked" in state  # the caller's dict is not modified


def test_freeze_bn_converts_everything_and_keeps_outputs() -> None:
    model = build_resnet(50, base_width=8).eval()
    randomize_bn_stats(model)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
        assert freeze_bn(model) is model
        frozen_out = model.train()(x)  # train mode: frozen BN still uses the stored statistics
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert sum(isinstance(m, FrozenBatchNorm2d) for m in model.modules()) == 1 + 16 * 3 + 4
    assert close(frozen_out, expected)
    assert isinstance(freeze_bn(nn.BatchNorm2d(3)), FrozenBatchNorm2d)


def test_frozen_resnet_loads_torchvision_state_and_matches() -> None:
    reference = torchvision.models.resnet18().eval()
    randomize_bn_stats(reference)
    model = build_resnet(18, frozen_bn=True)
    assert all(not any(k.endswith("num_batches_tracked") for k in model.state_dict()) for _ in [0])
    result = load_weights(model, reference.state_dict())
    assert result.missing == [] and result.unexpected == []
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert (model(x) - reference(x)).abs().max() < 1e-4
    trainable = {n for n, p in model.named_parameters()}
    assert not any("bn" in n or "downsample.1" in n for n in trainable)


def test_fuse_conv_frozen_bn_keeps_outputs() -> None:
    torch.manual_seed(0)
    model = build_resnet(50, base_width=8, frozen_bn=True, shortcut="B").eval()
    randomize_bn_stats(model)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
        fuse_conv_frozen_bn(model)
        fused = model(x)
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in model.modules())
    assert model.conv1.bias is not None and model.layer2[0].downsample[0].bias is not None
    assert close(fused, expected)


def test_fuse_on_c4_trunk_and_head() -> None:
    model = build_resnet(18, base_width=8, frozen_bn=True).eval()
    randomize_bn_stats(model)
    trunk, head = split_c4(model)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = head(trunk(x))
        fuse_conv_frozen_bn(trunk)
        fuse_conv_frozen_bn(head)
        got = head(trunk(x))
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in [*trunk.modules(), *head.modules()])
    assert close(got, expected)
