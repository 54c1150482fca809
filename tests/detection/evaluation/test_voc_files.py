"""VOC on disk: devkit layout round trip, the eval_voc CLI (table, JSON, plot), errors naming file/line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from detection.evaluation.tables import voc_table
from detection.evaluation.voc import (
    VOC_CLASSES,
    EvaluationInputError,
    load_voc_ground_truth,
    read_voc_results,
    voc_eval,
    write_voc_results,
)


@pytest.fixture
def voc_root(tmp_path: Path, write_xml) -> Path:
    """A tiny VOC2007: 6 images, some difficult objects, one image without objects."""
    root = tmp_path / "VOCdevkit" / "VOC2007"
    rng = np.random.default_rng(0)
    ids = [f"{i:06d}" for i in range(1, 7)]
    for i, image_id in enumerate(ids):
        objects = []
        for _ in range(0 if i == 2 else 3):
            x, y = (int(v) for v in rng.integers(1, 200, size=2))
            cls = VOC_CLASSES[int(rng.integers(0, 4))]
            objects.append((cls, (x, y, x + int(rng.integers(10, 100)), y + 50), bool(rng.random() < 0.2)))
        write_xml(root / "Annotations" / f"{image_id}.xml", objects)
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Main" / "test.txt").write_text("\n".join(ids) + "\n")
    return root


def detections_for(gt: dict, seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    dets: dict = {c: [] for c in VOC_CLASSES}
    for image_id, objects in gt.items():
        for name, box, _ in objects:
            jitter = rng.integers(-8, 9, size=4)
            dets[name].append((image_id, float(rng.random()), tuple(float(v) for v in np.add(box, jitter))))
        dets["aeroplane"].append((image_id, float(rng.random()), (5.0, 5.0, 60.0, 60.0)))
    return dets


def test_round_trip_through_result_files(voc_root: Path, tmp_path: Path) -> None:
    gt = load_voc_ground_truth(voc_root, "test")
    assert gt["000003"] == []
    dets = detections_for(gt)
    write_voc_results(tmp_path / "results", "test", dets, VOC_CLASSES)
    assert (tmp_path / "results" / "comp4_det_test_cow.txt").read_text() == ""
    back = read_voc_results(tmp_path / "results", "test", VOC_CLASSES)
    assert back == {c: dets[c] for c in VOC_CLASSES}
    for metric in (True, False):
        a = voc_eval(dets, gt, VOC_CLASSES, use_07_metric=metric)
        b = voc_eval(back, gt, VOC_CLASSES, use_07_metric=metric)
        assert a.ap == b.ap
        assert a.ap["cow"] == 0.0


def test_eval_voc_cli(voc_root: Path, tmp_path: Path, load_tool, capsys) -> None:
    gt = load_voc_ground_truth(voc_root, "test")
    dets = detections_for(gt)
    write_voc_results(tmp_path / "res", "test", dets, VOC_CLASSES)
    out_json, plot = tmp_path / "voc.json", tmp_path / "pr.png"
    argv = ["--data-root", str(voc_root), "--split", "test", "--results", str(tmp_path / "res")]
    assert load_tool("eval_voc").main([*argv, "--json", str(out_json), "--plot", str(plot)]) == 0
    printed = capsys.readouterr().out
    expected = voc_eval(dets, gt, VOC_CLASSES, use_07_metric=True)
    saved = json.loads(out_json.read_text())
    assert saved["metric"] == "07"  # default for a VOC2007 folder
    assert saved["mAP"] == expected.mAP and saved["ap"] == expected.ap
    assert list(saved["ap"]) == list(VOC_CLASSES)
    assert (
        "| method | mAP | aero | bike | bird | boat | bottle | bus | car | cat | chair | cow | table |"
        in printed
    )
    assert "| mbike | person | plant | sheep | sofa | train | tv |" in printed
    assert plot.read_bytes()[:4] == b"\x89PNG"
    assert load_tool("eval_voc").main([*argv, "--metric", "area", "--json", str(out_json)]) == 0
    area = json.loads(out_json.read_text())
    assert area["metric"] == "area"
    assert area["mAP"] == voc_eval(dets, gt, VOC_CLASSES, use_07_metric=False).mAP


def test_malformed_result_line_names_file_and_line(voc_root: Path, tmp_path: Path, load_tool, capsys) -> None:
    write_voc_results(tmp_path / "res", "test", {}, VOC_CLASSES)
    bad = tmp_path / "res" / "comp4_det_test_cat.txt"
    bad.write_text("000001 0.9 1 1 10 10\n\n000002 0.8 1 1 10\n")
    with pytest.raises(EvaluationInputError, match=r"comp4_det_test_cat\.txt:3: .*6 fields"):
        read_voc_results(tmp_path / "res", "test", VOC_CLASSES)
    bad.write_text("000001 high 1 1 10 10\n")
    with pytest.raises(EvaluationInputError, match=r"comp4_det_test_cat\.txt:1: "):
        read_voc_results(tmp_path / "res", "test", VOC_CLASSES)
    bad.unlink()
    with pytest.raises(EvaluationInputError, match=r"comp4_det_test_cat\.txt: result file for class 'cat'"):
        read_voc_results(tmp_path / "res", "test", VOC_CLASSES)
    assert read_voc_results(tmp_path / "res", "test", VOC_CLASSES, allow_missing=True)["cat"] == []
    argv = ["--data-root", str(voc_root), "--results", str(tmp_path / "res")]
    assert load_tool("eval_voc").main(argv) == 2
    assert "comp4_det_test_cat.txt" in capsys.readouterr().err


def test_detection_on_image_outside_split(voc_root: Path, tmp_path: Path) -> None:
    write_voc_results(tmp_path / "res", "test", {"dog": [("999999", 0.5, (1, 1, 5, 5))]}, VOC_CLASSES)
    dets = read_voc_results(tmp_path / "res", "test", VOC_CLASSES)
    with pytest.raises(EvaluationInputError, match="'999999'"):
        voc_eval(dets, load_voc_ground_truth(voc_root, "test"), VOC_CLASSES, True)


def test_table_for_arbitrary_classes() -> None:
    table = voc_table([("run", {"mAP": 0.5, "ap": {"circle": 0.25, "square": 0.75}})])
    assert table.splitlines() == [
        "| method | mAP | circle | square |",
        "| :--- | ---: | ---: | ---: |",
        "| run | 50.0 | 25.0 | 75.0 |",
    ]
