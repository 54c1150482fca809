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
