"""pycocotools ``COCOeval``'s bbox matching and PR accumulation, vectorised (its ``evaluateImg`` is a Python loop
per image, class, size and detection: minutes on a COCO-sized set). ``tests/detection/evaluation/analysis/
test_matching.py`` holds the precision arrays equal to ``COCOeval``'s.

What ``COCOeval`` does, and so this: per (image, class), the 100 best-scoring detections (the file's order among
ties), highest score first, each take the unused object of highest IoU ≥ t, preferring objects that are not
ignored (crowd regions, objects outside the size range; among equal IoU the later object), crowd regions being
reusable and measured as intersection over the detection's area. A detection on an ignored object, or unmatched and
outside the size range, is ignored. Precision at the 101 recall thresholds is the interpolated (monotone) one.

``relabel`` extends it for the COCO ``analyze`` curves: objects of the other classes a detection's class may be
confused with count as ignored objects of that class (one per class they are relabelled into), as in the COCO
API's ``analyze`` (``Sim``: same supercategory, ``Oth``: any class).
"""

from __future__ import annotations

import numpy as np

from detection.evaluation.analysis.data import AnalysisData, box_iou

RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)
AREA_RANGES = {"all": (0.0, 1e10), "small": (0.0, 32.0**2), "medium": (32.0**2, 96.0**2), "large": (96.0**2, 1e10)}


class Matcher:
    """The detections and (image-wise) detection–object pairs of ``data``, computed once for every matching."""

    def __init__(self, data: AnalysisData, max_dets: int = 100) -> None:
        self.data = data
        n = len(data.det_score)
        # Rank within (image, class) by score, the file's order among ties; keep the first max_dets.
        order = np.lexsort((np.arange(n), -data.det_score, data.det_class, data.det_image))
        group = data.det_image[order] * data.num_classes + data.det_class[order]
        starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
        rank = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
        keep = rank < max_dets
        self.dets = order[keep]
        self.rank = rank[keep]
        self.det_area = data.det_box[self.dets, 2] * data.det_box[self.dets, 3]
        # Ties in score across images: pycocotools concatenates images in increasing id order.
        image_rank = np.argsort(np.argsort(data.image_ids, kind="stable"), kind="stable")
        self.sort_key = (self.rank, image_rank[data.det_image[self.dets]], -data.det_score[self.dets])
        self._pairs()

    def _pairs(self) -> None:
        """Every (kept detection, object) pair in the same image with its IoU (crowd: over the detection's area)."""
        d, data = self.dets, self.data
        g_order = np.argsort(data.gt_image, kind="stable")
        g_counts = np.bincount(data.gt_image, minlength=data.num_images)
        g_starts = np.r_[0, np.cumsum(g_counts)]
        per_det = g_counts[data.det_image[d]]
        pair_det = np.repeat(np.arange(len(d)), per_det)
        offset = np.arange(per_det.sum()) - np.repeat(np.cumsum(per_det) - per_det, per_det)
        pair_gt = g_order[g_starts[data.det_image[d]][pair_det] + offset]
        db, gb = data.det_box[d][pair_det], data.gt_box[pair_gt]
        iou = _paired_iou(db, gb, data.gt_crowd[pair_gt])
        self.pair_det, self.pair_gt, self.pair_iou = pair_det, pair_gt, iou

    def match(self, iou: float, area: str = "all", relabel: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
        """One matching at IoU threshold ``iou`` and size range ``area``. ``relabel`` ``[K, K]`` bool: detections
        of class ``k`` may take objects of class ``j`` as ignored ones where ``relabel[k, j]``.

        Returns ``(matched, ignored)`` per kept detection and ``num_objects`` ``[K]`` (not ignored)."""
        data = self.data
        lo, hi = AREA_RANGES[area]
        gt_ignored = data.gt_crowd | (data.gt_area < lo) | (data.gt_area > hi)
        det_class = data.det_class[self.dets]
        p_cls, g_cls = det_class[self.pair_det], data.gt_class[self.pair_gt]
        allowed = p_cls == g_cls
        if relabel is not None:
            allowed |= relabel[p_cls, g_cls]
        ok = allowed & (self.pair_iou >= min(iou, 1 - 1e-10))
        p_det, p_gt, p_iou = self.pair_det[ok], self.pair_gt[ok], self.pair_iou[ok]
        p_ign = gt_ignored[p_gt] | (p_cls[ok] != g_cls[ok])
        p_key = p_gt * data.num_classes + p_cls[ok]  # an object relabelled into k is used once per class k
        p_reusable = data.gt_crowd[p_gt]
        # Within a step (one rank), preference: not ignored, then highest IoU, then the later object.
        by_rank = np.lexsort((-p_gt, -p_iou, p_ign, p_det, self.rank[p_det]))
        p_det, p_gt, p_iou, p_ign, p_key, p_reusable = (a[by_rank] for a in (p_det, p_gt, p_iou, p_ign, p_key,
                                                                              p_reusable))
        bounds = np.searchsorted(self.rank[p_det], np.arange(self.rank.max(initial=-1) + 2))
        used = np.zeros(len(data.gt_class) * data.num_classes, bool)
        matched = np.zeros(len(self.dets), bool)
        ignored = np.zeros(len(self.dets), bool)
        for r in range(len(bounds) - 1):
            s = slice(bounds[r], bounds[r + 1])
            free = ~used[p_key[s]]
            cand_det = p_det[s][free]
            if not len(cand_det):
                continue
            first = np.r_[True, cand_det[1:] != cand_det[:-1]]  # each detection's best free pair
            chosen = np.flatnonzero(free)[first] + bounds[r]
            matched[p_det[chosen]] = True
            ignored[p_det[chosen]] = p_ign[chosen]
            used[p_key[chosen][~p_reusable[chosen]]] = True
        ignored |= ~matched & ((self.det_area < lo) | (self.det_area > hi))
        objects = ~gt_ignored
        num_objects = np.bincount(data.gt_class[objects], minlength=data.num_classes)
        return matched, ignored, num_objects

    def precision(self, matched: np.ndarray, ignored: np.ndarray, num_objects: np.ndarray) -> np.ndarray:
        """``[R, K]`` interpolated precision at :data:`RECALL_THRESHOLDS` (−1 for a class without objects)."""
        k_all = self.data.num_classes
        out = -np.ones((len(RECALL_THRESHOLDS), k_all))
        det_class = self.data.det_class[self.dets]
        order = np.lexsort((*self.sort_key, det_class))
        order = order[~ignored[order]]
        cls = det_class[order]
        bounds = np.searchsorted(cls, np.arange(k_all + 1))
        for k in range(k_all):
            if num_objects[k] == 0:
                continue
            tp = matched[order[bounds[k]:bounds[k + 1]]]
            out[:, k] = interpolated_precision(tp, int(num_objects[k]))
        return out


def interpolated_precision(tp: np.ndarray, num_objects: int) -> np.ndarray:
    """COCOeval's ``accumulate`` for one class: ``tp`` in rank order → precision ``[R]`` at the recall thresholds."""
    q = np.zeros(len(RECALL_THRESHOLDS))
    if not len(tp):
        return q
    hits = np.cumsum(tp, dtype=np.float64)
    misses = np.cumsum(~tp, dtype=np.float64)
    recall = hits / num_objects
    precision = np.maximum.accumulate((hits / (hits + misses + np.spacing(1)))[::-1])[::-1]
    idx = np.searchsorted(recall, RECALL_THRESHOLDS, side="left")
    valid = idx < len(precision)
    q[valid] = precision[idx[valid]]
    return q


def _paired_iou(d: np.ndarray, g: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """Row-wise :func:`box_iou` of ``[N, 4]`` pairs (crowd rows: intersection over the detection's area)."""
    if not len(d):
        return np.zeros(0)
    w = np.minimum(d[:, 0] + d[:, 2], g[:, 0] + g[:, 2]) - np.maximum(d[:, 0], g[:, 0])
    h = np.minimum(d[:, 1] + d[:, 3], g[:, 1] + g[:, 3]) - np.maximum(d[:, 1], g[:, 1])
    inter = np.where((w > 0) & (h > 0), w * h, 0.0)
    area_d = d[:, 2] * d[:, 3]
    union = np.where(crowd, area_d, area_d + g[:, 2] * g[:, 3] - inter)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


__all__ = ["AREA_RANGES", "RECALL_THRESHOLDS", "Matcher", "box_iou", "interpolated_precision"]
