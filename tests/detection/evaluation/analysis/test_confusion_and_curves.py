"""The confusion matrix on a hand-made image, and the COCO analyze curves' nesting (each forgives more)."""

from __future__ import annotations

import contextlib
import io

import numpy as np
from pycocotools.coco import COCO

from detection.evaluation.analysis.coco_analysis import CURVES, coco_analysis
from detection.evaluation.analysis.confusion import confusion_matrix
from detection.evaluation.analysis.data import analysis_data
from detection.evaluation.analysis.synthetic import synthetic_coco


def _coco(instances: dict) -> COCO:
    coco = COCO()
    coco.dataset = instances
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def test_confusion_matrix_by_hand() -> None:
    instances = {"images": [{"id": 7}], "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
                 "annotations": [{"id": i + 1, "image_id": 7, "category_id": c, "bbox": b, "area": 400.0,
                                  "iscrowd": crowd} for i, (c, b, crowd) in enumerate([
                                      (1, [0, 0, 20, 20], 0), (2, [50, 50, 20, 20], 0), (1, [0, 60, 20, 20], 0),
                                      (2, [100, 100, 40, 40], 1)])]}
    results = [{"image_id": 7, "category_id": c, "bbox": b, "score": s} for c, b, s in [
        (1, [0, 0, 20, 20], 0.9),       # a on a: right
        (1, [50, 50, 20, 20], 0.8),     # a on b: confused
        (2, [200, 200, 10, 10], 0.7),   # b on nothing
        (2, [1, 1, 20, 20], 0.6),       # b on the a already taken: on nothing
        (1, [0, 60, 20, 20], 0.3),      # below the score threshold: the object is missed
        (2, [110, 110, 10, 10], 0.9)]]  # inside the crowd region: not counted
    result = confusion_matrix(analysis_data(_coco(instances), results), score_thresh=0.5)
    #                   a  b  bg     (columns: predicted)
    expected = np.array([[1, 0, 1],   # a
                         [1, 0, 0],   # b
                         [0, 2, 0]])  # background
    np.testing.assert_array_equal(result.counts, expected)
    np.testing.assert_allclose(result.normalized()[0], [0.5, 0, 0.5])
    assert result.missed.tolist() == [2] and result.false_pos.tolist() == [3]


def test_analyze_curves_nest_and_end_in_the_square() -> None:
    instances, results = synthetic_coco(num_images=30, num_classes=4, dets_per_image=15, seed=5)
    analysis = coco_analysis(analysis_data(_coco(instances), results))
    p = analysis.precision[:, :, analysis.has_gt[:, 0], 0]
    assert np.all(np.diff(p, axis=0) >= -1e-12)  # C75 ≤ C50 ≤ Loc ≤ Sim ≤ Oth ≤ BG ≤ FN
    assert np.all(p[CURVES.index("FN")] == 1.0)
    ap = analysis.ap()[:, analysis.has_gt[:, 0], 0].mean(axis=1)
    assert ap[CURVES.index("C50")] < ap[CURVES.index("Oth")] < ap[CURVES.index("BG")] < 1.0
    assert set(analysis.to_dict()["overall"]) == {"all", "small", "medium", "large"}
