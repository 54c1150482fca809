"""COCO: identical to calling COCOeval directly; crowd, empty results, id validation, round trip."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detection.evaluation.coco import coco_eval, coco_eval_files, xyxy_to_coco_results
from detection.evaluation.voc import EvaluationInputError

CATEGORIES = [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}, {"id": 7, "name": "train"}]


def make_dataset(rng: np.random.Generator, n_images: int = 25) -> tuple[dict, list[dict]]:
    """Annotations (gapped category ids, all area ranges, some crowd) and jittered + spurious detections."""
    images, annotations, results = [], [], []
    for i in range(n_images):
        image_id = 100 + 2 * i
        images.append({"id": image_id, "width": 640, "height": 480, "file_name": f"{image_id}.jpg"})
        for _ in range(rng.integers(0, 6)):
            w, h = rng.choice([12.0, 50.0, 150.0]) * rng.uniform(0.6, 1.4, size=2)
            x, y = rng.uniform(0, 640 - w), rng.uniform(0, 480 - h)
            cat = int(rng.choice([1, 3, 7]))
            crowd = int(rng.random() < 0.1)
            box = [float(x), float(y), float(w), float(h)]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": cat,
                    "bbox": box,
                    "area": float(w * h),
                    "iscrowd": crowd,
                }
            )
            if rng.random() < 0.8:
                jitter = rng.normal(0, 0.08, size=4) * [w, h, w, h]
                results.append(
                    {
                        "image_id": image_id,
                        "category_id": cat,
                        "score": float(rng.random()),
                        "bbox": [float(v) for v in np.array(box) + jitter],
                    }
                )
        for _ in range(rng.integers(0, 3)):
            box = [float(rng.uniform(0, 500)), float(rng.uniform(0, 400)), 60.0, 40.0]
            results.append(
                {
                    "image_id": image_id,
                    "category_id": int(rng.choice([1, 3, 7])),
                    "score": float(rng.random()),
                    "bbox": box,
                }
            )
    return {"images": images, "annotations": annotations, "categories": CATEGORIES}, results


def direct_cocoeval(ann_path: Path, res_path: Path) -> np.ndarray:
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann_path))
        dt = gt.loadRes(str(res_path))
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


def write(path: Path, obj: object) -> Path:
    path.write_text(json.dumps(obj))
    return path


@pytest.mark.parametrize("seed", [0, 1])
def test_identical_to_direct_cocoeval(tmp_path: Path, seed: int) -> None:
    dataset, results = make_dataset(np.random.default_rng(seed))
    ann = write(tmp_path / "instances_val.json", dataset)
    res = write(tmp_path / "dets.json", results)
    expected = direct_cocoeval(ann, res)
    ours = coco_eval_files(ann, res)
    assert ours.stats == [float(s) for s in expected]  # exactly
    in_memory = coco_eval(ann, results)
    assert in_memory.stats == ours.stats
    assert set(ours.per_class) == {"person", "car", "train"}
    valid = [v["AP"] for v in ours.per_class.values() if v["AP"] >= 0]
    assert np.mean(valid) == pytest.approx(ours.stats[0], abs=1e-12)
    assert ours.to_dict()["stats"] == ours.stats


def test_results_are_not_modified(tmp_path: Path) -> None:
    dataset, results = make_dataset(np.random.default_rng(3), n_images=4)
    before = json.dumps(results)
    coco_eval(write(tmp_path / "a.json", dataset), results)
    assert json.dumps(results) == before


def _single_image(annotations: list[dict]) -> dict:
    return {
        "images": [{"id": 1, "width": 200, "height": 200}],
        "annotations": [{"id": i + 1, "image_id": 1, **a} for i, a in enumerate(annotations)],
        "categories": CATEGORIES,
    }


def test_crowd_match_is_ignored(tmp_path: Path) -> None:
    person = {"category_id": 1, "bbox": [10.0, 10.0, 50.0, 50.0], "area": 2500.0, "iscrowd": 0}
    crowd = {"category_id": 1, "bbox": [100.0, 100.0, 80.0, 80.0], "area": 6400.0, "iscrowd": 1}
    # The top-scoring detection lies inside the crowd region (IoU with a crowd uses the detection's area).
    dets = [
        {"image_id": 1, "category_id": 1, "bbox": [110.0, 110.0, 40.0, 40.0], "score": 0.9},
        {"image_id": 1, "category_id": 1, "bbox": [10.0, 10.0, 50.0, 50.0], "score": 0.8},
    ]
    with_crowd = coco_eval(write(tmp_path / "c.json", _single_image([person, crowd])), dets)
    assert with_crowd.per_class["person"]["AP50"] == pytest.approx(1.0)
    no_crowd = coco_eval(write(tmp_path / "n.json", _single_image([person, {**crowd, "iscrowd": 0}])), dets)
    assert no_crowd.per_class["person"]["AP50"] < 0.9
    assert with_crowd.per_class["car"] == {"AP": -1.0, "AP50": -1.0}  # no ground truth


def test_empty_results_give_zero_not_a_crash(tmp_path: Path) -> None:
    person = {"category_id": 1, "bbox": [10.0, 10.0, 50.0, 50.0], "area": 2500.0, "iscrowd": 0}
    result = coco_eval(write(tmp_path / "a.json", _single_image([person])), [])
    assert result.stats[0] == 0.0 and result.stats[1] == 0.0
    assert result.stats[3] == -1.0  # no small ground truth
    assert result.per_class["person"] == {"AP": 0.0, "AP50": 0.0}


def test_unknown_ids_and_malformed_results(tmp_path: Path) -> None:
    ann = write(tmp_path / "a.json", _single_image([]))
    good = {"image_id": 1, "category_id": 3, "bbox": [0, 0, 5, 5], "score": 0.5}
    res = write(tmp_path / "dets.json", [good, {**good, "category_id": 2}])
    with pytest.raises(EvaluationInputError, match=r"dets\.json: result #1: category_id 2 is not one"):
        coco_eval_files(ann, res)
    with pytest.raises(EvaluationInputError, match="image_id 5 is not in the annotations"):
        coco_eval(ann, [{**good, "image_id": 5}])
    with pytest.raises(EvaluationInputError, match=r"result #0: missing key\(s\) \['score'\]"):
        coco_eval(ann, [{k: v for k, v in good.items() if k != "score"}])
    with pytest.raises(EvaluationInputError, match="bbox must be"):
        coco_eval(ann, [{**good, "bbox": [1, 2, 3]}])
    bad = tmp_path / "bad.json"
    bad.write_text('[\n{"image_id": 1,\n')
    with pytest.raises(EvaluationInputError, match=r"bad\.json:3: invalid JSON"):
        coco_eval_files(ann, bad)


def test_round_trip_from_internal_boxes(tmp_path: Path) -> None:
    dataset, _ = make_dataset(np.random.default_rng(5), n_images=6)
    ann = write(tmp_path / "a.json", dataset)
    results = []
    for a in dataset["annotations"]:
        x, y, w, h = a["bbox"]
        xyxy = np.array([[x, y, x + w, y + h]])
        results += xyxy_to_coco_results(a["image_id"], xyxy, np.array([0.7]), [a["category_id"]])
    res = write(tmp_path / "dets.json", results)
    assert coco_eval_files(ann, res).stats == coco_eval(ann, results).stats
    assert coco_eval(ann, results).stats[1] == pytest.approx(1.0)
