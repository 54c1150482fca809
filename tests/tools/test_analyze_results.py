"""tools/analyze_results.py and tools/plot_training.py end to end: a self-contained report from COCO files and from
the VOC layout, the --json keys, training curves from metrics.jsonl, and one error line for each bad input."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from detection.data.shapes import generate_shapes
from detection.evaluation.analysis.synthetic import noisy_detections
from tools import analyze_results, plot_training

TIDE_KEYS = {"cls", "loc", "both", "dupe", "bkg", "miss", "false_pos", "false_neg"}


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A few generated shapes images (COCO layout) and flawed detections of them."""
    root = generate_shapes(tmp_path_factory.mktemp("shapes"), num_train=1, num_val=6, min_size=96, max_size=128)
    instances = json.loads((root / "annotations" / "instances_val.json").read_text())
    results = root / "dets.json"
    results.write_text(json.dumps(noisy_detections(instances, dets_per_image=8, seed=0, found=0.8)))
    return root, results


def write_training_log(run: Path, scale: float = 1.0) -> Path:
    """metrics.jsonl in the trainer's format: a record per log step, one per periodic evaluation."""
    run.mkdir(parents=True, exist_ok=True)
    lines = []
    for it in range(20, 201, 20):
        lines.append({"iteration": it, "lr": 0.01 if it < 150 else 0.001, "time": 0.5, "data_time": 0.01,
                      "memory_mb": 100.0, "eta_s": 200 - it, "loss_rpn_cls": scale / it, "loss_rpn_loc": 0.5 / it,
                      "loss_cls": 2 * scale / it, "loss_box_reg": 1.0 / it, "loss": 4.5 * scale / it})
        if it % 100 == 0:
            lines.append({"iteration": it, "eval": {"mAP50": it / 400 * scale, "mAP": it / 800}})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return run


def test_report_from_coco_files(shapes: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root, results = shapes
    run = write_training_log(tmp_path / "run")
    out, summary = tmp_path / "out", tmp_path / "a.json"
    code = analyze_results.main(["--data-root", str(root / "annotations" / "instances_val.json"), "--results",
                                 str(results), "--output-dir", str(out), "--json", str(summary), "--run-dir", str(run),
                                 "--no-progress"])
    assert code == 0
    assert "report: " in capsys.readouterr().out
    data = json.loads(summary.read_text())
    assert set(data["tide"]) == TIDE_KEYS and 0 < data["ap50"] < 100
    assert all(v >= 0 for k, v in data["tide"].items() if k != "false_pos")
    page = (out / "report.html").read_text()
    # Self-contained: every image a data URI, nothing fetched from anywhere.
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) >= 7 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "http://" not in page and "https://" not in page and "<script" not in page
    for section in ("TIDE", "COCO analyze", "Precision–recall", "Confusion matrix", "Worst images", "Training"):
        assert section in page, section
    assert "cannot read" not in page  # the gallery found the images (<root>/val)
    for name in ("tide.png", "coco_analysis.png", "pr_curves.png", "confusion_matrix.png", "training_curves.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_from_the_voc_layout(tmp_path: Path) -> None:
    voc, results_dir = write_voc_year(tmp_path)
    out = tmp_path / "out"
    assert analyze_results.main(["--dataset", "voc", "--data-root", str(voc), "--split", "test", "--results",
                                 str(results_dir), "--classes", "cat,dog", "--output-dir", str(out),
                                 "--json", str(tmp_path / "a.json")]) == 0
    data = json.loads((tmp_path / "a.json").read_text())
    assert data["objects"] == 3  # the difficult one is a crowd region: not an object
    assert data["tide"]["cls"] > 0 and data["tide_counts"]["cls"] == 1
    assert (out / "report.html").is_file()


def _xml(path: Path, objects: list[tuple]) -> None:
    """A PASCAL annotation of ``[(name, (xmin, ymin, xmax, ymax)[, difficult])]``."""
    parts = ["<annotation><size><width>400</width><height>400</height></size>"]
    for name, box, *difficult in objects:
        coords = "".join(f"<{k}>{v}</{k}>" for k, v in zip(("xmin", "ymin", "xmax", "ymax"), box))
        flag = f"<difficult>{int(difficult[0])}</difficult>" if difficult else ""
        parts.append(f"<object><name>{name}</name>{flag}<bndbox>{coords}</bndbox></object>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(parts) + "</annotation>")


def write_voc_year(tmp_path: Path) -> tuple[Path, Path]:
    """Two images (one difficult object) and result files with one right-box-wrong-class detection."""
    voc = tmp_path / "VOC2007"
    (voc / "ImageSets" / "Main").mkdir(parents=True)
    (voc / "ImageSets" / "Main" / "test.txt").write_text("000001\n000002\n")
    _xml(voc / "Annotations" / "000001.xml", [("cat", (11, 11, 60, 60)), ("dog", (101, 101, 200, 180))])
    _xml(voc / "Annotations" / "000002.xml", [("dog", (21, 31, 90, 100)), ("cat", (200, 200, 250, 260), 1)])
    results = tmp_path / "results"
    results.mkdir()
    (results / "comp4_det_test_cat.txt").write_text("000001 0.9 11 11 60 60\n000002 0.8 21 31 90 100\n")
    (results / "comp4_det_test_dog.txt").write_text("000001 0.7 101 101 200 180\n000002 0.3 300 300 350 350\n")
    return voc, results


def _run(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    code = analyze_results.main(argv)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("problem", ["unknown image", "unknown category"])
def test_results_naming_unknown_ids_give_one_line(shapes: tuple[Path, Path], tmp_path: Path, problem: str,
                                                  capsys: pytest.CaptureFixture) -> None:
    root, results = shapes
    bad = json.loads(results.read_text())
    bad[3]["image_id" if problem == "unknown image" else "category_id"] = 9999
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    code, err = _run(["--data-root", str(root / "annotations" / "instances_val.json"), "--results", str(path),
                      "--output-dir", str(tmp_path / "out")], capsys)
    assert code == 2 and err.count("\n") == 1 and "9999" in err and "result #3" in err and str(path) in err
    assert not (tmp_path / "out" / "report.html").exists()


def test_empty_results_give_a_report_that_says_so(shapes: tuple[Path, Path], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    root, _ = shapes
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    out = tmp_path / "out"
    code, _ = _run(["--data-root", str(root / "annotations" / "instances_val.json"), "--results", str(empty),
                    "--output-dir", str(out), "--json", str(tmp_path / "a.json")], capsys)
    assert code == 0
    assert "no detections" in (out / "report.html").read_text()
    data = json.loads((tmp_path / "a.json").read_text())
    assert data["ap50"] == 0 and data["tide_counts"]["miss"] == data["objects"]


def test_ground_truth_without_objects_gives_one_line(shapes: tuple[Path, Path], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    root, results = shapes
    instances = json.loads((root / "annotations" / "instances_val.json").read_text())
    instances["annotations"] = []
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps(instances))
    code, err = _run(["--data-root", str(gt), "--results", str(results), "--output-dir", str(tmp_path / "o")],
                     capsys)
    assert code == 2 and err.count("\n") == 1 and "no objects" in err and str(results) in err


@pytest.mark.parametrize("content", ["{not json", '{"a": 1}'])
def test_malformed_results_give_one_line(shapes: tuple[Path, Path], tmp_path: Path, content: str,
                                         capsys: pytest.CaptureFixture) -> None:
    root, _ = shapes
    path = tmp_path / "r.json"
    path.write_text(content)
    code, err = _run(["--data-root", str(root / "annotations" / "instances_val.json"), "--results", str(path),
                      "--output-dir", str(tmp_path / "o")], capsys)
    assert code == 2 and err.count("\n") == 1 and str(path) in err


def test_plot_training_overlays_runs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    a, b = write_training_log(tmp_path / "a"), write_training_log(tmp_path / "b", scale=2.0)
    with open(b / "metrics.jsonl", "a") as f:
        f.write('{"iteration": 22')  # a run killed mid-write
    out = tmp_path / "curves.png"
    assert plot_training.main([str(a), str(b), "--output", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert "1 unreadable lines" in capsys.readouterr().err


def test_plot_training_without_a_log_gives_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert plot_training.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "metrics.jsonl" in err


def test_report_from_a_coco_layout_root(shapes: tuple[Path, Path], tmp_path: Path) -> None:
    root, results = shapes
    assert analyze_results.main(["--dataset", "shapes", "--data-root", str(root), "--split", "val", "--results",
                                 str(results), "--output-dir", str(tmp_path / "o"), "--json",
                                 str(tmp_path / "a.json")]) == 0
    data = json.loads((tmp_path / "a.json").read_text())
    assert data["images"] == 6 and data["detections"] == 48


def test_report_from_the_ilsvrc_det_layout(tmp_path: Path) -> None:
    root = tmp_path / "ILSVRC"
    (root / "ImageSets" / "DET").mkdir(parents=True)
    (root / "ImageSets" / "DET" / "val.txt").write_text("img_a 1\nimg_b 2\n")
    (root / "devkit" / "data").mkdir(parents=True)
    (root / "devkit" / "data" / "map_det.txt").write_text("n0001 1 accordion\nn0002 2 airplane\n")
    _xml(root / "Annotations" / "DET" / "val" / "img_a.xml", [("n0001", (11, 11, 60, 60))])
    _xml(root / "Annotations" / "DET" / "val" / "img_b.xml", [("n0002", (21, 21, 120, 100))])
    results = tmp_path / "dets.txt"
    results.write_text("1 1 0.9 11 11 60 60\n2 1 0.8 21 21 120 100\n2 2 0.4 300 300 350 350\n")
    assert analyze_results.main(["--dataset", "imagenet_det", "--data-root", str(root), "--split", "val",
                                 "--results", str(results), "--output-dir", str(tmp_path / "o"), "--json",
                                 str(tmp_path / "a.json")]) == 0
    data = json.loads((tmp_path / "a.json").read_text())
    assert data["objects"] == 2 and data["tide_counts"]["cls"] == 1 and data["tide_counts"]["bkg"] == 1
    assert data["coco_analysis"]["per_class"]["accordion"]["C50"] > 0.99


def test_without_matplotlib_one_line_names_the_extra(shapes: tuple[Path, Path], tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture) -> None:
    root, results = shapes
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib → ImportError
    code, err = _run(["--data-root", str(root / "annotations" / "instances_val.json"), "--results", str(results),
                      "--output-dir", str(tmp_path / "o")], capsys)
    assert code == 2 and err.count("\n") == 1 and "pip install resdet[plot]" in err
    assert plot_training.main([str(write_training_log(tmp_path / "run"))]) == 2
    assert "pip install resdet[plot]" in capsys.readouterr().err
