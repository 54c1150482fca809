"""Markdown tables in the paper's layouts and the tools/tables.py and tools/eval_coco.py CLIs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from detection.evaluation.tables import coco_table, comparison_tables, pct, voc_table
from detection.evaluation.voc import VOC_CLASSES


def test_percent_formatting() -> None:
    assert pct(0.7642) == "76.4"
    assert pct(-1.0) == "n/a" and pct(None) == "n/a"


def test_voc_table_uses_the_papers_short_names() -> None:
    result = {"mAP": 0.764, "ap": {c: 0.5 for c in VOC_CLASSES}, "metric": "07"}
    header = voc_table([("R101", result)]).splitlines()[0]
    assert header == (
        "| method | mAP | aero | bike | bird | boat | bottle | bus | car | cat | chair | cow | table | dog "
        "| horse | mbike | person | plant | sheep | sofa | train | tv |"
    )


def test_coco_table_columns() -> None:
    table = coco_table([("R101", {"stats": [0.272, 0.484] + [0.0] * 10})])
    assert table.splitlines()[0] == "| method | mAP@.5 | mAP@[.5, .95] |"
    assert table.splitlines()[2] == "| R101 | 48.4 | 27.2 |"


def test_tables_cli(tmp_path: Path, load_tool, capsys) -> None:
    voc = {"mAP": 0.764, "ap": {c: 0.5 for c in VOC_CLASSES}, "metric": "07"}
    (tmp_path / "voc_r101.json").write_text(json.dumps(voc))
    (tmp_path / "coco_r101.json").write_text(
        json.dumps({"stats": [0.272, 0.484] + [0.0] * 10, "per_class": {}})
    )
    files = [str(tmp_path / "voc_r101.json"), str(tmp_path / "coco_r101.json")]
    assert load_tool("tables").main(files) == 0
    out = capsys.readouterr().out
    assert "| voc_r101 | 76.4 | 50.0 |" in out and "| coco_r101 | 48.4 | 27.2 |" in out
    assert load_tool("tables").main([*files, "--names", "A", "B"]) == 0
    assert "| B | 48.4 | 27.2 |" in capsys.readouterr().out
    (tmp_path / "bad.json").write_text("{\n  oops")
    assert load_tool("tables").main([str(tmp_path / "bad.json")]) == 2
    assert "bad.json:2: invalid JSON" in capsys.readouterr().err
    assert "\n\n" in comparison_tables([("a", voc), ("b", {"stats": [0.0] * 12})])


def test_eval_coco_cli(tmp_path: Path, load_tool, capsys) -> None:
    dataset = {
        "images": [{"id": 5, "width": 100, "height": 100}],
        "annotations": [
            {
                "id": 1,
                "image_id": 5,
                "category_id": 18,
                "bbox": [10, 10, 40, 40],
                "area": 1600.0,
                "iscrowd": 0,
            }
        ],
        "categories": [{"id": 18, "name": "dog"}],
    }
    (tmp_path / "instances_val.json").write_text(json.dumps(dataset))
    dets = [{"image_id": 5, "category_id": 18, "bbox": [10, 10, 40, 40], "score": 0.9}]
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    argv = ["--data-root", str(tmp_path / "instances_val.json"), "--results", str(tmp_path / "dets.json")]
    assert load_tool("eval_coco").main([*argv, "--json", str(tmp_path / "out.json")]) == 0
    out = capsys.readouterr().out
    assert "| ours | 100.0 | 100.0 |" in out and "| dog | 100.0 | 100.0 |" in out
    assert "Accumulating" not in out  # pycocotools is quiet
    saved = json.loads((tmp_path / "out.json").read_text())
    assert saved["per_class"] == {"dog": {"AP": pytest.approx(1.0), "AP50": pytest.approx(1.0)}}
    assert len(saved["stats"]) == 12
    # --data-root as a COCO root: annotations/instances_<split>.json
    (tmp_path / "annotations").mkdir()
    (tmp_path / "instances_val.json").rename(tmp_path / "annotations" / "instances_val.json")
    argv = ["--data-root", str(tmp_path), "--split", "val", "--results", str(tmp_path / "dets.json")]
    assert load_tool("eval_coco").main(argv) == 0
    assert "| ours | 100.0 | 100.0 |" in capsys.readouterr().out
    (tmp_path / "dets.json").write_text(json.dumps([{**dets[0], "category_id": 1}]))
    assert load_tool("eval_coco").main(argv) == 2
    assert "dets.json: result #0: category_id 1" in capsys.readouterr().err


@pytest.mark.parametrize("tool", ["eval_voc", "eval_coco", "eval_imagenet", "tables"])
def test_help(tool: str, load_tool, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        load_tool(tool).main(["--help"])
    assert exit_info.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_the_papers_voc_rows_render_as_published(tmp_path: Path, load_tool, capsys) -> None:
    from detection.evaluation.tables import paper_voc_rows

    table = voc_table(paper_voc_rows("table10"))
    assert "| paper: baseline ResNet-101 07+12 | 76.4 | 79.8 | 80.7 | 76.2 |" in table
    assert table.splitlines()[-1].endswith("| 65.4 | 88.1 | 85.6 | 89.0 | 86.8 |")  # baseline+++ … plant … tv
    assert "| paper: baseline+++ ResNet-101 COCO+07++12 | 83.8 | 92.1 |" in voc_table(paper_voc_rows("table11"))
    ours = {"mAP": 0.5, "ap": {c: 0.5 for c in VOC_CLASSES}, "metric": "07"}
    (tmp_path / "ours.json").write_text(json.dumps(ours))
    assert load_tool("tables").main([str(tmp_path / "ours.json"), "--paper", "table10"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[2].startswith("| ours | 50.0 |") and out[3].startswith("| paper: baseline VGG-16 07+12 | 73.2 |")


def test_tables_10_and_11_from_eval_voc_json_files(tmp_path: Path, write_xml, load_tool, capsys) -> None:
    from detection.evaluation.voc import load_voc_ground_truth, voc_eval, write_voc_results

    voc = tmp_path / "VOCdevkit" / "VOC2007"
    boxes = {"000001": [("aeroplane", (10, 10, 120, 90)), ("dog", (30, 40, 200, 160))],
             "000002": [("tvmonitor", (50, 60, 150, 140))]}  # fmt: skip
    for name, objects in boxes.items():
        write_xml(voc / "Annotations" / f"{name}.xml", objects)
    (voc / "ImageSets" / "Main").mkdir(parents=True)
    (voc / "ImageSets" / "Main" / "test.txt").write_text("000001\n000002\n")
    dets = {c: [] for c in VOC_CLASSES}
    dets["aeroplane"] = [("000001", 0.9, (11.0, 11.0, 118.0, 92.0))]
    dets["tvmonitor"] = [("000001", 0.8, (0.0, 0.0, 40.0, 40.0)), ("000002", 0.7, (52.0, 60.0, 150.0, 138.0))]
    write_voc_results(tmp_path / "res", "test", dets, VOC_CLASSES)
    ours = tmp_path / "voc07.json"
    argv = ["--voc-root", str(voc), "--split", "test", "--results", str(tmp_path / "res"), "--json", str(ours)]
    assert load_tool("eval_voc").main(argv) == 0
    expected = voc_eval(dets, load_voc_ground_truth(voc, "test"), VOC_CLASSES, use_07_metric=True)
    capsys.readouterr()
    for table, paper_rows in (("table10", 3), ("table11", 3)):
        markdown = tmp_path / f"{table}.md"
        argv = [str(ours), "--names", "ours", "--paper", table, "--output", str(markdown)]
        assert load_tool("tables").main(argv) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines == markdown.read_text().splitlines()
        assert lines[0] == "| method | mAP | aero | bike | bird | boat | bottle | bus | car | cat | chair | cow | " \
                           "table | dog | horse | mbike | person | plant | sheep | sofa | train | tv |"
        assert len(lines) == 2 + 1 + paper_rows and all(line.count("|") == 23 for line in lines)
        cells = [c.strip() for c in lines[2].split("|")[1:-1]]
        assert cells[:3] == ["ours", pct(expected.mAP), pct(expected.ap["aeroplane"])]
        assert cells[-1] == pct(expected.ap["tvmonitor"]) and cells[13] == pct(expected.ap["dog"]) == "0.0"  # missed
    assert lines[3].startswith("| paper: baseline VGG-16 07++12 | 70.4 | 84.9 |")


def test_table12_from_eval_imagenet_det_json_files(tmp_path: Path, write_xml, load_tool, capsys) -> None:
    from detection.evaluation.imagenet_det import write_det_results

    root = tmp_path / "ILSVRC"
    (root / "devkit" / "data").mkdir(parents=True)
    (root / "devkit" / "data" / "map_det.txt").write_text("n01 1 cat\nn02 2 dog\n")
    (root / "ImageSets" / "DET").mkdir(parents=True)
    (root / "ImageSets" / "DET" / "val2.txt").write_text("ILSVRC2013_val_00000002 2\nILSVRC2013_val_00000004 4\n")
    write_xml(root / "Annotations" / "DET" / "val" / "ILSVRC2013_val_00000002.xml", [("n01", (1, 1, 100, 100))])
    write_xml(root / "Annotations" / "DET" / "val" / "ILSVRC2013_val_00000004.xml", [("n02", (1, 1, 100, 100))])
    files = []
    for name, dets in (("single", [(2, "n01", 0.9, (1.0, 1.0, 100.0, 100.0))]),
                       ("ensemble", [(2, "n01", 0.9, (1.0, 1.0, 100.0, 100.0)),
                                     (4, "n02", 0.8, (2.0, 1.0, 100.0, 99.0))])):  # fmt: skip
        write_det_results(tmp_path / f"{name}.txt", dets, {"n01": 1, "n02": 2})
        files.append(str(tmp_path / f"{name}.json"))
        argv = ["det", "--ilsvrc-root", str(root), "--split", "val2", "--results", str(tmp_path / f"{name}.txt"),
                "--json", files[-1]]  # fmt: skip
        assert load_tool("eval_imagenet").main(argv) == 0
    capsys.readouterr()
    assert load_tool("tables").main([*files, "--names", "single model", "ensemble", "--paper", "table12"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:7] == [
        "| method | val2 | test |", "| :--- | ---: | ---: |",
        "| single model | 50.0 | n/a |", "| ensemble | 100.0 | n/a |",  # one class of two found; both
        "| paper: GoogLeNet (ILSVRC'14) | - | 43.9 |",
        "| paper: our single model (ILSVRC'15) | 60.5 | 58.8 |", "| paper: our ensemble (ILSVRC'15) | 63.6 | 62.1 |",
    ]  # fmt: skip
    (tmp_path / "voc.json").write_text(json.dumps({"mAP": 0.5, "ap": {"cat": 0.5}, "metric": "07"}))
    assert load_tool("tables").main([str(tmp_path / "voc.json"), "--paper", "table12"]) == 2
    assert "Table 12 takes ImageNet DET results" in capsys.readouterr().err
