"""The vectorised COCO matching gives pycocotools ``COCOeval``'s precision arrays, plain and with other classes'
objects relabelled and ignored (the COCO ``analyze`` curves)."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detection.evaluation.analysis.data import analysis_data
from detection.evaluation.analysis.matching import AREA_RANGES, Matcher, interpolated_precision
from detection.evaluation.analysis.synthetic import synthetic_coco
from detection.evaluation.coco import load_coco


class IgnoringCOCOeval(COCOeval):
    """COCOeval honouring ``"analysis_ignore"`` on objects, as the COCO MATLAB API's ``ignore`` (the reference for
    the ``Sim`` / ``Oth`` curves)."""

    def _prepare(self) -> None:
        super()._prepare()
        for objects in self._gts.values():
            for g in objects:
                if g.get("analysis_ignore"):
                    g["ignore"] = 1


def _coco(dataset: dict) -> COCO:
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _reference(gt: COCO, dt: COCO, iou: float, cat_ids: list[int], ev_type: type = COCOeval) -> np.ndarray:
    ev = ev_type(gt, dt, iouType="bbox")
    ev.params.iouThrs = np.array([iou])
    ev.params.maxDets = [100]
    ev.params.catIds = cat_ids
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
        ev.accumulate()
    return ev.eval["precision"][0, :, :, :, 0]  # [R, K, A]


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[COCO, COCO, list]:
    gt, results = synthetic_coco(num_images=40, num_classes=5, dets_per_image=20, seed=4, crowd_fraction=0.1)
    for r in results[::7]:  # ties in score across images and within one
        r["score"] = 0.5
    path = tmp_path_factory.mktemp("gt") / "gt.json"
    path.write_text(json.dumps(gt))
    coco_gt = load_coco(path)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes([dict(r) for r in results])
    return coco_gt, coco_dt, results


@pytest.mark.parametrize("iou", [0.1, 0.5, 0.75])
def test_equals_cocoeval(generated: tuple, iou: float) -> None:
    coco_gt, coco_dt, results = generated
    cat_ids = sorted(coco_gt.getCatIds())
    expected = _reference(coco_gt, coco_dt, iou, cat_ids)
    matcher = Matcher(analysis_data(coco_gt, results))
    for a, area in enumerate(AREA_RANGES):
        ours = matcher.precision(*matcher.match(iou, area))
        np.testing.assert_allclose(ours, expected[:, :, a], atol=1e-12, err_msg=area)


@pytest.mark.parametrize("same_supercategory", [True, False])
def test_relabelled_classes_equal_cocoeval_with_ignored_objects(generated: tuple, same_supercategory: bool) -> None:
    coco_gt, coco_dt, results = generated
    cat_ids = sorted(coco_gt.getCatIds())
    supers = [coco_gt.cats[c]["supercategory"] for c in cat_ids]
    relabel = np.array([[j != k and (not same_supercategory or supers[j] == supers[k]) for j in range(len(cat_ids))]
                        for k in range(len(cat_ids))])
    matcher = Matcher(analysis_data(coco_gt, results))
    ours = {area: matcher.precision(*matcher.match(0.1, area, relabel)) for area in AREA_RANGES}
    for k, cat_id in enumerate(cat_ids):
        objects = [dict(a) if a["category_id"] == cat_id else {**a, "category_id": cat_id, "analysis_ignore": 1}
                   for a in coco_gt.dataset["annotations"]
                   if a["category_id"] == cat_id or relabel[k, cat_ids.index(a["category_id"])]]
        base = {"images": coco_gt.dataset["images"], "categories": coco_gt.loadCats([cat_id])}
        gt = _coco({**base, "annotations": objects})
        dt = _coco({**base, "annotations": [dict(d) for d in coco_dt.dataset["annotations"]
                                            if d["category_id"] == cat_id]})
        expected = _reference(gt, dt, 0.1, [cat_id], IgnoringCOCOeval)
        for a, area in enumerate(AREA_RANGES):
            np.testing.assert_allclose(ours[area][:, k], expected[:, 0, a], atol=1e-12, err_msg=f"{cat_id} {area}")
    assert any((ours["all"] > matcher.precision(*matcher.match(0.1))).ravel())  # relabelling forgives something


def test_interpolated_precision_by_hand() -> None:
    q = interpolated_precision(np.array([True, False, True]), num_objects=2)
    assert np.allclose(q[:51], 1.0) and np.allclose(q[51:], 2 / 3)
    assert interpolated_precision(np.array([], bool), 3).sum() == 0
