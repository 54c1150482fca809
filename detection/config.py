"""The detector's configuration: typed dataclasses with the paper's defaults, overridden by YAML and ``key=value``.

``load_config`` is the only place a YAML file is read; ``build_detector`` (detection/build.py) is the only place a
config becomes modules. Modules themselves take plain keyword arguments and never see a config object.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detection.config_ranges import RULES as _RULES  # noqa: F401  (re-exported for the tests)
from detection.config_ranges import out_of_range
from detection.files import parse_yaml, read_yaml, short_repr


class ConfigError(ValueError):
    """A config file or override names an unknown key or gives a value of the wrong type."""


@dataclass
class BackboneConfig:
    depth: int = 50
    base_width: int = 64
    # "torchvision" (official ImageNet weights), a path or http(s) URL to a state dict / toolkit checkpoint (downloaded
    # once into $RESDET_CACHE: backbones/hub.py), or "none".
    weights: str = "torchvision"
    # 0: train everything; 1: freeze conv1; 2: also conv2_x (the paper's and detectron2's default).
    freeze_at: int = 2
    # "torchvision" (stride on the 3×3) or "msra" (the paper's Caffe models and detectron2's: stride on the first
    # 1×1 of a down-sampling block; BGR 0–255 input, so input.channel_order=BGR and input.pixel_scale=255).
    style: str = "torchvision"


@dataclass
class InputConfig:
    # Training scales: the shorter side is drawn from this list, the longer side capped at train_max_size.
    train_min_sizes: list[int] = field(default_factory=lambda: [600])
    train_max_size: int = 1000
    test_min_size: int = 600
    test_max_size: int = 1000
    flip_prob: float = 0.5
    # torchvision's ImageNet weights expect RGB in [0, 1] normalised with these.
    pixel_mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    pixel_std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    size_divisible: int = 32
    # Images arrive RGB in [0, 1]; the network sees them in this channel order, times pixel_scale, then
    # normalised with pixel_mean / pixel_std (MSRA and detectron2 weights: BGR, 255, their mean, std 1).
    channel_order: str = "RGB"
    pixel_scale: float = 1.0
    # Images whose header announces more pixels are skipped with a warning (an error under --strict), undecoded.
    max_image_pixels: int = 150_000_000
    # Test-time resize: "float" (the toolkit's: sizes rounded by round(), normalised float pixels resampled
    # bilinearly inside the model) or "detectron2" (its ResizeShortestEdge: sizes rounded by int(x + 0.5), the
    # uint8 image resized by PIL, bilinear; configs/detectron2/, docs/model_zoo.md).
    resize_mode: str = "float"


@dataclass
class AnchorConfig:
    sizes: list[float] = field(default_factory=lambda: [32.0, 64.0, 128.0, 256.0, 512.0])
    aspect_ratios: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])
    # Centre of the first anchor, in strides from the image corner (0 in Faster R-CNN and in detectron2's configs;
    # 0.5 centres each anchor in its stride × stride block), and whether anchor sides are rounded to whole pixels
    # (Faster R-CNN's; detectron2 keeps them exact).
    offset: float = 0.0
    round_to_pixels: bool = True


@dataclass
class RPNConfig:
    conv_channels: int = 0  # 0: the trunk's width (C4 uses 1024 for bottleneck nets)
    fg_iou_thresh: float = 0.7
    bg_iou_thresh: float = 0.3
    batch_size_per_image: int = 256
    positive_fraction: float = 0.5
    pre_nms_top_n_train: int = 12000
    post_nms_top_n_train: int = 2000
    pre_nms_top_n_test: int = 6000
    post_nms_top_n_test: int = 300
    nms_thresh: float = 0.7
    min_box_size: float = 0.0
    smooth_l1_beta: float = 1.0 / 9.0
    loss_weight: float = 1.0


@dataclass
class RoIHeadsConfig:
    pooler: str = "roipool"  # "roipool" as the paper, or "roialign"
    pooler_resolution: int = 14
    sampling_ratio: int = 0  # RoIAlign only; 0 = adaptive
    roi_align_aligned: bool = True  # RoIAlign only; True = half-pixel offset (detectron2's ROIAlignV2)
    batch_size_per_image: int = 128
    positive_fraction: float = 0.25
    fg_iou_thresh: float = 0.5
    bg_iou_low: float = 0.0  # Fast R-CNN uses 0.1; detectron2 0.0
    add_gt_as_proposals: bool = True
    bbox_reg_weights: list[float] = field(default_factory=lambda: [10.0, 10.0, 5.0, 5.0])
    smooth_l1_beta: float = 1.0
    score_thresh: float = 0.05
    nms_thresh: float = 0.5
    detections_per_img: int = 100
    # Degenerate boxes: "before_nms" (the toolkit's: boxes with a side under 0.01 px dropped before NMS and the
    # top detections_per_img) or "after_top_k" (detectron2's: boxes empty once clipped to the original image
    # dropped after the top detections_per_img, so an image may keep fewer).
    empty_boxes: str = "before_nms"
    # The paper's Appendix B improvements.
    global_context: bool = False
    box_refinement: bool = False
    box_voting: bool = False
    voting_iou_thresh: float = 0.5
    refinement_nms_thresh: float = 0.3


@dataclass
class TestConfig:
    # Multi-scale testing (Appendix B): shorter sides of the pyramid; empty = single scale.
    pyramid_min_sizes: list[int] = field(default_factory=list)
    pyramid_max_size: int = 2000
    # Pyramid levels each RoI is pooled at: 2 = the paper's (NoC's maxout over the two adjacent levels around the
    # one whose scaled RoI area is nearest 224²), 1 = that nearest level only (Fast R-CNN's single-level
    # assignment): half the box-head work of the pyramid, not the paper's numbers (docs/benchmarks.md).
    pyramid_levels_per_roi: int = 2
    # Evaluate on the test split every this many training iterations (0: only after training); the metrics go
    # to log.txt and TensorBoard, and the weights scoring best on ``best_metric`` (a key of metrics.json, e.g.
    # "mAP50" or COCO's "mAP") to model_best.pth.
    eval_period: int = 0
    best_metric: str = "mAP50"
    # Horizontal-flip testing (beyond the paper): each model also scores the mirrored images; scores and boxes
    # averaged with the unmirrored ones (detection/testtime/ensemble.py).
    flip: bool = False
    # Ensembles and flips: the union of the views' proposals is NMS-ed once more (Appendix B's "union set of
    # proposals"): at this IoU threshold (null: the RPN's, model.rpn.nms_thresh), keeping this many per image
    # (null: model.rpn.post_nms_top_n_test).
    ensemble_nms_thresh: float | None = None
    ensemble_proposals: int | None = None
    # Each periodic evaluation also computes the training losses on the test split's ground truth (no gradients):
    # val_loss_cls, …, val_total_loss in the eval log, metrics.jsonl and TensorBoard (detection/engine/validation.py).
    # best_metric may name one of them (lower is better, e.g. val_total_loss).
    val_losses: bool = True
    # Early stopping: stop after this many evaluations in a row without a gain of best_metric (0: never); needs
    # eval_period > 0. The stop writes the checkpoint and model_final.pth as usual; model_best.pth keeps the best.
    patience: int = 0


@dataclass
class ModelConfig:
    # A detector checkpoint to start training from (after the backbone weights): every tensor of the same name and
    # shape, and the class-specific rows of the classes both models name (detection/weights/transfer.py). "" = none.
    # A path, an http(s) URL or a model-zoo name (detectron2:R50-C4-3x; detection/weights/zoo.py).
    weights: str = ""
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    anchors: AnchorConfig = field(default_factory=AnchorConfig)
    rpn: RPNConfig = field(default_factory=RPNConfig)
    roi_heads: RoIHeadsConfig = field(default_factory=RoIHeadsConfig)


@dataclass
class SolverConfig:
    ims_per_batch: int = 16
    base_lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 1e-4
    max_iter: int = 90000
    steps: list[int] = field(default_factory=lambda: [60000, 80000])
    gamma: float = 0.1
    warmup_iters: int = 1000
    warmup_factor: float = 0.001
    checkpoint_period: int = 5000
    clip_grad_norm: float = 0.0  # 0 disables
    # "step" (the paper's: × gamma at each of steps) or "cosine" (detectron2's WarmupCosineLR: a half cosine from
    # base_lr to base_lr_end over the whole max_iter, times the warm-up; steps are not used).
    lr_schedule: str = "step"
    base_lr_end: float = 0.0
    # The linear scaling rule: base_lr (and base_lr_end) were tuned for this many images per step, so the rate used
    # is base_lr × ims_per_batch / reference_batch_size (e.g. 16 for detectron2's configs); 0: base_lr as given.
    reference_batch_size: int = 0


@dataclass
class DataConfig:
    # "" = the dataset's default training split; several splits train as one: "train2014+valminusminival2014" or
    # a list [train2014, valminusminival2014] (the same; VOC's "07+12", ILSVRC's "train+val1"): detection/data/splits.py
    train_split: str | list[str] = ""
    test_split: str = ""  # "" = the dataset's default test split
    num_workers: int = 2
    # Dataset-specific extra paths (e.g. R-CNN's val1/val2 lists for ImageNet DET).
    extra: dict[str, str] = field(default_factory=dict)
    # COCO: image folder of a split, relative to the data root (default: <split>/; minival2014 and
    # valminusminival2014 → val2014/, test-dev2017 → test2017/), e.g. {minival2014: val2014}.
    image_dirs: dict[str, str] = field(default_factory=dict)
    # COCO training: image ids removed from the training splits, from a COCO JSON (e.g. instances_minival2014.json)
    # or a file of ids; "" = none.
    exclude_images: str = ""
    # Own data in COCO format (docs/custom_data.md): an instances JSON anywhere and its image folder, per split;
    # they replace <data-root>/annotations/instances_<split>.json and <data-root>/<split>/. Training may list
    # several JSONs (with one image folder for all, or one each).
    train_json: str | list[str] = ""
    train_images: str | list[str] = ""
    test_json: str = ""
    test_images: str = ""
    # Own data in VOC format: the class names in label order (default: <root>/classes.txt, else the 20 VOC ones).
    classes: list[str] = field(default_factory=list)
    # Training: keep images without objects (background-only images: RPN and RoI negatives only); false drops
    # them, as the paper's training did. The log says how many were kept or dropped.
    keep_empty: bool = False
    # Training order: "grouped" (each image once an epoch, batches of one aspect group) or "repeat_factor" (LVIS's
    # repeat-factor sampling: images with rare classes repeated, detection/data/sampler.py).
    sampler: str = "grouped"
    # repeat_factor: a class in fewer than this fraction of the training images is repeated (r = sqrt(t / f)).
    repeat_threshold: float = 0.001


@dataclass
class LoggingConfig:
    # Weights & Biases beside TensorBoard (optional: pip install -e ".[wandb]"): the project ("" = off), the team or
    # user (entity; "" = your default) and the run's name ("" = one wandb picks); --resume continues the same run.
    wandb_project: str = ""
    wandb_entity: str = ""
    wandb_run_name: str = ""


@dataclass
class Config:
    # Foreground classes; 0 = as many as the training data has (its class names are stored in the checkpoint).
    num_classes: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    input: InputConfig = field(default_factory=InputConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    data: DataConfig = field(default_factory=DataConfig)
    test: TestConfig = field(default_factory=TestConfig)
    seed: int = 0
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults ← YAML file (if any) ← ``key.sub=value`` overrides (values parsed as YAML scalars/lists).

    Raises ``ConfigError`` naming the bad key and listing the valid ones, or naming the expected type.
    """
    cfg = Config()
    if path is not None:
        path = Path(path)
        if path.is_dir():
            raise ConfigError(f"config file {path} is a folder; pass a .yaml file")
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        data = read_yaml(path, ConfigError, what="config file") or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of keys to values")
        merge_dict(cfg, data, where=str(path))
    return apply_overrides(cfg, overrides or [])


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply ``key.sub=value`` strings (values parsed as YAML) to ``cfg`` in place; returns it."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"override {short_repr(item)} must look like key.sub=value")
        try:
            value = parse_yaml(raw, ConfigError)
        except ConfigError as exc:
            raise ConfigError(f"override {short_repr(item)}: {exc}") from None
        set_value(cfg, key.strip(), value, where="command line")
    if isinstance(cfg, Config):  # the localiser's config (detection/localization/config.py) has its own fields
        validate_config(cfg)
    return cfg


def config_from_dict(data: dict[str, Any]) -> Config:
    """Rebuild a Config from ``Config.to_dict()`` output (e.g. stored in a checkpoint)."""
    cfg = Config()
    merge_dict(cfg, data, where="checkpoint")
    return cfg


def merge_dict(obj: Any, data: dict[str, Any], where: str, prefix: str = "") -> None:
    for key, value in data.items():
        full = f"{prefix}{key}"
        hints = typing.get_type_hints(type(obj))
        if key not in hints:
            valid = ", ".join(f"{prefix}{k}" for k in hints)
            raise ConfigError(f"{where}: unknown config key {short_repr(full)}; valid keys here: {valid}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: {short_repr(full)} must be a mapping, got {short_repr(value)}")
            merge_dict(current, value, where, prefix=f"{full}.")
        else:
            setattr(obj, key, _coerce(value, hints[key], full, where))


def set_value(cfg: Config, dotted: str, value: Any, where: str) -> None:
    parts = dotted.split(".")
    nested: Any = value
    for part in reversed(parts):
        nested = {part: nested}
    merge_dict(cfg, nested, where)


_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _coerce(value: Any, hint: Any, key: str, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    bad = ConfigError(f"{where}: {key!r} expects {_type_name(hint)}, got {short_repr(value)}")
    if origin in (typing.Union, types.UnionType):
        for option in args:
            try:
                return _coerce(value, option, key, where)
            except ConfigError:
                continue
        raise bad
    if hint is type(None):
        if value is None:
            return None
        raise bad
    if origin is list:
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise bad
        return [_coerce(v, args[0], key, where) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise bad
        return {str(k): _coerce(v, args[1], key, where) for k, v in value.items()}
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise bad
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
            return float(value)  # YAML 1.1 reads "1e-4" and "1e30" (no dot) as strings
        raise bad
    if hint is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise bad
    raise bad


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def validate_config(cfg: Config) -> None:
    """Raise one ``ConfigError`` listing every value outside its valid range (types are checked on reading; the
    ranges are declared in detection/config_ranges.py)."""
    problems = out_of_range(cfg)
    if cfg.test.patience > 0 and cfg.test.eval_period <= 0:
        problems.append(f"test.patience={cfg.test.patience} needs test.eval_period > 0 (early stopping counts "
                        "periodic evaluations; test.eval_period is 0)")
    if problems:
        raise ConfigError("invalid config: " + "; ".join(problems))
