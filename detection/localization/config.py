"""The localiser's configuration (Appendix C): typed dataclasses with the paper's defaults for ResNet-101 on
ImageNet, overridden by YAML (``configs/imagenet_loc/*.yaml``) and ``key=value``, read by the same code as the
detector's config (:func:`detection.config.merge_dict`). Sizes are in pixels of the network input; the paper's
224 crop and its test scales shrink together in the miniature configs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detection.config import ConfigError, apply_overrides, merge_dict
from detection.files import read_yaml

__all__ = ["LocConfig", "load_loc_config", "loc_config_from_dict"]


@dataclass
class NetConfig:
    arch: str = "resnet101"
    base_width: int = 64
    # The classification network to fine-tune: a toolkit checkpoint from tools/train_cls.py, "torchvision", "none".
    weights: str = "torchvision"


@dataclass
class RPNLocConfig:
    # Anchors as in the RPN (3 scales x 3 ratios), centred every `stride` pixels of the conv5 map (stride 32).
    anchor_sizes: list[float] = field(default_factory=lambda: [128.0, 256.0, 512.0])
    aspect_ratios: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])
    stride: int = 32
    fg_iou: float = 0.7
    bg_iou: float = 0.3
    anchors_per_image: int = 8  # the paper: 8 anchors sampled per image, positives:negatives 1:1
    positive_fraction: float = 0.5


@dataclass
class RCNNLocConfig:
    proposals: int = 200  # the RPN's top proposals per image and class (training: GT class; testing: each predicted)
    warp_size: int = 224  # each proposal is cropped and warped to warp_size x warp_size
    context_pad: int = 16  # pixels of the warp showing the proposal's surroundings (R-CNN's 16)
    fg_iou: float = 0.5  # R-CNN's rule: a proposal with IoU >= 0.5 with a GT box of the class is positive
    positive_fraction: float = 0.25  # R-CNN's 32 of 128 (the paper does not give its ratio)


@dataclass
class SolverLocConfig:
    batch_size: int = 256  # images per mini-batch (RPN stage) or RoIs per mini-batch (R-CNN stage), global
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    max_iter: int = 60_000
    steps: list[int] = field(default_factory=lambda: [40_000])
    warmup_iters: int = 0
    checkpoint_period: int = 5_000
    keep_checkpoints: int = 3
    log_period: int = 20


@dataclass
class InputLocConfig:
    crop: int = 224  # training crops and the 1-crop test view
    scale_range: list[int] = field(default_factory=lambda: [256, 480])  # shorter side of training images (Sec. 3.4)
    resize: int = 256  # 1-crop: shorter side before the centre crop
    dense_scales: list[int] = field(default_factory=lambda: [224, 256, 384, 480, 640])  # shorter sides, dense test
    dense_flip: bool = False  # also the flipped image of every dense scale


@dataclass
class TestLocConfig:
    classifier_mode: str = "10crop"  # how the classifier predicts the top-5 classes: "10crop" or "fullconv"
    # Merge the candidate boxes of one class (all views): the best-scored box, then box voting (IoU >= 0.5,
    # score-weighted) over the `vote_top` best candidates. 0 turns voting off.
    vote_top: int = 20


@dataclass
class LocConfig:
    num_classes: int = 1000
    net: NetConfig = field(default_factory=NetConfig)
    input: InputLocConfig = field(default_factory=InputLocConfig)
    rpn: RPNLocConfig = field(default_factory=RPNLocConfig)
    rcnn: RCNNLocConfig = field(default_factory=RCNNLocConfig)
    solver: SolverLocConfig = field(default_factory=SolverLocConfig)
    rcnn_solver: SolverLocConfig = field(default_factory=lambda: SolverLocConfig(max_iter=40_000, steps=[30_000]))
    test: TestLocConfig = field(default_factory=TestLocConfig)
    workers: int = 4
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_loc_config(path: str | Path | None = None, overrides: list[str] | None = None) -> LocConfig:
    """Defaults ← YAML file ← ``key.sub=value`` overrides; unknown keys and wrong types raise ``ConfigError``."""
    cfg = LocConfig()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}" + (" (it is a folder)" if path.is_dir() else ""))
        data = read_yaml(path, ConfigError, what="config file") or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of keys to values")
        merge_dict(cfg, data, where=str(path))
    apply_overrides(cfg, overrides or [])  # type: ignore[arg-type]  # works on any config dataclass
    return cfg


def loc_config_from_dict(data: dict[str, Any]) -> LocConfig:
    """Rebuild a LocConfig from ``to_dict()`` output (stored in every checkpoint)."""
    cfg = LocConfig()
    merge_dict(cfg, data, where="checkpoint")
    return cfg
