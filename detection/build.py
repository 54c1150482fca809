"""The one place a Config becomes modules (and a checkpoint becomes a detector: ``load_detector``).
``build_detector`` never touches the disk or the network (random init);
``build_test_detector`` wraps a detector for the configured test-time variant (the image pyramid);
``load_backbone_weights`` loads the configured ImageNet (or toolkit) weights into a built detector."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from torch import nn

from backbones import build_resnet, load_weights, split_c4
from backbones.c4 import C4Head
from backbones.checkpoint import CheckpointError, load_checkpoint, nonfinite_tensors
from backbones.weights import checkpoint_style
from detection.config import Config, ConfigError, RoIHeadsConfig, apply_overrides, config_from_dict, load_config
from detection.modeling.anchors import AnchorGenerator
from detection.modeling.box_head import C4BoxHead, GlobalContextBoxHead, conv5_of
from detection.modeling.boxes import NMS
from detection.modeling.faster_rcnn import DetectorTrunk, FasterRCNN, ImageTransform
from detection.modeling.pooling import RoIAlign, RoIPool
from detection.modeling.postprocess import BatchedNMS, BoxDecoder, BoxVoting, DetectionSelector
from detection.modeling.roi_heads import BoxPredictor, C4RoIHeads
from detection.modeling.rpn import RegionProposalNetwork, RPNHead
from detection.testtime.ensemble import EnsembleDetector
from detection.testtime.pyramid import MultiScaleDetector

logger = logging.getLogger(__name__)

# freeze_at → number of trunk children (conv1, bn1, relu, maxpool, layer1, …) that stay fixed.
_FROZEN_CHILDREN = {0: 0, 1: 4, 2: 5, 3: 6, 4: 7}
_STRIDE = 16  # the C4 trunk's


def build_detector(cfg: Config) -> FasterRCNN:
    """Faster R-CNN ResNet-C4 with every BN frozen; all sizes and thresholds from ``cfg`` (detection/config.py)."""
    m = cfg.model
    if cfg.num_classes < 1:
        raise ConfigError("num_classes is 0 (= as many as the training data has): set num_classes, or build the "
                          "model once the dataset is known (detection/engine/run.py does)")
    if m.backbone.freeze_at not in _FROZEN_CHILDREN:
        raise ValueError(f"model.backbone.freeze_at must be one of {sorted(_FROZEN_CHILDREN)}")
    check_input_matches_style(cfg)
    b = m.backbone
    resnet = build_resnet(b.depth, frozen_bn=True, base_width=b.base_width, style=b.style)  # type: ignore[arg-type]
    body, head = split_c4(resnet)
    trunk = DetectorTrunk(body, body.out_channels, _FROZEN_CHILDREN[m.backbone.freeze_at])
    anchor_generator = AnchorGenerator(
        m.anchors.sizes, m.anchors.aspect_ratios, _STRIDE, offset=m.anchors.offset,
        round_to_pixels=m.anchors.round_to_pixels,
    )
    rpn = RegionProposalNetwork(
        anchor_generator=anchor_generator,
        head=RPNHead(trunk.out_channels, m.rpn.conv_channels or trunk.out_channels, anchor_generator.num_anchors),
        nms=NMS(),
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
    i = cfg.input
    transform = ImageTransform(
        pixel_mean=i.pixel_mean,
        pixel_std=i.pixel_std,
        test_min_size=i.test_min_size,
        test_max_size=i.test_max_size,
        size_divisible=i.size_divisible,
        channel_order=i.channel_order,
        pixel_scale=i.pixel_scale,
        resize_mode=i.resize_mode,
        drop_empty_boxes=m.roi_heads.empty_boxes == "after_top_k",
    )
    roi_heads = build_roi_heads(m.roi_heads, head, cfg.num_classes)
    return FasterRCNN(transform=transform, trunk=trunk, rpn=rpn, roi_heads=roi_heads)


def check_input_matches_style(cfg: Config) -> None:
    """MSRA-style weights (``model.backbone.style=msra``) were trained on BGR 0–255 pixels; a config that would
    feed them RGB [0, 1] is a silent accuracy loss, so it is refused (configs/detectron2/*.yaml set all four)."""
    style, i = cfg.model.backbone.style, cfg.input
    if style not in ("torchvision", "msra"):
        raise ValueError(f"model.backbone.style must be 'torchvision' or 'msra', got {style!r}")
    if style == "msra" and (i.channel_order != "BGR" or i.pixel_scale != 255.0):
        raise ValueError(
            "model.backbone.style=msra takes BGR 0–255 input (backbones.MSRA_INPUT): set input.channel_order=BGR, "
            "input.pixel_scale=255, input.pixel_mean=[103.53,116.28,123.675], input.pixel_std=[1.0,1.0,1.0]; got "
            f"channel_order={i.channel_order}, pixel_scale={i.pixel_scale}"
        )


def build_pooler(r: RoIHeadsConfig) -> nn.Module:
    """``model.roi_heads.pooler``: "roipool" (the paper's) or "roialign" (``roi_align_aligned``: detectron2's V2)."""
    if r.pooler == "roipool":
        return RoIPool(output_size=r.pooler_resolution, spatial_scale=1.0 / _STRIDE)
    if r.pooler == "roialign":
        return RoIAlign(
            output_size=r.pooler_resolution,
            spatial_scale=1.0 / _STRIDE,
            sampling_ratio=r.sampling_ratio,
            aligned=r.roi_align_aligned,
        )
    raise ValueError(f"model.roi_heads.pooler must be 'roipool' or 'roialign', got {r.pooler!r}")


def build_roi_heads(r: RoIHeadsConfig, conv5: C4Head, num_classes: int) -> C4RoIHeads:
    """Box head (pooler → conv5_x, wrapped for global context), predictor, decoder and selector (NMS at 0.3 after
    box refinement, as the paper; voting if configured)."""
    box_head: nn.Module = C4BoxHead(pooler=build_pooler(r), head=conv5)
    if r.global_context:
        box_head = GlobalContextBoxHead(box_head)
    selector = DetectionSelector(
        score_thresh=r.score_thresh,
        nms_thresh=r.refinement_nms_thresh if r.box_refinement else r.nms_thresh,
        detections_per_img=r.detections_per_img,
        voting=BoxVoting(iou_thresh=r.voting_iou_thresh) if r.box_voting else None,
        nms=BatchedNMS(),
        min_box_size=None if r.empty_boxes == "after_top_k" else 1e-2,  # after: ImageTransform.postprocess
    )
    return C4RoIHeads(
        box_head=box_head,
        predictor=BoxPredictor(box_head.out_channels, num_classes),
        decoder=BoxDecoder(num_classes=num_classes, weights=tuple(r.bbox_reg_weights)),
        selector=selector,
        box_refinement=r.box_refinement,
        batch_size_per_image=r.batch_size_per_image,
        positive_fraction=r.positive_fraction,
        fg_iou_thresh=r.fg_iou_thresh,
        bg_iou_low=r.bg_iou_low,
        add_gt_as_proposals=r.add_gt_as_proposals,
        smooth_l1_beta=r.smooth_l1_beta,
    )


def build_test_detector(model: FasterRCNN | Sequence[FasterRCNN], cfg: Config) -> nn.Module:
    """``model`` itself, or wrapped for multi-scale testing when ``test.pyramid_min_sizes`` is set; several
    models (an ensemble) or ``test.flip`` give an ``EnsembleDetector`` (with the pyramid inside it). Call after
    ``optimize_for_inference`` (the wrappers run whatever modules the models hold)."""
    models = [model] if isinstance(model, nn.Module) else list(model)
    if len(models) > 1 or cfg.test.flip:
        return EnsembleDetector(
            models, pyramid_min_sizes=cfg.test.pyramid_min_sizes, pyramid_max_size=cfg.test.pyramid_max_size,
            pyramid_levels_per_roi=cfg.test.pyramid_levels_per_roi, flip=cfg.test.flip,
            proposal_nms_thresh=cfg.test.ensemble_nms_thresh,
            proposals_per_image=cfg.test.ensemble_proposals,
        )
    model = models[0]
    if cfg.test.pyramid_min_sizes:
        return MultiScaleDetector(
            model, min_sizes=cfg.test.pyramid_min_sizes, max_size=cfg.test.pyramid_max_size,
            levels_per_roi=cfg.test.pyramid_levels_per_roi,
        )
    return model


def load_backbone_weights(model: FasterRCNN, cfg: Config) -> None:
    """Load ``cfg.model.backbone.weights`` ("torchvision", a state-dict path or a toolkit checkpoint, an http(s) URL of
    one, a ``.pkl`` of MSRA / detectron2 weights by URL or ``detectron2://``, or "none") into the detector's trunk
    (conv1…conv4_x) and conv5 head. The classifier's ``fc`` is not used."""
    given = cfg.model.backbone.weights
    if given.lower() in ("", "none"):
        logger.info("backbone weights: none (random initialisation)")
        return
    from detection.weights.zoo import fetch_backbone_weights  # detection.weights imports this module

    source = fetch_backbone_weights(given)  # a .pkl by URL / detectron2:// → converted once, cached: a local path
    b = cfg.model.backbone
    resnet = build_resnet(b.depth, frozen_bn=True, base_width=b.base_width, style=b.style)  # type: ignore[arg-type]
    load_weights(resnet, source, ignore=("fc.",))  # refuses weights of the other style
    body, head = split_c4(resnet)
    model.trunk.body.load_state_dict(body.state_dict())
    conv5_of(model.roi_heads.box_head).load_state_dict(head.state_dict())
    logger.info("backbone weights loaded from %s", given if source == given else f"{given} (converted: {source})")


def load_detector(
    weights: str | Path, cfg: Config | None = None, overrides: list[str] | None = None
) -> tuple[FasterRCNN, Config, list[str]]:
    """A trained detector from a toolkit checkpoint: a path, an http(s) URL or a model-zoo name
    (``detectron2:R50-C4-3x``, ``detectron2://COCO-Detection/…/model_final_f97cb7.pkl``; downloaded once, a
    detectron2 ``.pkl`` converted once: detection/weights/zoo.py). Without ``cfg`` the config stored in the
    checkpoint is used, with ``overrides`` (``key=value``) applied; returns ``(model, config, class names)``."""
    from detection.weights.zoo import fetch_weights  # detection.weights imports this module

    weights = fetch_weights(weights)
    ckpt = load_checkpoint(weights)
    stored = ckpt.get("config")
    if isinstance(stored, dict) and "arch" in stored and "model" not in stored:  # backbones/train.py's record
        raise CheckpointError(weights, f"it holds a classifier ({stored.get('arch')}), not a detector: use it as "
                                       f"model.backbone.weights={weights} when training a detector")
    if cfg is None:
        if "config" not in ckpt:
            raise CheckpointError(weights, "the checkpoint holds no config; pass --config")
        cfg = apply_overrides(config_from_dict(ckpt["config"]), overrides or [])
    recorded = checkpoint_style(ckpt)
    if recorded is not None and recorded != cfg.model.backbone.style:  # same keys and shapes: would load silently
        raise CheckpointError(weights, f"its backbone is {recorded}-style, the config's is "
                                       f"{cfg.model.backbone.style}: set model.backbone.style={recorded}")
    nonfinite = nonfinite_tensors(ckpt["model"])
    if nonfinite:
        raise CheckpointError(weights, nonfinite)
    model = build_detector(cfg)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:  # shapes or keys that do not fit this config's model
        first = str(exc).strip().splitlines()
        raise CheckpointError(weights, "its weights do not fit the configured model: " + " ".join(first[:3])) from exc
    return model, cfg, list(ckpt.get("classes", []))


def load_ensemble_members(
    weights: Sequence[str | Path], cfg: Config, classes: list[str], config_file: Path | None, overrides: list[str],
    *, allow_unnamed: bool = False, first: Path | None = None,
) -> list[FasterRCNN]:
    """The other members of an ensemble whose first member was loaded with ``cfg`` and ``classes``: each from
    its own stored config (or ``config_file``) with ``overrides``; they must predict the same classes in the same
    order. A checkpoint without class names (the first one's ``classes`` empty, or a member's) cannot show that:
    refused unless ``allow_unnamed`` (then only the class counts are compared); ``first`` names the first
    checkpoint in that error."""
    members = []
    for path in weights:
        own_cfg = load_config(config_file, overrides) if config_file is not None else None
        model, own_cfg, own_classes = load_detector(path, own_cfg, overrides)
        if own_cfg.num_classes != cfg.num_classes or (classes and own_classes and own_classes != classes):
            raise CheckpointError(path, "an ensemble member must predict the same classes as the first model")
        if not (classes and own_classes) and not allow_unnamed:
            unnamed = path if not own_classes else (first or "the first model")
            raise CheckpointError(path, f"{unnamed} records no class names, so the ensemble cannot check that its "
                                        "members predict the same classes in the same order (a permuted member "
                                        "would be averaged silently); pass --allow-unnamed-classes if you know "
                                        "they do")
        members.append(model)
    return members
