"""Initialise a detector from another detector's checkpoint (the paper's "baseline+++", Tables 10/11: a
COCO-trained model fine-tuned on VOC).

Every tensor whose name and shape the two models share is copied. The class-specific layers
(``roi_heads.predictor.cls_score`` ``[K+1, C]`` and ``bbox_pred`` ``[4K, C]``) are copied row by row for the
classes both datasets have — the same name, or the COCO↔VOC pairs of :data:`COCO_VOC_NAMES` — the background row
(0) always; the rows of classes the source never saw keep their initialisation. Without class names on both
sides (checkpoints written by ``tools/train_det.py`` carry ``"classes"``) nothing says which row is which class,
so the class-specific layers keep their initialisation.

``load_detector_weights`` returns a :class:`TransferReport` that says what was loaded and what was not.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from backbones.checkpoint import CheckpointError, load_checkpoint, nonfinite_tensors
from detection.modeling.box_head import conv5_of
from detection.modeling.faster_rcnn import FasterRCNN

__all__ = ["COCO_VOC_NAMES", "CLASS_LAYERS", "TransferReport", "backbone_state_dict", "load_detector_weights",
           "match_classes"]

logger = logging.getLogger(__name__)

# VOC name → COCO 2014/2017 category name, where they differ in spelling only; the other 14 VOC classes have
# the same name in COCO.
COCO_VOC_NAMES: dict[str, str] = {
    "aeroplane": "airplane", "diningtable": "dining table", "motorbike": "motorcycle",
    "pottedplant": "potted plant", "sofa": "couch", "tvmonitor": "tv",
}  # fmt: skip

# The class-specific layers: name prefix → rows per class (background is row 0 of the classifier only).
CLASS_LAYERS: dict[str, int] = {"roi_heads.predictor.cls_score.": 1, "roi_heads.predictor.bbox_pred.": 4}


def _canonical(name: str) -> str:
    name = name.strip().lower()
    return COCO_VOC_NAMES.get(name, name)


def match_classes(target: list[str], source: list[str]) -> dict[int, int]:
    """Target label → source label (both 1..K) for the classes both lists name (spelling differences of
    :data:`COCO_VOC_NAMES` ignored, and case). VOC ``cat`` (label 8) ↔ COCO ``cat`` (label 17), etc."""
    index = {_canonical(n): i + 1 for i, n in enumerate(source)}
    return {t + 1: index[_canonical(n)] for t, n in enumerate(target) if _canonical(n) in index}


@dataclass
class TransferReport:
    """What ``load_detector_weights`` did: tensors copied whole, class rows copied (target ← source names),
    tensors of the model left at their initialisation (with why), and checkpoint tensors the model has no use for."""

    source: str
    copied: list[str] = field(default_factory=list)
    class_pairs: list[tuple[str, str]] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)
    unused: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"detector weights from {self.source}: {len(self.copied)} tensors copied"]
        if self.class_pairs:
            names = ", ".join(t if t == s else f"{t}←{s}" for t, s in self.class_pairs)
            lines.append(f"  class-specific rows copied for {len(self.class_pairs)} shared classes: {names}")
        for name, why in self.kept.items():
            lines.append(f"  kept at initialisation: {name} ({why})")
        if self.unused:
            lines.append(f"  not used ({len(self.unused)}): {', '.join(self.unused[:8])}"
                         f"{', …' if len(self.unused) > 8 else ''}")  # fmt: skip
        return "\n".join(lines)


def load_detector_weights(
    model: nn.Module, source: str | Path, *, classes: list[str] | None = None
) -> TransferReport:
    """Copy a toolkit detector checkpoint's weights into ``model`` (see the module docstring); ``classes`` are
    the model's class names (label k is ``classes[k - 1]``); ``source`` may also be a URL or a model-zoo name
    (detection/weights/zoo.py). Returns the report (also logged)."""
    from detection.weights.zoo import fetch_weights  # zoo → detectron2 → this module's backbone_state_dict

    source = fetch_weights(source)
    ckpt = load_checkpoint(source)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
        raise CheckpointError(source, "not a detector checkpoint (no 'model' state dict)")
    weights: dict[str, Tensor] = ckpt["model"]
    if nonfinite := nonfinite_tensors(weights):
        raise CheckpointError(source, nonfinite)
    source_classes = list(ckpt.get("classes") or [])
    report = TransferReport(source=str(source))
    state = model.state_dict()
    pairs = _class_pairs(classes or [], source_classes)
    for name, tensor in state.items():
        layer = next((p for p in CLASS_LAYERS if name.startswith(p)), None)
        if name not in weights:
            report.kept[name] = "not in the checkpoint"
        elif layer is not None:
            _copy_class_rows(name, tensor, weights[name], pairs, CLASS_LAYERS[layer], report)
        elif weights[name].shape != tensor.shape:
            report.kept[name] = f"shape {tuple(weights[name].shape)} in the checkpoint, {tuple(tensor.shape)} here"
        else:
            tensor.copy_(weights[name])
            report.copied.append(name)
    if pairs is not None:
        report.class_pairs = [(classes[t - 1], source_classes[s - 1]) for t, s in sorted(pairs.items())]  # type: ignore[index]
    report.unused = [k for k in weights if k not in state]
    model.load_state_dict(state)
    logger.info("%s", report.summary())
    return report


def _class_pairs(target: list[str], source: list[str]) -> dict[int, int] | None:
    """Target label → source label, or ``None`` when either side has no class names."""
    if not target or not source:
        return None
    return match_classes(target, source)


@torch.no_grad()
def _copy_class_rows(
    name: str, tensor: Tensor, weights: Tensor, pairs: dict[int, int] | None, rows: int, report: TransferReport
) -> None:
    """Copy the rows of shared classes (and the classifier's background row) of one class-specific tensor."""
    if pairs is None:
        if weights.shape == tensor.shape:  # unnamed but the same layout: nothing says the classes differ
            report.kept[name] = "class-specific, and the checkpoint or the model names no classes"
        else:
            report.kept[name] = "class-specific, of another class count, and no class names to match"
        return
    if weights.shape[1:] != tensor.shape[1:]:
        report.kept[name] = f"shape {tuple(weights.shape)} in the checkpoint, {tuple(tensor.shape)} here"
        return
    background = rows == 1  # the classifier has a background row 0; the regressor starts at class 1
    for target_label, source_label in pairs.items():
        t = (target_label if background else target_label - 1) * rows
        s = (source_label if background else source_label - 1) * rows
        tensor[t : t + rows] = weights[s : s + rows]
    if background:
        tensor[0] = weights[0]
    if pairs:
        report.copied.append(f"{name} (rows of {len(pairs)} classes{' + background' if background else ''})")
    else:
        report.kept[name] = "class-specific, and no class in common"


def backbone_state_dict(model: FasterRCNN) -> dict[str, Tensor]:
    """The detector's ResNet (conv1…conv4_x of the trunk, conv5_x of the box head) under the classifier's keys
    (``layer3.5.conv2.weight``, no ``fc``): what ``model.backbone.weights`` loads into a new detector
    (``detection.build.load_backbone_weights``, of which this is the inverse)."""
    conv5 = conv5_of(model.roi_heads.box_head)
    return {**model.trunk.body.state_dict(), **conv5.state_dict()}
