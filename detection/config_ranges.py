"""The valid range of every numeric config key (and of the keys with a fixed set of values), declared once:
``load_config`` refuses a value outside it naming the key and the range (detection/config.py ``validate_config``).
NaN and infinity fail every rule. A test fails when a numeric key has no rule here."""

from __future__ import annotations

import math
import typing
from typing import Any

from detection.files import short_repr

__all__ = ["RULES", "out_of_range"]


def _finite(*values: Any) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


def _in(low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> typing.Callable[[Any], bool]:
    """A test for a finite number in the interval (NaN and inf fail every comparison or the finiteness check)."""
    def ok(v: Any) -> bool:
        return (_finite(v) and (v > low if low_open else v >= low) and (v < high if high_open else v <= high))
    return ok


def _at_least(low: float) -> typing.Callable[[Any], bool]:
    return lambda v: _finite(v) and v >= low


def _sizes(v: Any) -> bool:
    return all(_finite(s) and s >= 1 for s in v)


_UNIT = _in(0, 1)
_UNIT_OPEN_LOW = _in(0, 1, low_open=True)

# (dotted key, test, what the value must be): checked when a config is loaded, so a bad value fails before any work.
# Every numeric key has a rule (tests/detection/test_config.py checks that none is missing), and every test refuses
# NaN and infinity.
RULES: list[tuple[str, typing.Callable[[Any], bool], str]] = [
    ("num_classes", _at_least(0), "non-negative (0: as many as the training data has)"),
    ("seed", _at_least(0), "non-negative"),
    ("model.backbone.depth", lambda v: v in (18, 34, 50, 101, 152), "one of 18, 34, 50, 101, 152"),
    ("model.backbone.base_width", _at_least(1), "at least 1"),
    ("model.backbone.freeze_at", lambda v: v in (0, 1, 2, 3, 4), "one of 0, 1, 2, 3, 4"),
    ("solver.base_lr", _in(0, math.inf, low_open=True, high_open=True), "a positive finite number"),
    ("solver.momentum", _in(0, 1, high_open=True), "in [0, 1)"),
    ("solver.weight_decay", _at_least(0), "a non-negative finite number"),
    ("solver.ims_per_batch", _at_least(1), "at least 1"),
    ("solver.max_iter", _at_least(1), "at least 1 (0 would write an untrained model_final.pth)"),
    ("solver.steps", lambda v: all(_finite(s) and s >= 0 for s in v), "non-negative iterations"),
    ("solver.gamma", _in(0, math.inf, low_open=True, high_open=True), "a positive finite number"),
    ("solver.warmup_iters", _at_least(0), "non-negative"),
    ("solver.warmup_factor", _UNIT_OPEN_LOW, "in (0, 1]"),
    ("solver.checkpoint_period", _at_least(0), "non-negative (0: only model_final.pth)"),
    ("solver.clip_grad_norm", _at_least(0), "non-negative (0 disables)"),
    ("input.train_min_sizes", lambda v: len(v) > 0 and _sizes(v), "a non-empty list of positive sizes"),
    ("input.train_max_size", _at_least(1), "at least 1"),
    ("input.test_min_size", _at_least(1), "at least 1"),
    ("input.test_max_size", _at_least(1), "at least 1"),
    ("input.flip_prob", _UNIT, "in [0, 1]"),
    ("input.pixel_mean", lambda v: len(v) == 3 and _finite(*v), "3 finite numbers (R, G, B)"),
    ("input.pixel_std", lambda v: len(v) == 3 and _finite(*v) and all(s > 0 for s in v),
     "3 positive numbers (R, G, B), all finite"),
    ("input.size_divisible", _at_least(1), "at least 1"),
    ("input.pixel_scale", _in(0, math.inf, low_open=True, high_open=True), "a positive finite number"),
    ("input.max_image_pixels", _at_least(1), "at least 1"),
    ("model.anchors.sizes", lambda v: len(v) > 0 and _finite(*v) and all(s > 0 for s in v),
     "a non-empty list of positive finite sizes"),
    ("model.anchors.aspect_ratios", lambda v: len(v) > 0 and _finite(*v) and all(s > 0 for s in v),
     "a non-empty list of positive finite ratios"),
    ("model.anchors.offset", _in(0, 1, high_open=True), "in [0, 1) strides"),
    ("model.rpn.conv_channels", _at_least(0), "non-negative (0: the trunk's width)"),
    ("model.rpn.fg_iou_thresh", _UNIT_OPEN_LOW, "in (0, 1]"),
    ("model.rpn.bg_iou_thresh", _UNIT, "in [0, 1]"),
    ("model.rpn.batch_size_per_image", _at_least(1), "at least 1"),
    ("model.rpn.positive_fraction", _UNIT_OPEN_LOW, "in (0, 1]"),
    ("model.rpn.pre_nms_top_n_train", _at_least(1), "at least 1"),
    ("model.rpn.post_nms_top_n_train", _at_least(1), "at least 1"),
    ("model.rpn.pre_nms_top_n_test", _at_least(1), "at least 1"),
    ("model.rpn.post_nms_top_n_test", _at_least(1), "at least 1"),
    ("model.rpn.nms_thresh", _UNIT_OPEN_LOW, "in (0, 1]"),
    ("model.rpn.min_box_size", _at_least(0), "a non-negative finite number"),
    ("model.rpn.smooth_l1_beta", _at_least(0), "a non-negative finite number"),
    ("model.rpn.loss_weight", _at_least(0), "a non-negative finite number"),
    ("model.roi_heads.pooler", lambda v: v in ("roipool", "roialign"), "'roipool' or 'roialign'"),
    ("model.roi_heads.pooler_resolution", _at_least(1), "at least 1"),
    ("model.roi_heads.sampling_ratio", _at_least(0), "non-negative (0: adaptive)"),
    ("model.roi_heads.batch_size_per_image", _at_least(1), "at least 1"),
    ("model.roi_heads.positive_fraction", _UNIT_OPEN_LOW, "in (0, 1]"),
    ("model.roi_heads.fg_iou_thresh", _UNIT_OPEN_LOW, "in (0, 1]"),
    ("model.roi_heads.bg_iou_low", _in(0, 1, high_open=True), "in [0, 1)"),
    ("model.roi_heads.bbox_reg_weights", lambda v: len(v) == 4 and _finite(*v) and all(w > 0 for w in v),
     "4 positive finite numbers"),
    ("model.roi_heads.smooth_l1_beta", _at_least(0), "a non-negative finite number"),
    ("model.roi_heads.score_thresh", _in(0, 1, high_open=True), "in [0, 1)"),
    ("model.roi_heads.nms_thresh", _UNIT_OPEN_LOW, "in (0, 1]"),
    ("model.roi_heads.detections_per_img", _at_least(1), "at least 1"),
    ("model.roi_heads.voting_iou_thresh", _UNIT_OPEN_LOW, "in (0, 1]"),
    ("model.roi_heads.refinement_nms_thresh", _UNIT_OPEN_LOW, "in (0, 1]"),
    ("data.num_workers", _at_least(0), "non-negative (0 loads in the main process)"),
    ("test.pyramid_min_sizes", _sizes, "positive sizes (empty: single scale)"),
    ("test.pyramid_max_size", _at_least(1), "at least 1"),
    ("input.resize_mode", lambda v: v in ("float", "detectron2"), "'float' or 'detectron2'"),
    ("model.roi_heads.empty_boxes", lambda v: v in ("before_nms", "after_top_k"), "'before_nms' or 'after_top_k'"),
    ("data.sampler", lambda v: v in ("grouped", "repeat_factor"), "'grouped' or 'repeat_factor'"),
    ("data.repeat_threshold", _UNIT_OPEN_LOW, "in (0, 1]"),
    ("test.pyramid_levels_per_roi", lambda v: v in (1, 2), "1 (the nearest level) or 2 (the paper's maxout)"),
    ("test.eval_period", _at_least(0), "non-negative (0: only after training)"),
    ("test.ensemble_nms_thresh", lambda v: v is None or _UNIT_OPEN_LOW(v), "in (0, 1], or null (the RPN's)"),
    ("test.ensemble_proposals", lambda v: v is None or _at_least(1)(v), "at least 1, or null (the RPN's test count)"),
    ("solver.lr_schedule", lambda v: v in ("step", "cosine"), "'step' or 'cosine'"),
    ("solver.base_lr_end", _at_least(0), "a non-negative finite number (the cosine schedule's last rate)"),
    ("solver.reference_batch_size", _at_least(0), "non-negative (0: base_lr is not scaled with the batch)"),
    ("test.patience", _at_least(0), "non-negative (0: no early stopping)"),
]


def out_of_range(cfg: Any) -> list[str]:
    """``key=value must be <range>`` for every value of ``cfg`` (a ``detection.config.Config``) outside its rule."""
    problems = []
    for dotted, ok, expected in RULES:
        value: Any = cfg
        for part in dotted.split("."):
            value = getattr(value, part)
        if not ok(value):
            problems.append(f"{dotted}={short_repr(value)} must be {expected}")
    return problems
