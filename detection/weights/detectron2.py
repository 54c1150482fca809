"""detectron2's Faster R-CNN C4 model-zoo checkpoints → this toolkit's detector (docs/model_zoo.md).

detectron2's R50-C4 / R101-C4 detectors are this toolkit's C4 model with MSRA-style backbones, RoIAlign (aligned)
14×14 and unrounded anchors (configs/detectron2/*.yaml set all of it). Their checkpoints differ from ours in three
ways, which :func:`convert_detectron2` undoes:

- key names (``backbone.res4.5.conv2.norm.running_var`` → ``trunk.body.layer3.5.bn2.running_var``, ``roi_heads.res5``
  → conv5_x in the box head, ``proposal_generator.rpn_head`` → ``rpn.head``, ``roi_heads.box_predictor`` →
  ``roi_heads.predictor``);
- the class order: detectron2's classifier puts background *last* (row K), ours first (row 0); the class-specific
  box regressor has no background rows in either;
- the anchor order: detectron2 lists a position's anchors size-major (for each size, every ratio), ours are
  ratio-major (``detection.modeling.anchors.cell_anchors``), so the RPN's objectness / delta channels are permuted.

Nothing here imports detectron2: checkpoints are read as plain pickles of numpy arrays (model-zoo ``.pkl``, with a
restricted unpickler) or with ``torch.load(weights_only=True)`` (``.pth`` written by detectron2's trainer).
tests/detection/weights/test_detectron2.py holds detectron2's own outputs for a small random R50-C4 (written by
tools/dev/make_detectron2_fixture.py) and requires the converted model to reproduce them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from backbones import build_resnet, load_weights
from backbones.checkpoint import CheckpointError, load_array_pickle, nonfinite_tensors, safe_torch_load
from detection.build import build_detector
from detection.config import Config, load_config
from detection.devkit import VOC_CLASSES
from detection.modeling.anchors import cell_anchors
from detection.weights.transfer import backbone_state_dict

__all__ = [
    "COCO_CLASSES",
    "CONFIGS",
    "Detectron2Architecture",
    "Detectron2Conversion",
    "convert_detectron2",
    "convert_detectron2_file",
    "detectron2_config_file",
    "detectron2_architecture",
    "detectron2_classes",
    "read_detectron2_weights",
]

# detectron2's 80 contiguous COCO classes, in increasing category-id order: the order of its classifier rows
# and of this toolkit's COCO labels 1..80 (detection/data/coco.py sorts category ids the same way), so that
# COCO results carry the original category ids.
COCO_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
)  # fmt: skip

_DEPTH_BY_RES4_BLOCKS = {6: 50, 23: 101, 36: 152}
_BLOCK = re.compile(r"^(?:backbone\.res([234])|roi_heads\.res(5))\.(\d+)\.(conv[123]|shortcut)\.(norm\.)?(\w+)$")
_FIXED = {
    "backbone.stem.conv1.weight": "trunk.body.conv1.weight",
    "proposal_generator.rpn_head.conv.weight": "rpn.head.conv.weight",
    "proposal_generator.rpn_head.conv.bias": "rpn.head.conv.bias",
    "proposal_generator.rpn_head.objectness_logits.weight": "rpn.head.objectness.weight",
    "proposal_generator.rpn_head.objectness_logits.bias": "rpn.head.objectness.bias",
    "proposal_generator.rpn_head.anchor_deltas.weight": "rpn.head.deltas.weight",
    "proposal_generator.rpn_head.anchor_deltas.bias": "rpn.head.deltas.bias",
    "roi_heads.box_predictor.cls_score.weight": "roi_heads.predictor.cls_score.weight",
    "roi_heads.box_predictor.cls_score.bias": "roi_heads.predictor.cls_score.bias",
    "roi_heads.box_predictor.bbox_pred.weight": "roi_heads.predictor.bbox_pred.weight",
    "roi_heads.box_predictor.bbox_pred.bias": "roi_heads.predictor.bbox_pred.bias",
}
_CELL_ANCHORS = "proposal_generator.anchor_generator.cell_anchors.0"  # older detectron2 checkpoints store them
# This toolkit's versions of detectron2's configs (one per model-zoo detector; docs/model_zoo.md).
CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "detectron2"


@dataclass(frozen=True)
class Detectron2Architecture:
    """What a detectron2 C4 checkpoint's shapes say: ResNet depth, stem / res2 width (64 in the model zoo),
    foreground classes, anchors per position."""

    depth: int
    base_width: int
    num_classes: int
    num_anchors: int


def read_detectron2_weights(path: str | Path) -> dict[str, Tensor]:
    """``{detectron2 key: float32 tensor}`` from a model-zoo ``.pkl`` (``{"model": {key: ndarray}, ...}``, read
    without running pickled code) or a ``.pth`` written by detectron2's trainer (``{"model": state dict, ...}``,
    read with ``weights_only=True``). Raises ``CheckpointError`` naming the file."""
    path = Path(path)
    loaded: Any = safe_torch_load(path) if path.suffix == ".pth" else load_array_pickle(path)
    model = loaded.get("model", loaded) if isinstance(loaded, Mapping) else None
    if not isinstance(model, Mapping) or not model:
        raise CheckpointError(path, "expected detectron2's layout, a dict with a 'model' dict of arrays")
    weights = {}
    for key, value in model.items():
        if not isinstance(value, (np.ndarray, Tensor)):
            raise CheckpointError(path, f"entry {key!r} is a {type(value).__name__}, not an array")
        weights[str(key)] = torch.as_tensor(np.asarray(value) if isinstance(value, np.ndarray) else value).float()
    return weights


def detectron2_architecture(weights: Mapping[str, Tensor]) -> Detectron2Architecture:
    """Read depth, width, classes and anchors off the shapes (``ValueError`` if it is not a C4 Faster R-CNN)."""
    needed = ("backbone.stem.conv1.weight", "roi_heads.box_predictor.cls_score.weight",
              "proposal_generator.rpn_head.objectness_logits.weight")
    missing = [k for k in needed if k not in weights]
    if missing or "roi_heads.res5.0.conv1.weight" not in weights:
        raise ValueError(f"not a detectron2 Faster R-CNN C4 checkpoint (no {missing or ['roi_heads.res5']}): "
                         "only the C4 models (Res5ROIHeads) map onto this toolkit")
    res4_blocks = len({k.split(".")[2] for k in weights if k.startswith("backbone.res4.")})
    if res4_blocks not in _DEPTH_BY_RES4_BLOCKS:
        raise ValueError(f"res4 has {res4_blocks} blocks; ResNet-50/101/152 have 6/23/36")
    return Detectron2Architecture(
        depth=_DEPTH_BY_RES4_BLOCKS[res4_blocks],
        base_width=weights["backbone.stem.conv1.weight"].shape[0],
        num_classes=weights["roi_heads.box_predictor.cls_score.weight"].shape[0] - 1,
        num_anchors=weights["proposal_generator.rpn_head.objectness_logits.weight"].shape[0],
    )


def detectron2_classes(num_classes: int) -> list[str]:
    """The class names of detectron2's COCO (80) and VOC (20, devkit order) detectors; ``[]`` for other counts."""
    return {80: list(COCO_CLASSES), 20: list(VOC_CLASSES)}.get(num_classes, [])


def _our_key(key: str) -> str | None:
    if key in _FIXED:
        return _FIXED[key]
    if key.startswith("backbone.stem.conv1.norm."):
        return "trunk.body.bn1." + key.rsplit(".", 1)[1]
    match = _BLOCK.match(key)
    if match is None:
        return None
    trunk_stage, res5, block, conv, norm, leaf = match.groups()
    where = f"trunk.body.layer{int(trunk_stage) - 1}" if trunk_stage else "roi_heads.box_head.head.layer4"
    if conv == "shortcut":
        layer = "downsample.1" if norm else "downsample.0"
    else:
        layer = conv.replace("conv", "bn") if norm else conv
    return f"{where}.{block}.{layer}.{leaf}"


def _anchor_permutation(num_sizes: int, num_ratios: int) -> Tensor:
    """Index into detectron2's size-major anchors for each of our ratio-major anchors."""
    return torch.tensor([s * num_ratios + r for r in range(num_ratios) for s in range(num_sizes)])


def convert_detectron2(weights: Mapping[str, Tensor], cfg: Config) -> dict[str, Tensor]:
    """detectron2 C4 weights → a state dict for ``build_detector(cfg)``.

    ``cfg`` must describe the checkpoint's architecture (MSRA style, depth, width, classes, anchors; see
    configs/detectron2/). Every key is mapped or the call fails naming the keys it cannot map; every shape is
    checked against the model ``cfg`` builds. Stored anchors (``cell_anchors``) and pixel statistics
    (``pixel_mean`` / ``pixel_std``), present in older checkpoints, must equal what ``cfg`` generates.
    """
    arch = detectron2_architecture(weights)
    nonfinite = nonfinite_tensors(weights)
    if nonfinite:
        raise ValueError(f"refusing to convert: {nonfinite}")
    b, a = cfg.model.backbone, cfg.model.anchors
    wanted = {"depth": (arch.depth, b.depth), "base_width": (arch.base_width, b.base_width),
              "num_classes": (arch.num_classes, cfg.num_classes),
              "anchors per position": (arch.num_anchors, len(a.sizes) * len(a.aspect_ratios)),
              "style": ("msra", b.style)}
    wrong = [f"{name}: checkpoint {have}, config {want}" for name, (have, want) in wanted.items() if have != want]
    if wrong:
        raise ValueError("the config does not describe this detectron2 checkpoint: " + "; ".join(wrong))

    state: dict[str, Tensor] = {}
    unmapped = []
    for key, value in weights.items():
        if key.endswith("num_batches_tracked"):
            continue
        if key in ("pixel_mean", "pixel_std", _CELL_ANCHORS):
            _check_stored_constant(key, value, cfg)
            continue
        ours = _our_key(key)
        if ours is None:
            unmapped.append(key)
        else:
            state[ours] = value
    if unmapped:
        raise ValueError(f"{len(unmapped)} detectron2 keys have no place in this toolkit's C4 detector: "
                         + ", ".join(sorted(unmapped)[:20]))

    # Background last (row K) → first (row 0).
    order = torch.cat((torch.tensor([arch.num_classes]), torch.arange(arch.num_classes)))
    for leaf in ("weight", "bias"):
        key = f"roi_heads.predictor.cls_score.{leaf}"
        if key in state:
            state[key] = state[key][order]
    # Size-major anchors → ratio-major: permute the objectness channels, and the deltas' 4-channel groups.
    perm = _anchor_permutation(len(a.sizes), len(a.aspect_ratios))
    delta_perm = (perm[:, None] * 4 + torch.arange(4)).reshape(-1)
    for leaf in ("weight", "bias"):
        for key, index in ((f"rpn.head.objectness.{leaf}", perm), (f"rpn.head.deltas.{leaf}", delta_perm)):
            if key in state:
                state[key] = state[key][index]

    expected = build_detector(cfg).state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    shapes = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
              for k, v in state.items() if k in expected and v.shape != expected[k].shape]
    problems = ([f"missing from the checkpoint: {', '.join(missing[:20])}"] if missing else []) + (
        [f"mapped to keys the model lacks: {', '.join(extra[:20])}"] if extra else []) + (
        [f"shape mismatch: {'; '.join(shapes[:20])}"] if shapes else [])
    if problems:
        raise ValueError("the detectron2 weights do not fit the configured model: " + " | ".join(problems))
    return {k: state[k].contiguous() for k in expected}


def _check_stored_constant(key: str, value: Tensor, cfg: Config) -> None:
    """Older checkpoints store the pixel statistics and the anchors; they must be what ``cfg`` uses."""
    if key == _CELL_ANCHORS:
        a = cfg.model.anchors
        ours = cell_anchors(a.sizes, a.aspect_ratios, a.round_to_pixels)
        theirs = value.reshape(-1, 4)[_anchor_permutation(len(a.sizes), len(a.aspect_ratios))]
        if not torch.allclose(theirs, ours, atol=1e-3):
            raise ValueError(f"the checkpoint's anchors ({key}) differ from those model.anchors generates")
        return
    name = "pixel_mean" if key == "pixel_mean" else "pixel_std"
    configured = torch.tensor(getattr(cfg.input, name))
    if value.numel() != 3 or not torch.allclose(value.reshape(-1), configured, atol=1e-3):
        raise ValueError(f"the checkpoint's {key} {value.reshape(-1).tolist()} differs from input.{name} "
                         f"{configured.tolist()}")



def detectron2_config_file(arch: Detectron2Architecture) -> Path:
    """The ``configs/detectron2`` file for a checkpoint: the VOC one for 20 classes, else COCO 3x of its depth."""
    if arch.num_classes == 20:
        return CONFIGS / "faster_rcnn_R_50_C4_voc.yaml"
    return CONFIGS / f"faster_rcnn_R_{arch.depth}_C4_3x.yaml"


@dataclass(frozen=True)
class Detectron2Conversion:
    """A detectron2 checkpoint converted (:func:`convert_detectron2_file`): the detector's state dict, the config
    that describes it (and reproduces detectron2's inference), where both came from."""

    path: Path
    arch: Detectron2Architecture
    config_file: Path
    cfg: Config
    state: dict[str, Tensor]

    def detector_checkpoint(self) -> dict[str, Any]:
        """A toolkit detector checkpoint: weights, the whole config, the class names, the source."""
        a = self.arch
        source = {"format": "detectron2", "file": str(self.path), "config_file": str(self.config_file),
                  "architecture": {"depth": a.depth, "base_width": a.base_width, "num_classes": a.num_classes,
                                   "num_anchors": a.num_anchors}}
        return {"model": self.state, "config": self.cfg.to_dict(), "classes": detectron2_classes(a.num_classes),
                "source": source}

    def backbone_checkpoint(self) -> dict[str, Any]:
        """Only its ResNet (COCO-trained conv1…conv5_x, MSRA style), for ``model.backbone.weights`` when
        fine-tuning a new detector; checked by loading it into ``build_resnet``."""
        model = build_detector(self.cfg)
        model.load_state_dict(self.state)
        backbone = backbone_state_dict(model)
        a = self.arch
        load_weights(build_resnet(a.depth, base_width=a.base_width, style="msra"), backbone, ignore=("fc.",))
        return {"model": backbone, "config": {"arch": f"resnet{a.depth}", "style": "msra", "source": str(self.path)}}

    def summary(self) -> str:
        a = self.arch
        classes = {80: " (COCO)", 20: " (VOC)"}.get(a.num_classes, "") if detectron2_classes(a.num_classes) else ""
        return (f"detectron2 ResNet-{a.depth} C4 (width {a.base_width}), {a.num_classes} classes{classes}, "
                f"config {self.config_file}")


def convert_detectron2_file(
    path: str | Path, config: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (), *,
    sizes_from_checkpoint: bool | None = None,
) -> Detectron2Conversion:
    """Read and convert a detectron2 C4 checkpoint (:func:`read_detectron2_weights`, :func:`convert_detectron2`)
    with ``config`` (default: :func:`detectron2_config_file` with the checkpoint's width and class count; every
    other setting, detectron2's inference, from that file) and ``key=value`` ``overrides``. Raises
    ``CheckpointError`` (the file), ``ConfigError`` or ``ValueError`` (checkpoint and config disagree).
    ``sizes_from_checkpoint`` (default: when ``config`` is None) sets the config's width and class count to the
    checkpoint's before ``overrides``."""
    path = Path(path)
    weights = read_detectron2_weights(path)
    arch = detectron2_architecture(weights)
    if sizes_from_checkpoint if sizes_from_checkpoint is not None else config is None:
        overrides = [f"model.backbone.base_width={arch.base_width}", f"num_classes={arch.num_classes}", *overrides]
    if config is None:
        config = detectron2_config_file(arch)
    cfg = load_config(config, list(overrides))
    return Detectron2Conversion(path, arch, Path(config), cfg, convert_detectron2(weights, cfg))
