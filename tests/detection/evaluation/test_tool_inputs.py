"""tools/eval_coco.py and tools/eval_voc.py validate the ground truth as they validate results, and say how many
results have inverted boxes (which can match nothing). The tools' ``main`` runs in-process (conftest ``load_tool``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest


def coco_ground_truth(path: Path, **annotation: Any) -> Path:
    """One 100 × 100 image with one "thing"; ``annotation`` overrides its fields (None removes one)."""
    ann = {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10.0, 10.0, 50.0, 40.0], "area": 2000.0,
           "iscrowd": 0, **annotation}
    data = {"images": [{"id": 1, "width": 100, "height": 100, "file_name": "a.jpg"}],
            "annotations": [{k: v for k, v in ann.items() if v is not None}],
            "categories": [{"id": 1, "name": "thing"}]}
    path.write_text(json.dumps(data))  # json writes NaN as the bare word NaN, which json (and pycocotools) reads
    return path


GOOD = {"image_id": 1, "category_id": 1, "bbox": [10.0, 10.0, 50.0, 40.0], "score": 0.9}


def eval_coco(load_tool: Any, capsys: pytest.CaptureFixture, gt: Path, results: list[dict], tmp_path: Path) -> tuple:
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    code = load_tool("eval_coco").main(["--data-root", str(gt), "--results", str(path)])
    captured = capsys.readouterr()
    return code, captured.err.strip().splitlines()[-1] if captured.err.strip() else "", captured.err, path


def test_nan_ground_truth_box_is_refused(tmp_path: Path, load_tool: Any, capsys: pytest.CaptureFixture) -> None:
    gt = coco_ground_truth(tmp_path / "gt.json", bbox=[10.0, float("nan"), 50.0, 40.0])
    code, last, _, _ = eval_coco(load_tool, capsys, gt, [GOOD], tmp_path)
    assert code == 2  # it used to be scored as if nothing were wrong
    assert last == f"error: {gt}: annotation id 1 (image 1): coordinate y=nan is not finite"


def test_ground_truth_without_area_and_iscrowd_is_accepted(
    tmp_path: Path, load_tool: Any, capsys: pytest.CaptureFixture
) -> None:
    """The training loader accepts it (area = w·h, not crowd); eval_coco used to stop with a KeyError."""
    gt = coco_ground_truth(tmp_path / "gt.json", area=None, iscrowd=None)
    code, _, err, _ = eval_coco(load_tool, capsys, gt, [GOOD], tmp_path)
    assert code == 0
    assert "inverted" not in err


def test_boolean_score_is_refused(tmp_path: Path, load_tool: Any, capsys: pytest.CaptureFixture) -> None:
    gt = coco_ground_truth(tmp_path / "gt.json")
    code, last, _, path = eval_coco(load_tool, capsys, gt, [{**GOOD, "score": True}], tmp_path)
    assert code == 2
    assert last.startswith(f"error: {path}: result #0: bbox and score must be finite numbers")


def test_eval_coco_counts_inverted_result_boxes(tmp_path: Path, load_tool: Any, capsys: pytest.CaptureFixture) -> None:
    gt = coco_ground_truth(tmp_path / "gt.json")
    inverted = {**GOOD, "bbox": [60.0, 50.0, -50.0, -40.0], "score": 0.8}  # xyxy written where xywh belongs
    code, _, err, path = eval_coco(load_tool, capsys, gt, [GOOD, inverted], tmp_path)
    assert code == 0
    assert (f"warning: 1 of 2 results in {path} have inverted boxes (negative width or height in [x, y, w, h]); "
            "they match nothing and count as false positives") in err


def test_eval_voc_counts_inverted_result_boxes(tmp_path: Path, load_tool: Any, capsys: pytest.CaptureFixture) -> None:
    year = tmp_path / "VOC2007"
    (year / "Annotations").mkdir(parents=True)
    (year / "ImageSets" / "Main").mkdir(parents=True)
    (year / "ImageSets" / "Main" / "test.txt").write_text("000001\n")
    (year / "Annotations" / "000001.xml").write_text(
        "<annotation><size><width>100</width><height>80</height></size><object><name>dog</name><difficult>0"
        "</difficult><bndbox><xmin>11</xmin><ymin>11</ymin><xmax>60</xmax><ymax>50</ymax></bndbox></object>"
        "</annotation>")
    results = tmp_path / "results"
    results.mkdir()
    (results / "comp4_det_test_dog.txt").write_text("000001 0.9 11 11 60 50\n000001 0.8 60 50 11 11\n")
    code = load_tool("eval_voc").main(["--data-root", str(year), "--split", "test", "--results", str(results),
                                       "--classes", "dog"])
    assert code == 0
    assert (f"warning: 1 of 2 detections in {results} have inverted boxes (xmax < xmin or ymax < ymin); they match "
            "nothing and count as false positives") in capsys.readouterr().err
