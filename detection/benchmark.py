"""The two detectors the benchmark compares, with the same weights, and how far their outputs agree.

``build_torchvision_c4`` assembles torchvision's ``FasterRCNN`` with this toolkit's R-C4 architecture and settings:
torchvision's ResNet trunk to layer3 with torchvision's ``FrozenBatchNorm2d``, layer4 + mean-pool as the box head
(no TwoMLPHead), ``FastRCNNPredictor`` on the 2048-d feature, the config's RoI op (RoIPool, or RoIAlign with the
config's ``sampling_ratio`` and ``roi_align_aligned``, as ours) at 14×14 and 1/16, one feature level with the
config's anchors at stride 16, and the config's proposal counts, thresholds and image sizes. ``copy_weights`` maps
our state onto it.

Random weights are fine for timing, but a network of random convs with unit BN statistics has activations that
explode or vanish and a predictor whose scores never pass the 0.05 threshold. ``calibrate`` therefore sets every
frozen BN's statistics from one forward pass over the benchmark image (each BN then normalises its input) and widens
the classifier's initialisation, so both models produce real proposals and detections to compare.
"""

from __future__ import annotations

import argparse
import sys
from collections import OrderedDict
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torchvision.models import resnet
from torchvision.models.detection import FasterRCNN as TVFasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops import MultiScaleRoIAlign, box_iou, roi_align, roi_pool
from torchvision.ops.misc import FrozenBatchNorm2d as TVFrozenBatchNorm2d

from backbones.frozen_bn import FrozenBatchNorm2d
from detection.config import Config
from detection.data.shapes import render_image
from detection.files import ResultWriteError, append_text, write_json
from detection.modeling.box_head import conv5_of
from detection.modeling.faster_rcnn import FasterRCNN


class SingleLevelPooler(MultiScaleRoIAlign):
    """torchvision's ``box_roi_pool`` slot filled with our exact RoI op on the single stride-16 level "0"."""

    def __init__(self, op: str, resolution: int, sampling_ratio: int, spatial_scale: float, aligned: bool) -> None:
        super().__init__(["0"], resolution, sampling_ratio)
        self.op = op
        self.resolution = resolution
        self.ratio = sampling_ratio
        self.spatial_scale = spatial_scale
        self.aligned = aligned

    def forward(self, x: dict[str, Tensor], boxes: list[Tensor], image_shapes: list[tuple[int, int]]) -> Tensor:
        features = x["0"]
        size = (self.resolution, self.resolution)
        if self.op == "roipool":
            return roi_pool(features, boxes, size, self.spatial_scale)
        return roi_align(features, boxes, size, self.spatial_scale, self.ratio, aligned=self.aligned)


class MeanPoolHead(nn.Module):
    """torchvision's layer4 followed by the global mean: ``[R, 1024, 14, 14] -> [R, 2048]``."""

    def __init__(self, layer4: nn.Module) -> None:
        super().__init__()
        self.layer4 = layer4

    def forward(self, x: Tensor) -> Tensor:
        return self.layer4(x).mean(dim=(2, 3))


_FROZEN_NAMES = {0: (), 1: ("conv1",), 2: ("conv1", "layer1"), 3: ("conv1", "layer1", "layer2"),
                 4: ("conv1", "layer1", "layer2", "layer3")}


def build_torchvision_c4(cfg: Config) -> TVFasterRCNN:
    """torchvision's FasterRCNN with this toolkit's R-C4 architecture and the settings of ``cfg``."""
    m, r = cfg.model, cfg.model.roi_heads
    net = getattr(resnet, f"resnet{m.backbone.depth}")(weights=None, norm_layer=TVFrozenBatchNorm2d)
    if m.backbone.style == "msra" and m.backbone.depth >= 50:  # stride on the first 1×1, as ours (same weights)
        for layer in (net.layer2, net.layer3, net.layer4):
            layer[0].conv1.stride, layer[0].conv2.stride = layer[0].conv2.stride, (1, 1)
    image_mean, image_std = rgb_unit_normalisation(cfg)
    names = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3")
    body = nn.Sequential(OrderedDict((n, getattr(net, n)) for n in names))
    for name in _FROZEN_NAMES[m.backbone.freeze_at]:
        getattr(body, name).requires_grad_(False)
    body.out_channels = 1024 if m.backbone.depth >= 50 else 256  # type: ignore[assignment]
    anchors = AnchorGenerator((tuple(m.anchors.sizes),), (tuple(m.anchors.aspect_ratios),))
    head_channels = 2048 if m.backbone.depth >= 50 else 512
    return TVFasterRCNN(
        body,
        num_classes=None,
        min_size=cfg.input.test_min_size,
        max_size=cfg.input.test_max_size,
        image_mean=image_mean,
        image_std=image_std,
        rpn_anchor_generator=anchors,
        rpn_head=RPNHead(body.out_channels, anchors.num_anchors_per_location()[0]),
        rpn_pre_nms_top_n_train=m.rpn.pre_nms_top_n_train,
        rpn_pre_nms_top_n_test=m.rpn.pre_nms_top_n_test,
        rpn_post_nms_top_n_train=m.rpn.post_nms_top_n_train,
        rpn_post_nms_top_n_test=m.rpn.post_nms_top_n_test,
        rpn_nms_thresh=m.rpn.nms_thresh,
        rpn_fg_iou_thresh=m.rpn.fg_iou_thresh,
        rpn_bg_iou_thresh=m.rpn.bg_iou_thresh,
        rpn_batch_size_per_image=m.rpn.batch_size_per_image,
        rpn_positive_fraction=m.rpn.positive_fraction,
        box_roi_pool=SingleLevelPooler(r.pooler, r.pooler_resolution, r.sampling_ratio, 1.0 / 16,
                                       r.roi_align_aligned),
        box_head=MeanPoolHead(net.layer4),
        box_predictor=FastRCNNPredictor(head_channels, cfg.num_classes + 1),
        box_score_thresh=r.score_thresh,
        box_nms_thresh=r.nms_thresh,
        box_detections_per_img=r.detections_per_img,
        box_fg_iou_thresh=r.fg_iou_thresh,
        box_bg_iou_thresh=r.fg_iou_thresh,
        box_batch_size_per_image=r.batch_size_per_image,
        box_positive_fraction=r.positive_fraction,
        bbox_reg_weights=tuple(r.bbox_reg_weights),
    )


def rgb_unit_normalisation(cfg: Config) -> tuple[list[float], list[float]]:
    """torchvision normalises RGB [0, 1]; ours may scale and reorder first (MSRA: BGR 0–255). ``(x·s − m) / d`` is
    ``(x − m/s) / (d/s)``, and a BGR network equals an RGB one whose conv1 input channels are reversed
    (``copy_weights``), so torchvision gets the config's mean and std divided by the scale, in RGB order."""
    i = cfg.input
    mean = [v / i.pixel_scale for v in i.pixel_mean]
    std = [v / i.pixel_scale for v in i.pixel_std]
    return (mean[::-1], std[::-1]) if i.channel_order == "BGR" else (mean, std)


@torch.no_grad()
def copy_weights(ours: FasterRCNN, theirs: TVFasterRCNN) -> None:
    """Load our (plain, unfused) model's weights into torchvision's. Background is class 0 in both; torchvision's
    box regressor also has rows for the background class, which its post-processing drops: they are set to 0."""
    theirs.backbone.load_state_dict(ours.trunk.body.state_dict())
    if ours.transform.channel_order == "BGR":  # theirs sees RGB: reverse conv1's input channels instead
        theirs.backbone.conv1.weight.copy_(ours.trunk.body.conv1.weight.flip(1))
    theirs.roi_heads.box_head.layer4.load_state_dict(conv5_of(ours.roi_heads.box_head).layer4.state_dict())
    ours_rpn, their_rpn = ours.rpn.head, theirs.rpn.head
    their_rpn.conv[0][0].load_state_dict(ours_rpn.conv.state_dict())
    their_rpn.cls_logits.load_state_dict(ours_rpn.objectness.state_dict())
    their_rpn.bbox_pred.load_state_dict(ours_rpn.deltas.state_dict())
    pred, their_pred = ours.roi_heads.predictor, theirs.roi_heads.box_predictor
    their_pred.cls_score.load_state_dict(pred.cls_score.state_dict())
    their_pred.bbox_pred.weight.zero_()
    their_pred.bbox_pred.bias.zero_()
    their_pred.bbox_pred.weight[4:].copy_(pred.bbox_pred.weight)
    their_pred.bbox_pred.bias[4:].copy_(pred.bbox_pred.bias)


@torch.no_grad()
def calibrate(model: FasterRCNN, image: Tensor, classifier_std: float = 0.05, seed: int = 0) -> None:
    """Set each frozen BN's statistics to those of its input on ``image`` (one eval pass; BNs run in data order,
    so each sees already-calibrated inputs) and re-draw the classifier with a wider ``classifier_std``."""
    handles = []

    def set_stats(module: nn.Module, inputs: tuple[Tensor, ...]) -> None:
        x = inputs[0].float()
        module.running_mean.copy_(x.mean(dim=(0, 2, 3)))
        module.running_var.copy_(x.var(dim=(0, 2, 3)) + 1e-3)

    for module in model.modules():
        if isinstance(module, FrozenBatchNorm2d):
            handles.append(module.register_forward_pre_hook(set_stats))
    was_training = model.training
    model.eval()
    try:
        model([image])
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    g = torch.Generator().manual_seed(seed)
    weight = model.roi_heads.predictor.cls_score.weight
    weight.copy_(torch.randn(weight.shape, generator=g) * classifier_std)


def benchmark_sample(height: int, width: int, seed: int = 0) -> tuple[Tensor, dict[str, Tensor]]:
    """A generated shapes image (float RGB ``[3, H, W]`` in [0, 1]) and its targets (boxes xyxy, labels 1..5)."""
    rng = np.random.default_rng(seed)
    pixels, objects = render_image(rng, height, width, max_objects=6, min_object_size=32)
    image = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1).float() / 255.0
    boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (o["bbox"] for o in objects)], dtype=torch.float32)
    labels = torch.tensor([o["label"] for o in objects], dtype=torch.int64)
    return image, {"boxes": boxes.reshape(-1, 4), "labels": labels}


def match(a_boxes: Tensor, b_boxes: Tensor, a_labels: Tensor | None = None, b_labels: Tensor | None = None,
          iou_thresh: float = 0.9) -> tuple[Tensor, Tensor]:
    """Greedy one-to-one matching by IoU (same label when labels are given): index pairs ``(ia, ib)``."""
    if a_boxes.numel() == 0 or b_boxes.numel() == 0:
        empty = torch.zeros(0, dtype=torch.int64)
        return empty, empty
    iou = box_iou(a_boxes.float(), b_boxes.float())
    if a_labels is not None and b_labels is not None:
        iou = iou * (a_labels[:, None] == b_labels[None, :])
    ia, ib = [], []
    while True:
        best = int(iou.argmax())
        i, j = divmod(best, iou.shape[1])
        if iou[i, j] < iou_thresh:
            break
        ia.append(i)
        ib.append(j)
        iou[i, :] = -1
        iou[:, j] = -1
    return torch.tensor(ia, dtype=torch.int64), torch.tensor(ib, dtype=torch.int64)


def agreement(reference: dict[str, Tensor], other: dict[str, Tensor]) -> dict[str, Any]:
    """How far ``other``'s detections (and proposals, when both carry ``"proposals"``) are from ``reference``'s."""
    out: dict[str, Any] = {}
    if "proposals" in reference and "proposals" in other:
        pa, pb = reference["proposals"], other["proposals"]
        ia, ib = match(pa, pb)
        out["proposals"] = f"{len(pa)}/{len(pb)}"
        out["proposals_matched"] = len(ia) / max(len(pa), len(pb), 1)
        out["proposal_max_box_diff"] = float((pa[ia] - pb[ib]).abs().max()) if len(ia) else 0.0
    da, db = reference, other
    ia, ib = match(da["boxes"], db["boxes"], da["labels"], db["labels"])
    out["detections"] = f"{len(da['boxes'])}/{len(db['boxes'])}"
    out["detections_matched"] = len(ia) / max(len(da["boxes"]), len(db["boxes"]), 1)
    out["max_box_diff"] = float((da["boxes"][ia] - db["boxes"][ib]).abs().max()) if len(ia) else 0.0
    out["max_score_diff"] = float((da["scores"][ia] - db["scores"][ib]).abs().max()) if len(ia) else 0.0
    return out


def capture_proposals(model: nn.Module) -> tuple[list[Tensor], Any]:
    """Stores the proposals of the next call of ``model.rpn``; returns (store, handle with ``remove()``).
    torchvision's RPN returns them from ``forward``; ours from ``propose`` at test time (``FasterRCNN.propose``
    calls it instead of ``forward``), which is wrapped on the instance for as long as the handle lives."""
    store: list[Tensor] = []

    def keep(boxes: Any) -> None:
        store.clear()
        store.extend(p.detach().float() for p in boxes)

    rpn = model.rpn
    if not hasattr(rpn, "propose"):
        return store, rpn.register_forward_hook(lambda module, inputs, output: keep(output[0]))
    original = rpn.propose

    def propose(*args: Any, **kwargs: Any) -> Any:
        out = original(*args, **kwargs)
        keep(out[0])
        return out

    rpn.propose = propose
    hook = rpn.register_forward_hook(lambda module, inputs, output: keep(output[0]))  # training-mode forward

    class Handle:
        def remove(self) -> None:
            hook.remove()
            if rpn.__dict__.get("propose") is propose:
                del rpn.propose

    return store, Handle()


def save_results(args: argparse.Namespace, result: dict[str, Any], table: str) -> None:
    """``--json`` (the arguments and ``result``) and the ``--markdown`` append of ``table``, each atomically: a full
    disk leaves the previous JSON and the previous table, prints one line naming the file and exits with status 1."""
    try:
        if args.json:
            write_json(args.json, {"args": {k: str(v) for k, v in vars(args).items()}, **result}, indent=1)
        if args.markdown:
            append_text(args.markdown, "\n" + table)
    except ResultWriteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
