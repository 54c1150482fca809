import copy

import pytest
import torch

from backbones import MSRA_INPUT, TORCHVISION_INPUT
from detection import build_detector, load_config
from detection.build import build_test_detector
from detection.fast.factored_head import FactoredC4BoxHead
from detection.fast.gather_pool import GatherRoIPool
from detection.fast.optimize import optimize_for_inference
from detection.modeling.faster_rcnn import ImageTransform


def tiny_config(**overrides):
    base = [
        "num_classes=3",
        "model.backbone.depth=18",
        "model.backbone.base_width=8",
        "model.backbone.weights=none",
        "model.anchors.sizes=[16,32,64]",
        "model.rpn.pre_nms_top_n_train=200",
        "model.rpn.post_nms_top_n_train=50",
        "model.rpn.pre_nms_top_n_test=100",
        "model.rpn.post_nms_top_n_test=20",
        "model.roi_heads.batch_size_per_image=16",
        "input.test_min_size=64",
        "input.test_max_size=96",
    ]
    return load_config(None, base + [f"{k}={v}" for k, v in overrides.items()])


def sample_batch():
    images = [torch.rand(3, 64, 80), torch.rand(3, 72, 64)]
    targets = [
        {"boxes": torch.tensor([[4.0, 6.0, 40.0, 50.0]]), "labels": torch.tensor([1])},
        {"boxes": torch.tensor([[10.0, 10.0, 30.0, 30.0], [30.0, 20.0, 60.0, 70.0]]), "labels": torch.tensor([2, 3])},
    ]
    return images, targets


def test_transform_pads_to_divisible_and_maps_boxes_back():
    t = ImageTransform(pixel_mean=[0.0] * 3, pixel_std=[1.0] * 3, test_min_size=32, test_max_size=64,
                       size_divisible=32)
    t.eval()
    batch, sizes, _ = t([torch.rand(3, 16, 20), torch.rand(3, 40, 20)])
    assert sizes == [(32, 40), (64, 32)]
    assert batch.shape == (2, 3, 64, 64)
    det = [{"boxes": torch.tensor([[0.0, 0.0, 40.0, 32.0]])}]
    out = t.postprocess(det, [(32, 40)], [(16, 20)])
    torch.testing.assert_close(out[0]["boxes"], torch.tensor([[0.0, 0.0, 20.0, 16.0]]))


def test_transform_channel_order_and_scale_for_msra_weights():
    image = torch.rand(3, 32, 48)
    msra = ImageTransform(pixel_mean=list(MSRA_INPUT.mean), pixel_std=list(MSRA_INPUT.std), test_min_size=32,
                          test_max_size=64, size_divisible=1, channel_order="BGR", pixel_scale=255.0).eval()
    torch.testing.assert_close(msra([image]).tensor[0], MSRA_INPUT.normalize(image))
    assert msra([image]).tensor[0, 0, 0, 0] == image[2, 0, 0] * 255 - MSRA_INPUT.mean[0]  # blue first, 0–255
    # The default (RGB, scale 1) is the plain (x - mean) / std, bit for bit.
    mean, std = list(TORCHVISION_INPUT.mean), list(TORCHVISION_INPUT.std)
    default = ImageTransform(pixel_mean=mean, pixel_std=std, test_min_size=32, test_max_size=64).eval()
    expected = (image - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    assert torch.equal(default([image]).tensor[0, :, :32, :48], expected)  # padded to 32 × 64
    with pytest.raises(ValueError, match="channel_order"):
        ImageTransform(pixel_mean=mean, pixel_std=std, test_min_size=32, test_max_size=64, channel_order="GBR")


def test_train_step_returns_finite_losses_and_frozen_parts_get_no_grad():
    torch.manual_seed(0)
    model = build_detector(tiny_config())
    model.train()
    images, targets = sample_batch()
    losses = model(images, targets)
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_box", "loss_cls", "loss_box"}
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    body = model.trunk.body
    assert body.conv1.weight.grad is None and body.layer1[0].conv1.weight.grad is None  # freeze_at=2
    assert body.layer2[0].conv1.weight.grad is not None
    assert model.roi_heads.box_head.head.layer4[0].conv1.weight.grad is not None
    assert not any(p.requires_grad for n, p in model.named_parameters() if "bn" in n or "downsample.1" in n)


def test_eval_output_format_in_original_pixels():
    torch.manual_seed(0)
    model = build_detector(tiny_config(**{"model.roi_heads.score_thresh": 0.0}))
    model.eval()
    images, _ = sample_batch()
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2
    for det, image in zip(out, images):
        assert set(det) == {"boxes", "scores", "labels"}
        assert det["boxes"].shape[1] == 4 and len(det["boxes"]) > 0
        assert (det["boxes"][:, 2] <= image.shape[2] + 1e-3).all()
        assert (det["boxes"][:, 3] <= image.shape[1] + 1e-3).all()
        assert det["labels"].min() >= 1 and det["labels"].max() <= 3


@pytest.mark.parametrize(
    "overrides",
    [
        {"model.roi_heads.pooler": "roialign"},
        {"model.roi_heads.global_context": True},
        {"model.roi_heads.box_refinement": True, "model.roi_heads.box_voting": True},
        {"test.pyramid_min_sizes": "[48,64,96]"},
    ],
)
def test_variants_run(overrides):
    torch.manual_seed(0)
    cfg = tiny_config(**{"model.roi_heads.score_thresh": 0.0, **overrides})
    model = build_detector(cfg)
    images, targets = sample_batch()
    model.train()
    assert torch.isfinite(sum(model(images, targets).values()))
    model.eval()
    with torch.no_grad():
        out = build_test_detector(model, cfg)(images)
    assert all(len(d["boxes"]) > 0 for d in out)


def test_training_mode_requires_targets():
    model = build_detector(tiny_config())
    model.train()
    with pytest.raises(ValueError, match="targets"):
        model([torch.rand(3, 32, 32)])


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"model.roi_heads.global_context": True},
        {"model.roi_heads.box_refinement": True, "model.roi_heads.box_voting": True},
        {"test.pyramid_min_sizes": "[48,64,96]"},
    ],
)
def test_bottleneck_detector_factored_head_equals_dense_path(overrides):
    """ResNet-50 C4 (narrow): optimize_for_inference swaps in the factored box head (conv5_1's 1×1 layers on
    RoIPool's distinct rows, detection/fast/factored_head.py); the detections equal those of the plain pool → head."""
    torch.manual_seed(0)
    cfg = tiny_config(**{"model.backbone.depth": 50, "model.roi_heads.score_thresh": 0.0, **overrides})
    model = build_detector(cfg)
    fast = build_test_detector(optimize_for_inference(copy.deepcopy(model)), cfg)
    dense = build_test_detector(optimize_for_inference(model, fast_box_heads=False), cfg)
    assert "FactoredC4BoxHead" in repr(fast) and "GatherRoIPool" in repr(fast)
    assert "FactoredC4BoxHead" not in repr(dense)
    images, _ = sample_batch()
    with torch.inference_mode():
        factored, plain = fast(images), dense(images)
    for a, b in zip(factored, plain):
        assert len(a["boxes"]) > 0 and torch.equal(a["labels"], b["labels"])
        torch.testing.assert_close(a["boxes"], b["boxes"], rtol=1e-4, atol=1e-3)
        torch.testing.assert_close(a["scores"], b["scores"], rtol=1e-4, atol=1e-5)


def test_basic_block_detector_gets_the_gather_pooler_only():
    model = optimize_for_inference(build_detector(tiny_config()))
    assert isinstance(model.roi_heads.box_head.pooler, GatherRoIPool)
    assert not isinstance(model.roi_heads.box_head, FactoredC4BoxHead)  # a 3×3 conv5_1 is not per-position


@pytest.mark.parametrize("global_context", [False, True])
def test_checkpoints_of_the_old_layout_load(global_context):
    """Checkpoints written before the box head was a module keep conv5_x under ``roi_heads.head.``."""
    cfg = tiny_config(**{"model.roi_heads.global_context": global_context})
    torch.manual_seed(0)
    source = build_detector(cfg)
    prefix = "roi_heads.box_head.box_head.head." if global_context else "roi_heads.box_head.head."
    old = {k.replace(prefix, "roi_heads.head."): v for k, v in source.state_dict().items()}
    assert any(k.startswith("roi_heads.head.layer4.") for k in old)
    torch.manual_seed(1)
    target = build_detector(cfg)
    target.load_state_dict(old)  # strict
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key


def test_image_without_proposals_gives_no_detections():
    torch.manual_seed(0)
    model = build_detector(tiny_config(**{"model.backbone.depth": 50, "model.rpn.min_box_size": 1e6})).eval()
    with torch.inference_mode():
        out = model([torch.rand(3, 64, 80)])
    assert out[0]["boxes"].shape == (0, 4) and out[0]["scores"].shape == (0,)
