"""TIDE (Bolya et al., ECCV 2020): the AP a detector loses to each kind of error, in AP points (0–100).

A re-implementation of the authors' ``tidecv`` (bbox mode, its defaults: foreground IoU 0.5, background IoU 0.1,
100 detections per image), vectorised over each image's detections; ``tests/detection/evaluation/analysis/
test_tide.py`` holds it equal to ``tidecv``. Per image, detections sorted by score (the file's order among ties)
are matched greedily to the unused same-class object of highest IoU ≥ 0.5; an unmatched detection lying more than
half inside a same-class crowd region is ignored. Every other detection gets one error, tested in this order:

- ``loc``: same class, 0.1 ≤ IoU ≤ 0.5 with an object;      - ``cls``: IoU ≥ 0.5 with an object of another class;
- ``dupe``: IoU ≥ 0.5 with a same-class object already taken; - ``bkg``: IoU ≤ 0.1 with every object;
- ``both``: anything else (wrong class and badly placed);     - ``miss``: an object no detection (nor a cls/loc
  error) reached.

Fixing ``loc``/``cls`` turns the highest-scoring such detection of each untaken object into a true positive (of the
object's class) and drops the others; fixing ``dupe``/``bkg``/``both`` drops them; fixing ``miss`` removes the
missed objects. dAP = AP(fixed) − AP, each type fixed alone (clamped at 0, as tidecv does). The special errors:
``false_pos`` (every false positive scored below every true one) and ``false_neg`` (every unmatched object removed).
AP is COCO's 101-point interpolated AP, averaged over the classes that have objects or detections (a class that is
only ever predicted counts as 0, as in tidecv).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from detection.evaluation.analysis.data import AnalysisData, box_iou, group_by_image

MAIN_ERRORS = ("cls", "loc", "both", "dupe", "bkg", "miss")
SPECIAL_ERRORS = ("false_pos", "false_neg")
_CODE = {name: i for i, name in enumerate(MAIN_ERRORS)}
_TP = -1


@dataclass
class TideResult:
    """``ap50``: TIDE's AP at the foreground IoU; ``errors``: dAP per main and special error type; ``counts``: how
    many of each main error; ``det_error`` ``[D]`` each detection's error code (−1: true positive, −2: not
    evaluated) and ``gt_missed`` ``[G]`` (objects counted as ``miss``), for the gallery."""

    ap50: float
    errors: dict[str, float]
    counts: dict[str, int]
    pos_thresh: float = 0.5
    bg_thresh: float = 0.1
    det_error: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)
    gt_missed: np.ndarray = field(default_factory=lambda: np.zeros(0, bool), repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"ap50": self.ap50, "tide": dict(self.errors), "tide_counts": dict(self.counts),
                "tide_thresholds": {"foreground_iou": self.pos_thresh, "background_iou": self.bg_thresh}}


def interpolated_ap(score: np.ndarray, tp: np.ndarray, num_gt: int) -> float:
    """COCO's 101-point AP (0–100) of one class's detections (already in rank order for ties) against ``num_gt``."""
    if num_gt == 0 or len(score) == 0:
        return 0.0
    order = np.argsort(-score, kind="stable")
    hits = np.cumsum(tp[order])
    precision = hits / np.arange(1, len(order) + 1)
    recall = hits / num_gt
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    idx = np.searchsorted(recall, np.arange(101) / 100, side="left")
    y = np.where(idx < len(precision), precision[np.minimum(idx, len(precision) - 1)], 0.0)
    return float(y.sum() / 101 * 100)


def mean_ap(cls: np.ndarray, score: np.ndarray, tp: np.ndarray, num_gt: np.ndarray) -> float:
    """Mean :func:`interpolated_ap` over the classes with detections or objects (``num_gt`` ``[K]``)."""
    order = np.argsort(cls, kind="stable")
    cls, score, tp = cls[order], score[order], tp[order]
    bounds = np.searchsorted(cls, np.arange(len(num_gt) + 1))
    aps = [interpolated_ap(score[bounds[k]:bounds[k + 1]], tp[bounds[k]:bounds[k + 1]], int(num_gt[k]))
           for k in range(len(num_gt)) if bounds[k + 1] > bounds[k] or num_gt[k] != 0]
    return float(np.mean(aps)) if aps else 0.0


def _match_image(
    d_box: np.ndarray, d_cls: np.ndarray, g_box: np.ndarray, g_cls: np.ndarray, c_box: np.ndarray,
    c_cls: np.ndarray, pos: float, bg: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One image, detections in rank order. Returns per detection ``error`` (code, or ``_TP``), ``ignored``,
    ``target`` (the object a cls/loc fix would claim, −1 none), and per object ``used``, ``usable``, ``missed``."""
    n, m = len(d_box), len(g_box)
    error = np.full(n, _CODE["bkg"], np.int64)
    target = np.full(n, -1, np.int64)
    used, usable = np.zeros(m, bool), np.zeros(m, bool)
    if m:
        iou = box_iou(d_box, g_box)
        same = d_cls[:, None] == g_cls[None]
        cls_iou = iou * same
        free = np.ones(m)
        for p in np.flatnonzero(cls_iou.max(1) >= pos):  # the rest cannot match: skip them
            row = cls_iou[p] * free
            j = int(row.argmax())
            if row[j] >= pos:
                error[p], used[j], free[j] = _TP, True, 0.0
    tp = error == _TP
    ignored = np.zeros(n, bool)
    if len(c_box) and n:
        inside = (box_iou(d_box, c_box, crowd=True) > pos) & (d_cls[:, None] == c_cls[None])
        ignored = inside.any(1) & ~tp
    if m and n:
        rest = ~tp
        best_cls = cls_iou.argmax(1)
        best_cls_iou = cls_iou[np.arange(n), best_cls]
        loc = rest & (best_cls_iou >= bg) & (best_cls_iou <= pos)
        other_iou = iou * ~same
        best_other = other_iou.argmax(1)
        wrong = rest & ~loc & (other_iou[np.arange(n), best_other] >= pos)
        dupe = rest & ~loc & ~wrong & ((cls_iou * used[None]).max(1) >= pos)
        left = rest & ~loc & ~wrong & ~dupe
        error[loc], error[wrong], error[dupe] = _CODE["loc"], _CODE["cls"], _CODE["dupe"]
        error[left] = np.where(iou[left].max(1) <= bg, _CODE["bkg"], _CODE["both"])
        target[loc], target[wrong] = best_cls[loc], best_other[wrong]
        target[(target >= 0) & used[np.maximum(target, 0)]] = -1  # a taken object cannot be claimed
        usable[target[target >= 0]] = True
    return error, ignored, target, used, usable, ~used & ~usable


def tide(data: AnalysisData, pos_thresh: float = 0.5, bg_thresh: float = 0.1, max_dets: int = 100) -> TideResult:
    """The TIDE breakdown of ``data`` (see the module docstring)."""
    order = np.lexsort((np.arange(len(data.det_score)), -data.det_score, data.det_image))
    d_starts = group_by_image(data.det_image, data.num_images)
    g_order = np.argsort(data.gt_image, kind="stable")
    g_starts = group_by_image(data.gt_image, data.num_images)
    det_error = np.full(len(data.det_score), -2, np.int64)
    ignored = np.zeros(len(data.det_score), bool)
    fix_to = np.full(len(data.det_score), -1, np.int64)  # class a cls/loc fix gives, −1: the fix drops it
    gt_used = np.zeros(len(data.gt_class), bool)
    gt_missed = np.zeros(len(data.gt_class), bool)
    for i in range(data.num_images):
        dets = order[d_starts[i]:d_starts[i + 1]][:max_dets]
        gts = g_order[g_starts[i]:g_starts[i + 1]]
        crowd = data.gt_crowd[gts]
        objs, regions = gts[~crowd], gts[crowd]
        err, ign, target, used, _, missed = _match_image(
            data.det_box[dets], data.det_class[dets], data.gt_box[objs], data.gt_class[objs],
            data.gt_box[regions], data.gt_class[regions], pos_thresh, bg_thresh)
        det_error[dets], ignored[dets] = err, ign
        gt_used[objs], gt_missed[objs] = used, missed
        claimed = np.flatnonzero(target >= 0)
        _, first = np.unique(target[claimed], return_index=True)  # the highest-ranked claim of each object
        best = claimed[first]
        fix_to[dets[best]] = data.gt_class[objs[target[best]]]
    return _fix_all(data, det_error, ignored, fix_to, gt_used, gt_missed, pos_thresh, bg_thresh)


def _fix_all(
    data: AnalysisData, det_error: np.ndarray, ignored: np.ndarray, fix_to: np.ndarray, gt_used: np.ndarray,
    gt_missed: np.ndarray, pos_thresh: float, bg_thresh: float,
) -> TideResult:
    k = data.num_classes
    objects = ~data.gt_crowd
    num_gt = np.bincount(data.gt_class[objects], minlength=k)
    missed = np.bincount(data.gt_class[gt_missed], minlength=k)
    unmatched = np.bincount(data.gt_class[objects & ~gt_used], minlength=k)
    evaluated = det_error > -2
    tp = det_error == _TP
    fp = evaluated & ~tp & ~ignored
    # Points in tidecv's insertion order among equal scores: the errors (rank order), then the true positives.
    rank = np.where(tp, len(tp), 0) + np.arange(len(tp))

    def points(keep: np.ndarray, cls: np.ndarray, score: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, ...]:
        o = np.argsort(rank[keep], kind="stable")
        return cls[keep][o], score[keep][o], positive[keep][o]

    base_keep = tp | fp
    ap = mean_ap(*points(base_keep, data.det_class, data.det_score, tp), num_gt)
    errors: dict[str, float] = {}
    for name in MAIN_ERRORS[:-1]:
        this = evaluated & (det_error == _CODE[name])
        fixed = this & (fix_to >= 0)
        keep = (base_keep & ~this) | fixed
        cls = np.where(fixed, fix_to, data.det_class)
        errors[name] = max(mean_ap(*points(keep, cls, data.det_score, tp | fixed), num_gt) - ap, 0.0)
    errors["miss"] = max(mean_ap(*points(base_keep, data.det_class, data.det_score, tp), num_gt - missed) - ap, 0.0)
    errors["false_pos"] = mean_ap(*points(base_keep, data.det_class, tp.astype(float), tp), num_gt) - ap
    errors["false_neg"] = mean_ap(*points(base_keep, data.det_class, data.det_score, tp), num_gt - unmatched) - ap
    counts = {name: int(np.sum(evaluated & (det_error == _CODE[name]))) for name in MAIN_ERRORS[:-1]}
    counts["miss"] = int(gt_missed.sum())
    return TideResult(ap50=ap, errors=errors, counts=counts, pos_thresh=pos_thresh, bg_thresh=bg_thresh,
                      det_error=det_error, gt_missed=gt_missed)
