"""TIDE's error breakdown equals the authors' ``tidecv`` on data with every error type, and hand-made cases."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from detection.evaluation.analysis.data import analysis_data
from detection.evaluation.analysis.synthetic import synthetic_coco
from detection.evaluation.analysis.tide import MAIN_ERRORS, SPECIAL_ERRORS, interpolated_ap, tide
from detection.evaluation.coco import load_coco

TIDECV_NAMES = {"cls": "Cls", "loc": "Loc", "both": "Both", "dupe": "Dupe", "bkg": "Bkg", "miss": "Miss",
                "false_pos": "FalsePos", "false_neg": "FalseNeg"}


def _write(tmp_path: Path, gt: dict, results: list) -> tuple[Path, Path]:
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dets.json").write_text(json.dumps(results))
    return tmp_path / "gt.json", tmp_path / "dets.json"


@pytest.mark.parametrize("seed", [0, 1])
def test_equals_tidecv_with_every_error_type(tmp_path: Path, seed: int) -> None:
    tidecv = pytest.importorskip("tidecv")  # the test extra; it reads GT polygons from "segmentation"
    gt, results = synthetic_coco(num_images=60, num_classes=6, dets_per_image=25, seed=seed, crowd_fraction=0.1)
    gt_path, det_path = _write(tmp_path, gt, results)
    ours = tide(analysis_data(load_coco(gt_path), results))
    assert all(ours.counts[name] > 0 for name in MAIN_ERRORS), ours.counts

    theirs = tidecv.TIDE()
    theirs.evaluate(tidecv.datasets.COCO(str(gt_path)), tidecv.datasets.COCOResult(str(det_path)),
                    mode=tidecv.TIDE.BOX, name="run")
    errors = theirs.get_all_errors()
    expected = {**errors["main"]["run"], **errors["special"]["run"]}
    assert ours.ap50 == pytest.approx(theirs.runs["run"].ap, abs=0.05)
    for name in (*MAIN_ERRORS, *SPECIAL_ERRORS):
        assert ours.errors[name] == pytest.approx(expected[TIDECV_NAMES[name]], abs=0.05), name
        assert ours.errors[name] > 0, name  # every type present and costing AP
    counts = theirs.runs["run"].count_errors()
    assert {name: ours.counts[name] for name in MAIN_ERRORS} == {TIDECV_NAMES_BY_TYPE(t): c for t, c in counts.items()}


def TIDECV_NAMES_BY_TYPE(error_type: type) -> str:  # noqa: N802  (tidecv's error classes → our names)
    return {v: k for k, v in TIDECV_NAMES.items()}[error_type.short_name]


def _one_image(objects: list[tuple[int, list[float]]], dets: list[tuple[int, list[float], float]]) -> tuple:
    gt = {"images": [{"id": 1, "file_name": "a.png", "width": 100, "height": 100}],
          "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
          "annotations": [{"id": i + 1, "image_id": 1, "category_id": c, "bbox": b, "area": b[2] * b[3],
                           "iscrowd": 0} for i, (c, b) in enumerate(objects)]}
    results = [{"image_id": 1, "category_id": c, "bbox": b, "score": s} for c, b, s in dets]
    return gt, results


def test_each_error_type_by_hand(tmp_path: Path) -> None:
    gt, results = _one_image(
        [(1, [0, 0, 20, 20]), (2, [50, 50, 20, 20]), (1, [0, 60, 20, 20]), (2, [60, 0, 30, 30])],
        [(1, [0, 0, 20, 20], 0.9),     # true positive
         (1, [1, 1, 20, 20], 0.8),     # duplicate of it
         (1, [50, 50, 20, 20], 0.7),   # right box, wrong class (object 2 is class b)
         (1, [0, 70, 20, 20], 0.6),    # IoU 1/3 with object 3: badly placed
         (1, [30, 30, 5, 5], 0.5),     # on nothing: background
         (1, [60, 0, 25, 10], 0.4)])   # IoU 0.28 with a class-b object: wrong class and misplaced
    gt_path, _ = _write(tmp_path, gt, results)
    result = tide(analysis_data(load_coco(gt_path), results))
    assert result.counts == {"cls": 1, "loc": 1, "both": 1, "dupe": 1, "bkg": 1, "miss": 1}  # object 4 missed
    codes = [MAIN_ERRORS[c] if c >= 0 else "tp" for c in result.det_error]
    assert codes == ["tp", "dupe", "cls", "loc", "bkg", "both"]


def test_interpolated_ap_by_hand() -> None:
    # Two objects; ranked TP, FP, TP: precision 1 up to recall 0.5, then 2/3 to recall 1.
    ap = interpolated_ap(np.array([0.9, 0.8, 0.7]), np.array([True, False, True]), num_gt=2)
    assert ap == pytest.approx((51 * 1 + 50 * 2 / 3) / 101 * 100)
    assert interpolated_ap(np.array([]), np.array([], bool), num_gt=3) == 0.0
    assert interpolated_ap(np.array([0.5]), np.array([False]), num_gt=0) == 0.0


def test_perfect_detections_lose_nothing(tmp_path: Path) -> None:
    gt, _ = synthetic_coco(num_images=10, num_classes=3, seed=3, crowd_fraction=0.0)
    results = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
               for a in gt["annotations"]]
    gt_path, _ = _write(tmp_path, gt, results)
    result = tide(analysis_data(load_coco(gt_path), results))
    assert result.ap50 == pytest.approx(100.0)
    assert all(v == pytest.approx(0.0) for v in result.errors.values())
