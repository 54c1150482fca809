"""VOC AP: hand-computed rules, randomized agreement with a literal py-faster-rcnn port, file round trips."""

from __future__ import annotations

import numpy as np
import pytest

from detection.evaluation.voc import (
    EvaluationInputError,
    VOCEvaluator,
    to_devkit_boxes,
    voc_ap,
    voc_eval,
)


def reference_voc_eval(dets, gt, classname, ovthresh=0.5, use_07_metric=False):
    """py-faster-rcnn ``voc_eval`` transcribed literally (stable sort on ties, as the spec requires)."""
    class_recs = {}
    npos = 0
    for img, objs in gt.items():
        R = [o for o in objs if o[0] == classname]
        bbox = np.array([o[1] for o in R]).reshape(-1, 4)
        difficult = np.array([o[2] for o in R]).astype(bool)
        det = [False] * len(R)
        npos = npos + sum(~difficult)
        class_recs[img] = {"bbox": bbox, "difficult": difficult, "det": det}
    image_ids = [d[0] for d in dets]
    confidence = np.array([d[1] for d in dets])
    BB = np.array([d[2] for d in dets]).reshape(-1, 4)
    sorted_ind = np.argsort(-confidence, kind="stable")
    BB = BB[sorted_ind, :]
    image_ids = [image_ids[x] for x in sorted_ind]
    nd = len(image_ids)
    tp = np.zeros(nd)
    fp = np.zeros(nd)
    for d in range(nd):
        R = class_recs[image_ids[d]]
        bb = BB[d, :].astype(float)
        ovmax = -np.inf
        BBGT = R["bbox"].astype(float)
        if BBGT.size > 0:
            ixmin = np.maximum(BBGT[:, 0], bb[0])
            iymin = np.maximum(BBGT[:, 1], bb[1])
            ixmax = np.minimum(BBGT[:, 2], bb[2])
            iymax = np.minimum(BBGT[:, 3], bb[3])
            iw = np.maximum(ixmax - ixmin + 1.0, 0.0)
            ih = np.maximum(iymax - iymin + 1.0, 0.0)
            inters = iw * ih
            uni = (
                (bb[2] - bb[0] + 1.0) * (bb[3] - bb[1] + 1.0)
                + (BBGT[:, 2] - BBGT[:, 0] + 1.0) * (BBGT[:, 3] - BBGT[:, 1] + 1.0)
                - inters
            )
            overlaps = inters / uni
            ovmax = np.max(overlaps)
            jmax = np.argmax(overlaps)
        if ovmax > ovthresh:
            if not R["difficult"][jmax]:
                if not R["det"][jmax]:
                    tp[d] = 1.0
                    R["det"][jmax] = 1
                else:
                    fp[d] = 1.0
        else:
            fp[d] = 1.0
    fp = np.cumsum(fp)
    tp = np.cumsum(tp)
    rec = tp / float(npos)
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    if use_07_metric:
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            if np.sum(rec >= t) == 0:
                p = 0
            else:
                p = np.max(prec[rec >= t])
            ap = ap + p / 11.0
    else:
        mrec = np.concatenate(([0.0], rec, [1.0]))
        mpre = np.concatenate(([0.0], prec, [0.0]))
        for i in range(mpre.size - 1, 0, -1):
            mpre[i - 1] = np.maximum(mpre[i - 1], mpre[i])
        i = np.where(mrec[1:] != mrec[:-1])[0]
        ap = np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1])
    return rec, prec, ap


def random_problem(rng: np.random.Generator, classes: list[str], n_images: int = 12):
    """Random GT (with difficult objects, empty images) and jittered/random detections with integer-ish scores
    so that ties occur."""
    gt, dets = {}, {c: [] for c in classes}
    for i in range(n_images):
        objs = []
        for _ in range(rng.integers(0, 5)):
            x1, y1 = rng.integers(1, 60, size=2)
            w, h = rng.integers(1, 40, size=2)
            objs.append(
                (classes[rng.integers(len(classes))], (x1, y1, x1 + w, y1 + h), bool(rng.random() < 0.2))
            )
        gt[f"img{i}"] = [(c, tuple(float(v) for v in b), d) for c, b, d in objs]
        for c, b, _ in objs:
            for _ in range(rng.integers(0, 3)):
                box = tuple(float(v) for v in np.array(b) + rng.integers(-4, 5, size=4))
                dets[c].append((f"img{i}", float(rng.integers(0, 10)) / 10, box))
        for _ in range(rng.integers(0, 3)):
            x1, y1 = rng.uniform(1, 60, size=2)
            box = (x1, y1, x1 + rng.uniform(1, 40), y1 + rng.uniform(1, 40))
            dets[classes[rng.integers(len(classes))]].append((f"img{i}", float(rng.random()), box))
    return dets, gt


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the reference divides by zero on degenerate boxes
@pytest.mark.parametrize("use_07", [True, False])
def test_random_agreement_with_reference(use_07: bool) -> None:
    rng = np.random.default_rng(0)
    classes = ["circle", "square", "triangle"]
    compared = 0
    for _ in range(150):
        dets, gt = random_problem(rng, classes)
        result = voc_eval(dets, gt, classes, use_07_metric=use_07)
        for c in classes:
            npos = sum(1 for objs in gt.values() for o in objs if o[0] == c and not o[2])
            if npos == 0:
                assert result.ap[c] == 0.0
                continue
            rec, prec, ap = reference_voc_eval(dets[c], gt, c, use_07_metric=use_07)
            assert result.ap[c] == pytest.approx(ap, abs=1e-6)
            np.testing.assert_allclose(result.recall[c], rec, atol=1e-12)
            np.testing.assert_allclose(result.precision[c], prec, atol=1e-12)
            compared += 1
    assert compared > 300
    assert result.mAP == pytest.approx(np.mean([result.ap[c] for c in classes]))


GT_ONE = {"a": [("cat", (1.0, 1.0, 10.0, 10.0), False)]}


def test_perfect_detection_and_no_detections() -> None:
    r = voc_eval(
        {"cat": [("a", 0.9, (1, 1, 10, 10))]}, {**GT_ONE, "b": []}, ["cat", "dog"], use_07_metric=False
    )
    assert r.ap == {"cat": 1.0, "dog": 0.0}
    assert r.mAP == 0.5
    assert r.to_dict() == {"mAP": 0.5, "ap": {"cat": 1.0, "dog": 0.0}, "metric": "area"}


def test_difficult_hit_is_neither_tp_nor_fp() -> None:
    gt = {"a": [("cat", (1, 1, 10, 10), False), ("cat", (30, 30, 40, 40), True)]}
    dets = {"cat": [("a", 0.9, (30, 30, 40, 40)), ("a", 0.5, (1, 1, 10, 10))]}
    r = voc_eval(dets, gt, ["cat"], use_07_metric=False)
    # The difficult hit is skipped: one TP, no FP, npos = 1.
    assert r.npos["cat"] == 1
    assert r.ap["cat"] == 1.0
    np.testing.assert_array_equal(r.recall["cat"], [0.0, 1.0])


def test_duplicate_is_fp_without_fallback_to_second_best() -> None:
    # Two GTs; both detections best-match GT 0 (the second overlaps GT 1 too, but no fall-back).
    gt = {"a": [("cat", (1, 1, 10, 10), False), ("cat", (3, 1, 12, 10), False)]}
    dets = {"cat": [("a", 0.9, (1, 1, 10, 10)), ("a", 0.8, (1, 1, 10, 10))]}
    r = voc_eval(dets, gt, ["cat"], use_07_metric=False)
    np.testing.assert_array_equal(r.recall["cat"], [0.5, 0.5])
    np.testing.assert_array_equal(r.precision["cat"], [1.0, 0.5])
    assert r.ap["cat"] == 0.5


def test_tied_scores_keep_input_order() -> None:
    gt = {"a": [("cat", (1, 1, 10, 10), False)]}
    fp_first = {"cat": [("a", 0.5, (50, 50, 60, 60)), ("a", 0.5, (1, 1, 10, 10))]}
    tp_first = {"cat": [("a", 0.5, (1, 1, 10, 10)), ("a", 0.5, (50, 50, 60, 60))]}
    assert voc_eval(fp_first, gt, ["cat"], use_07_metric=False).ap["cat"] == 0.5
    assert voc_eval(tp_first, gt, ["cat"], use_07_metric=False).ap["cat"] == 1.0


def test_iou_exactly_half_is_not_a_match_and_plus_one_counts() -> None:
    # GT 1..10 (10 px wide with +1), det 1..20 x 1..10: inter 100, union 200 → IoU 0.5 exactly → FP.
    gt = {"a": [("cat", (1, 1, 10, 10), False)]}
    assert voc_eval({"cat": [("a", 1.0, (1, 1, 20, 10))]}, gt, ["cat"], False).ap["cat"] == 0.0
    # 1..19: inter 100, union 190 → 0.526 → TP. Without +1 it would be 81/162 = 0.5 → FP.
    assert voc_eval({"cat": [("a", 1.0, (1, 1, 19, 10))]}, gt, ["cat"], False).ap["cat"] == 1.0


def test_11_point_metric_by_hand() -> None:
    # rec [0.5, 0.5, 1.0], prec [1, 0.5, 2/3]: thresholds 0..0.5 → 1 (6 points), 0.6..1.0 → 2/3 (5 points).
    gt = {"a": [("cat", (1, 1, 10, 10), False), ("cat", (30, 30, 40, 40), False)]}
    dets = {"cat": [("a", 0.9, (1, 1, 10, 10)), ("a", 0.8, (60, 60, 70, 70)), ("a", 0.7, (30, 30, 40, 40))]}
    r = voc_eval(dets, gt, ["cat"], use_07_metric=True)
    assert r.ap["cat"] == pytest.approx((6 * 1.0 + 5 * 2 / 3) / 11)
    area = voc_eval(dets, gt, ["cat"], use_07_metric=False)
    assert area.ap["cat"] == pytest.approx(0.5 * 1.0 + 0.5 * 2 / 3)


def test_11_point_thresholds_are_the_reference_arange() -> None:
    # rec = 0.3 is below np.arange's 0.30000000000000004, exactly as in the reference.
    rec, prec = np.array([3 / 10]), np.array([1.0])
    assert voc_ap(rec, prec, use_07_metric=True) == pytest.approx(3 / 11)


def test_images_without_objects_and_unknown_image() -> None:
    gt = {"a": [("cat", (1, 1, 10, 10), False)], "empty": []}
    dets = {"cat": [("empty", 0.95, (1, 1, 10, 10)), ("a", 0.9, (1, 1, 10, 10))]}
    assert voc_eval(dets, gt, ["cat"], False).ap["cat"] == 0.5
    with pytest.raises(EvaluationInputError, match="'nowhere'"):
        voc_eval({"cat": [("nowhere", 0.9, (1, 1, 10, 10))]}, gt, ["cat"], False)


def test_tensor_conversion_and_accumulator() -> None:
    torch = pytest.importorskip("torch")
    internal = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    np.testing.assert_array_equal(to_devkit_boxes(internal), [[1.0, 1.0, 10.0, 10.0]])
    ev = VOCEvaluator(["circle", "square"])
    target = {
        "boxes": torch.tensor([[0.0, 0.0, 20.0, 20.0], [40.0, 40.0, 60.0, 60.0]]),
        "labels": torch.tensor([1, 2]),
    }
    output = {
        "boxes": torch.tensor([[0.0, 0.0, 20.0, 20.0], [0.0, 0.0, 4.0, 4.0]]),
        "scores": torch.tensor([0.9, 0.8]),
        "labels": torch.tensor([1, 2]),
    }
    ev.add(7, output, target, scale=2.0)
    assert ev.ground_truth[7][0] == ("circle", (1.0, 1.0, 10.0, 10.0), False)
    r = ev.evaluate(use_07_metric=False)
    assert r.ap == {"circle": 1.0, "square": 0.0}
