"""detection/build.py: the backbone style (``model.backbone.style``) reaches the network, its input and its weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from backbones import WeightsError, build_resnet
from backbones.checkpoint import save_checkpoint
from detection.build import build_detector, load_backbone_weights
from detection.config import load_config
from detection.modeling.box_head import conv5_of

TINY = ["model.backbone.base_width=8", "model.backbone.weights=none", "num_classes=3"]
MSRA = ["model.backbone.style=msra", "input.channel_order=BGR", "input.pixel_scale=255",
        "input.pixel_mean=[103.53,116.28,123.675]", "input.pixel_std=[1.0,1.0,1.0]"]


def test_msra_style_puts_the_stride_in_the_first_1x1_and_feeds_bgr_0_255() -> None:
    msra = build_detector(load_config(None, TINY + MSRA))
    torchvision = build_detector(load_config(None, TINY))
    for model, first, second in ((msra, (2, 2), (1, 1)), (torchvision, (1, 1), (2, 2))):
        for block in (model.trunk.body.layer2[0], model.trunk.body.layer3[0], conv5_of(model.roi_heads.box_head)
                      .layer4[0]):
            assert (block.conv1.stride, block.conv2.stride) == (first, second)
    assert (msra.transform.channel_order, msra.transform.pixel_scale) == ("BGR", 255.0)
    assert (torchvision.transform.channel_order, torchvision.transform.pixel_scale) == ("RGB", 1.0)


def test_msra_style_with_torchvision_pixels_is_refused() -> None:
    with pytest.raises(ValueError, match="input.channel_order=BGR"):
        build_detector(load_config(None, TINY + ["model.backbone.style=msra"]))
    with pytest.raises(ValueError, match="style must be"):
        build_detector(load_config(None, TINY + ["model.backbone.style=caffe"]))


def test_msra_checkpoint_loads_into_msra_detector_only(tmp_path: Path) -> None:
    """A converted MSRA checkpoint records its style (tools/convert_weights.py writes ``config.style``)."""
    torch.manual_seed(0)
    resnet = build_resnet(50, style="msra", base_width=8)
    path = save_checkpoint(tmp_path / "r50_msra.pth", {"model": resnet.state_dict(),
                                                       "config": {"arch": "resnet50", "style": "msra"}})
    cfg = load_config(None, TINY + MSRA + [f"model.backbone.weights={path}"])
    model = build_detector(cfg)
    load_backbone_weights(model, cfg)
    assert torch.equal(model.trunk.body.layer3[5].conv2.weight, resnet.layer3[5].conv2.weight)
    assert torch.equal(conv5_of(model.roi_heads.box_head).layer4[2].conv3.weight, resnet.layer4[2].conv3.weight)

    cfg = load_config(None, TINY + [f"model.backbone.weights={path}"])  # torchvision style: same keys and shapes
    with pytest.raises(WeightsError, match="msra-style but the model is torchvision-style"):
        load_backbone_weights(build_detector(cfg), cfg)
