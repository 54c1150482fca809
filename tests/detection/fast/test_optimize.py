"""detection/fast/optimize.py: the optimised detector computes what the plain one computes (correctness only; speed is
measured by tools/benchmark.py, never asserted)."""

from __future__ import annotations

import copy

import pytest
import torch

from backbones import FrozenBatchNorm2d
from detection import build_detector, load_config
from detection.fast.commuted_head import CommutedRoIAlignBoxHead
from detection.fast.factored_head import FactoredC4BoxHead
from detection.fast.nms import BlockedNMS
from detection.fast.optimize import (
    ConvFrozenBN2d,
    NCHWConv2d,
    NCHWConvFrozenBN2d,
    keep_nchw,
    optimize_for_inference,
    optimize_for_training,
)
from detection.modeling.faster_rcnn import FasterRCNN

POOLERS = {  # config overrides → the box head the optimisers swap in
    "roipool": ([], FactoredC4BoxHead),
    "roialign": (["model.roi_heads.pooler=roialign", "model.roi_heads.roi_align_aligned=false"],
                 CommutedRoIAlignBoxHead),
    "roialign_aligned": (["model.roi_heads.pooler=roialign"], CommutedRoIAlignBoxHead),
}


def tiny_model(*overrides: str) -> FasterRCNN:
    cfg = load_config(None, [
        "num_classes=3", "model.backbone.depth=50", "model.backbone.base_width=8", "model.backbone.weights=none",
        "model.anchors.sizes=[16,32,64]", "model.rpn.pre_nms_top_n_train=200", "model.rpn.post_nms_top_n_train=50",
        "model.rpn.pre_nms_top_n_test=100", "model.rpn.post_nms_top_n_test=20",
        "model.roi_heads.batch_size_per_image=16", "model.roi_heads.score_thresh=0.0",
        "input.test_min_size=64", "input.test_max_size=96", *overrides,
    ])
    torch.manual_seed(0)
    model = build_detector(cfg)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, FrozenBatchNorm2d):
                m.weight.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.25)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
        model.roi_heads.predictor.cls_score.weight.normal_(0, 0.5, generator=g)
    return model


def batch() -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    g = torch.Generator().manual_seed(2)
    images = [torch.rand(3, 64, 80, generator=g), torch.rand(3, 72, 64, generator=g)]
    targets = [
        {"boxes": torch.tensor([[4.0, 6.0, 40.0, 50.0]]), "labels": torch.tensor([1])},
        {"boxes": torch.tensor([[10.0, 10.0, 30.0, 30.0], [30.0, 20.0, 60.0, 70.0]]), "labels": torch.tensor([2, 3])},
    ]
    return images, targets


@pytest.mark.parametrize("pooler", list(POOLERS))
def test_inference_gives_the_same_detections(pooler: str) -> None:
    overrides, fast_head = POOLERS[pooler]
    plain = tiny_model(*overrides).eval()
    fast = optimize_for_inference(copy.deepcopy(plain))
    assert type(fast.roi_heads.box_head) is fast_head
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in fast.modules())
    assert fast.trunk.body.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    images, _ = batch()
    with torch.inference_mode():
        expected = plain(images)
        got = fast(images)
    for e, g in zip(expected, got):
        assert len(e["boxes"]) > 0
        assert torch.equal(e["labels"], g["labels"])
        torch.testing.assert_close(g["boxes"], e["boxes"], atol=1e-3, rtol=1e-4)
        torch.testing.assert_close(g["scores"], e["scores"], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("pooler", list(POOLERS))
def test_swaps_show_in_repr_and_are_chosen_for_inference_or_training(pooler: str) -> None:
    """Every fast path is a module in the tree: the RPN's NMS, the box head, and how it pools (the gather pooler's
    windows, the commuted head's in-place finish) differ between the inference and the training swap."""
    overrides, fast_head = POOLERS[pooler]
    plain = tiny_model(*overrides)
    assert "BlockedNMS" not in repr(plain) and fast_head.__name__ not in repr(plain)
    inference = optimize_for_inference(copy.deepcopy(plain))
    training = optimize_for_training(copy.deepcopy(plain))
    for model in (inference, training):
        assert type(model.rpn.nms) is BlockedNMS and "BlockedNMS" in repr(model)
        assert type(model.roi_heads.box_head) is fast_head and fast_head.__name__ in repr(model)
    assert type(plain.rpn.nms) is not BlockedNMS  # the copies were swapped, not the plain model
    if fast_head is FactoredC4BoxHead:
        assert (inference.roi_heads.box_head.pooler.windows, training.roi_heads.box_head.pooler.windows) == (
            "auto", "map")
    else:
        assert (inference.roi_heads.box_head.in_place, training.roi_heads.box_head.in_place) == (True, False)
        assert "in_place=True" in repr(inference)


def test_bf16_autocast_runs_and_keeps_float32_boxes() -> None:
    fast = optimize_for_inference(tiny_model())
    images, _ = batch()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = fast(images)
    assert all(o["boxes"].dtype == torch.float32 and torch.isfinite(o["boxes"]).all() for o in out)


@pytest.mark.parametrize("pooler", list(POOLERS))
def test_training_fold_keeps_losses_gradients_and_state_dict(pooler: str) -> None:
    overrides, fast_head = POOLERS[pooler]
    plain = tiny_model(*overrides).train()
    fast = optimize_for_training(copy.deepcopy(plain))
    assert any(isinstance(m, ConvFrozenBN2d) for m in fast.modules())
    assert type(fast.roi_heads.box_head) is fast_head
    assert list(fast.state_dict()) == list(plain.state_dict())
    images, targets = batch()
    losses = {}
    for name, model in (("plain", plain), ("fast", fast)):
        torch.manual_seed(3)  # the RPN and RoI samplers draw random subsets
        out = model(images, targets)
        sum(out.values()).backward()
        losses[name] = out
    for key in losses["plain"]:
        torch.testing.assert_close(losses["fast"][key], losses["plain"][key], atol=1e-4, rtol=1e-4)
    fast_params = dict(fast.named_parameters())
    for name, p in plain.named_parameters():
        q = fast_params[name]
        assert (p.grad is None) == (q.grad is None), name
        if p.grad is not None:
            torch.testing.assert_close(q.grad, p.grad, atol=1e-4, rtol=1e-3)
    frozen = fast.trunk.body.layer1[0].conv1
    assert isinstance(frozen, ConvFrozenBN2d) and frozen.weight.grad is None


def test_training_fold_follows_loaded_weights() -> None:
    plain = tiny_model()
    fast = optimize_for_training(tiny_model())
    with torch.no_grad():
        for m in plain.modules():
            if isinstance(m, FrozenBatchNorm2d):
                m.running_mean.add_(0.3)
    fast.load_state_dict(plain.state_dict())
    plain.eval()
    fast.eval()
    images, _ = batch()
    with torch.no_grad():
        torch.testing.assert_close(fast.trunk(plain.transform(images)[0]), plain.trunk(plain.transform(images)[0]),
                                   atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("nchw_3x3", [True, False])
def test_training_with_nchw_3x3_convs_keeps_losses_and_gradients(nchw_3x3: bool) -> None:
    """Both layouts of the trunk's and RPN's trainable 3×3 convolutions (the choice made by CPU instruction set)
    give the plain model's losses and gradients; only those convolutions are kept NCHW, weights contiguous."""
    plain = tiny_model().train()
    fast = optimize_for_training(copy.deepcopy(plain), nchw_3x3=nchw_3x3)
    nchw = [n for n, m in fast.named_modules() if isinstance(m, (NCHWConv2d, NCHWConvFrozenBN2d))]
    if nchw_3x3:
        assert "rpn.head.conv" in nchw and "trunk.body.layer3.0.conv2" in nchw
        assert isinstance(fast.trunk.body.layer3[0].conv2, NCHWConvFrozenBN2d) and "NCHWConv2d" in repr(fast)
        assert not any(m._forward_hooks or m._forward_pre_hooks for m in fast.modules())  # a swap, not hooks
        assert not any(n.startswith(("roi_heads", "trunk.body.layer1.")) for n in nchw)  # box head; frozen
        assert all(fast.get_submodule(n).weight.is_contiguous() for n in nchw)
        assert keep_nchw(fast) == []  # once only
    else:
        assert nchw == []
    assert list(fast.state_dict()) == list(plain.state_dict())
    images, targets = batch()
    grads = {}
    for name, model in (("plain", plain), ("fast", fast)):
        torch.manual_seed(3)
        out = model(images, targets)
        sum(out.values()).backward()
        grads[name] = {k: p.grad for k, p in model.named_parameters() if p.grad is not None}
    assert grads["fast"].keys() == grads["plain"].keys()
    for k, g in grads["plain"].items():
        torch.testing.assert_close(grads["fast"][k], g, atol=1e-4, rtol=1e-3)
