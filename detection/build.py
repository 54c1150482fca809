"""The one place a Config becomes modules. ``build_detector`` never touches the disk or the network (random init);
``load_backbone_weights`` loads the configured ImageNet (or toolkit) weights into a built detector."""

from __future__ import annotations

import logging

from backbones import build_resnet, load_weights, split_c4
from detection.config import Config
from detection.model import DetectorTrunk, FasterRCNN, ImageTransform
from detection.roi_heads import C4RoIHeads
from detection.rpn import RegionProposalNetwork

logger = logging.getLogger(__name__)

# freeze_at → number of trunk children (conv1, bn1, relu, maxpool, layer1, …) that stay fixed.
_FROZEN_CHILDREN = {0: 0, 1: 4, 2: 5, 3: 6, 4: 7}


def build_detector(cfg: Config) -> FasterRCNN:
    """Faster R-CNN ResNet-C4 with every BN frozen; all sizes and thresholds from ``cfg`` (detection/config.py)."""
    m = cfg.model
    if m.backbone.freeze_at not in _FROZEN_CHILDREN:
        raise ValueError(f"model.backbone.freeze_at must be one of {sorted(_FROZEN_CHILDREN)}")
    resnet = build_resnet(m.backbone.depth, frozen_bn=True, base_width=m.backbone.base_width)
    body, head = split_c4(resnet)
    trunk = DetectorTrunk(body, body.out_channels, _FROZEN_CHILDREN[m.backbone.freeze_at])
    rpn = RegionProposalNetwork(
        in_channels=trunk.out_channels,
        conv_channels=m.rpn.conv_channels or trunk.out_channels,
        anchor_sizes=m.anchors.sizes,
        aspect_ratios=m.anchors.aspect_ratios,
        fg_iou_thresh=m.rpn.fg_iou_thresh,
        bg_iou_thresh=m.rpn.bg_iou_thresh,
        batch_size_per_image=m.rpn.batch_size_per_image,
        positive_fraction=m.rpn.positive_fraction,
        pre_nms_top_n=(m.rpn.pre_nms_top_n_train, m.rpn.pre_nms_top_n_test),
        post_nms_top_n=(m.rpn.post_nms_top_n_train, m.rpn.post_nms_top_n_test),
        nms_thresh=m.rpn.nms_thresh,
        min_box_size=m.rpn.min_box_size,
        smooth_l1_beta=m.rpn.smooth_l1_beta,
        loss_weight=m.rpn.loss_weight,
    )
    r = m.roi_heads
    roi_heads = C4RoIHeads(
        head=head,
        head_channels=head.out_channels,
        num_classes=cfg.num_classes,
        pooler=r.pooler,
        pooler_resolution=r.pooler_resolution,
        sampling_ratio=r.sampling_ratio,
        batch_size_per_image=r.batch_size_per_image,
        positive_fraction=r.positive_fraction,
        fg_iou_thresh=r.fg_iou_thresh,
        bg_iou_low=r.bg_iou_low,
        add_gt_as_proposals=r.add_gt_as_proposals,
        bbox_reg_weights=tuple(r.bbox_reg_weights),
        smooth_l1_beta=r.smooth_l1_beta,
        score_thresh=r.score_thresh,
        nms_thresh=r.nms_thresh,
        detections_per_img=r.detections_per_img,
        global_context=r.global_context,
        box_refinement=r.box_refinement,
        box_voting=r.box_voting,
        voting_iou_thresh=r.voting_iou_thresh,
        refinement_nms_thresh=r.refinement_nms_thresh,
    )
    i = cfg.input
    transform = ImageTransform(
        pixel_mean=i.pixel_mean,
        pixel_std=i.pixel_std,
        test_min_size=i.test_min_size,
        test_max_size=i.test_max_size,
        size_divisible=i.size_divisible,
        train_min_size=i.train_min_sizes[0],
        train_max_size=i.train_max_size,
    )
    return FasterRCNN(
        transform=transform,
        trunk=trunk,
        rpn=rpn,
        roi_heads=roi_heads,
        pyramid_min_sizes=cfg.test.pyramid_min_sizes,
        pyramid_max_size=cfg.test.pyramid_max_size,
    )


def load_backbone_weights(model: FasterRCNN, cfg: Config) -> None:
    """Load ``cfg.model.backbone.weights`` ("torchvision", a state-dict path or a toolkit checkpoint, or "none")
    into the detector's trunk (conv1…conv4_x) and conv5 head. The classifier's ``fc`` is not used."""
    source = cfg.model.backbone.weights
    if source.lower() in ("", "none"):
        logger.info("backbone weights: none (random initialisation)")
        return
    resnet = build_resnet(cfg.model.backbone.depth, frozen_bn=True, base_width=cfg.model.backbone.base_width)
    load_weights(resnet, source, ignore=("fc.",))
    body, head = split_c4(resnet)
    model.trunk.body.load_state_dict(body.state_dict())
    model.roi_heads.head.load_state_dict(head.state_dict())
    logger.info("backbone weights loaded from %s", source)
