"""Round three of the tools on hostile input (issue 30), run in process: a folder where a file is expected, names
too long, UTF-16 and non-UTF-8 files, result JSON with lists as ids, huge integers, 4,300-digit numbers and
10,000-deep nesting, tables.py on JSON of the wrong shape, a classifier checkpoint given to export and Predictor,
export sizes of 0 or below, export without onnx, a pyramid export would drop. Each is one ``error:`` line naming the
file and the problem, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from backbones import build_resnet
from backbones.checkpoint import CheckpointError, save_checkpoint
from detection import Predictor, build_detector, load_config
from detection.data.shapes import generate_shapes
from tools import eval_coco, export, tables

ROOT = Path(__file__).resolve().parents[2]
TINY_CONFIG = ROOT / "tests" / "tiny_det.yaml"
LONG_NAME = "x" * 300


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: "), err
    return lines[-1]


@pytest.fixture(scope="module")
def detector(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = load_config(TINY_CONFIG)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("det") / "det.pth"
    return save_checkpoint(path, {"model": build_detector(cfg).state_dict(), "config": cfg.to_dict(),
                                  "classes": list("abcde")})


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cls") / "cls.pth"
    return save_checkpoint(path, {"model": build_resnet(18, base_width=8).state_dict(),
                                  "config": {"arch": "resnet18"}})


def test_a_classifier_checkpoint_is_not_a_detector(classifier: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(CheckpointError, match=r"holds a classifier \(resnet18\), not a detector"):
        Predictor(classifier, device="cpu")
    assert export.main(["--weights", str(classifier), "--no-check"]) == 2
    assert one_error_line(capsys) == (f"error: cannot load checkpoint {classifier}: it holds a classifier (resnet18), "
                                      f"not a detector: use it as model.backbone.weights={classifier} when training "
                                      "a detector")


@pytest.mark.parametrize(("extra", "expected"), [
    (["--size", "0", "0"], "error: --size H W must be positive pixel counts, got 0 0"),
    (["--size", "-5", "64"], "error: --size H W must be positive pixel counts, got -5 64"),
    (["--format", "torch-export", "test.pyramid_min_sizes=[64,96]"],
     "error: the exported file runs the single-scale model only; the config sets test.pyramid_min_sizes=[64, 96], "
     "which it would silently drop: override it (test.pyramid_min_sizes=[] test.flip=false) to export anyway"),
])  # fmt: skip
def test_export_refuses_what_it_cannot_do(detector: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          extra: list[str], expected: str) -> None:
    out = tmp_path / "d.onnx"
    assert export.main(["--weights", str(detector), "--no-check", "--output", str(out), *extra]) == 2
    assert one_error_line(capsys) == expected
    assert not out.exists()


def test_export_output_paths_and_a_missing_onnx(detector: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    assert export.main(["--weights", str(detector), "--no-check", "--output", str(tmp_path)]) == 2
    assert one_error_line(capsys) == f"error: --output {tmp_path} is a folder; give a file name"
    long = tmp_path / f"{LONG_NAME}.onnx"
    assert export.main(["--weights", str(detector), "--no-check", "--output", str(long)]) == 2
    assert one_error_line(capsys) == f"error: --output cannot write {long}: File name too long"
    real = export.importlib.util.find_spec
    monkeypatch.setattr(export.importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else real(name))
    assert export.main(["--weights", str(detector), "--no-check", "--output", str(tmp_path / "d.onnx")]) == 2
    assert one_error_line(capsys) == ("error: --format onnx needs the onnx and onnxruntime packages: pip install "
                                      "'resdet[export]'")


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shapes")
    generate_shapes(root, num_train=1, num_val=2, min_size=64, max_size=96)
    return root


GOOD = {"image_id": 0, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.5}


@pytest.mark.parametrize(("content", "expected"), [
    (json.dumps([{**GOOD, "image_id": [1]}]), "result #0: image_id must be an integer, got [1]"),
    (json.dumps([{**GOOD, "category_id": {"a": 1}}]), "result #0: category_id must be an integer, got {'a': 1}"),
    (json.dumps([{**GOOD, "image_id": 10**30}]), "result #0: image_id 1000000000000000000000000000000 is not in"),
    ('[{"image_id": ' + "9" * 5000 + "}]", "Exceeds the limit (4300 digits) for integer string conversion"),
    ("[" * 10000 + "]" * 10000, "JSON nested too deeply to read"),
    (json.dumps([GOOD]).encode("utf-16"), "UTF-16 text; a results file must be UTF-8"),
    (b'[{"x": "caf\xe9"}]', "not UTF-8 text (byte 11); a results file must be UTF-8"),
])  # fmt: skip
def test_eval_coco_on_hostile_result_files(coco_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           content: str | bytes, expected: str) -> None:
    results = tmp_path / "results.json"
    results.write_bytes(content.encode() if isinstance(content, str) else content)
    assert eval_coco.main(["--data-root", str(coco_root), "--split", "val", "--results", str(results)]) != 0
    line = one_error_line(capsys)
    assert line.startswith(f"error: {results}") and expected in line and len(line) < 400


def test_eval_coco_given_a_folder(coco_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert eval_coco.main(["--data-root", str(coco_root), "--split", "val", "--results", str(coco_root)]) != 0
    assert one_error_line(capsys) == f"error: {coco_root}: is a folder, not a results file"


@pytest.mark.parametrize(("content", "expected"), [
    ([1, 2], "expected a JSON object of metrics"),
    ({"stats": "x"}, "not a coco result of the shape the tables read: 'stats' must be pycocotools' 12 numbers"),
    ({"stats": [0.5, 0.3]}, "'stats' must be pycocotools' 12 numbers"),
    ({"mAP": "x", "ap": [1], "metric": 3}, "not a voc result of the shape the tables read: 'mAP' must be a number"),
    ({"mAP": 0.5, "ap": {"a": "x"}}, "'ap' must be an object of class → number"),
    ({"top1_loc_error": "x"}, "every '*_loc_error' must be a number"),
    ({"mAP50": 0.5}, "not an evaluation result (keys: ['mAP50'])"),
])  # fmt: skip
def test_tables_on_json_of_the_wrong_shape(tmp_path: Path, capsys: pytest.CaptureFixture[str], content: object,
                                           expected: str) -> None:
    path = tmp_path / "r.json"
    path.write_text(json.dumps(content))
    assert tables.main([str(path)]) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"error: {path}: ") and expected in line


def test_an_ensemble_member_without_class_names_needs_a_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A checkpoint without class names beside one with permuted classes used to be averaged silently."""
    from tests.tools.test_test_det import checkpoint, load_main, run

    root = tmp_path / "shapes"
    generate_shapes(root, num_train=1, num_val=2, min_size=64, max_size=96)
    named = checkpoint(tmp_path / "named.pth")
    stored = torch.load(named, weights_only=True)
    unnamed = save_checkpoint(tmp_path / "unnamed.pth", {"model": stored["model"], "config": stored["config"]})
    permuted = save_checkpoint(tmp_path / "permuted.pth", {**stored, "classes": stored["classes"][::-1]})
    main = load_main()
    assert run(main, root, tmp_path / "a", [named, unnamed]) == 2
    assert one_error_line(capsys) == (
        f"error: cannot load checkpoint {unnamed}: {unnamed} records no class names, so the ensemble cannot check "
        "that its members predict the same classes in the same order (a permuted member would be averaged "
        "silently); pass --allow-unnamed-classes if you know they do")
    assert run(main, root, tmp_path / "b", [unnamed, permuted]) == 2
    assert f"{unnamed} records no class names" in one_error_line(capsys)
    assert run(main, root, tmp_path / "c", [named, permuted]) == 2
    assert "must predict the same classes" in one_error_line(capsys)
    assert run(main, root, tmp_path / "d", [named, unnamed], "--allow-unnamed-classes") == 0


@pytest.mark.parametrize(("args", "expected"), [
    (["--threads", "-1"], "error: --threads must be 0 (torch's default) or more, got -1"),
    (["--cls-iters", "-3"], "error: --cls-iters must be at least 1, got -3"),
    (["solver.bogus=1"], "error: command line: unknown config key 'solver.bogus'"),
    (["--data-root", "COCO"], "error: --data-root {tmp}/COCO is not a CLS-LOC root"),
    (["--output-dir", "file.txt/out"], "error: cannot write to output folder {tmp}/file.txt/out"),
])  # fmt: skip
def test_quickstart_loc_checks_its_arguments_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                              args: list[str], expected: str) -> None:
    from tools import quickstart_loc

    generate_shapes(tmp_path / "COCO", num_train=1, num_val=1, min_size=64, max_size=96)  # a COCO folder
    (tmp_path / "file.txt").write_text("")
    args = [str(tmp_path / a) if a in ("COCO", "file.txt/out") else a for a in args]
    before = set(tmp_path.rglob("*"))
    assert quickstart_loc.main(["--output-dir", str(tmp_path / "out"), "--data-root", str(tmp_path / "gen"),
                                *args]) == 2  # fmt: skip
    assert one_error_line(capsys).startswith(expected.format(tmp=tmp_path))
    assert set(tmp_path.rglob("*")) == before  # nothing generated, nothing trained


def read_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every folder read-only (the tests run as root, where chmod does not stop writes): mkdir and file creation
    fail with EROFS."""
    import errno
    import os
    import pathlib

    def refuse(*_: object, **__: object) -> None:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(pathlib.Path, "mkdir", refuse)
    monkeypatch.setattr(pathlib.Path, "write_bytes", refuse)


def test_browse_dataset_output_that_cannot_be_written(coco_root: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from tools import browse_dataset

    (tmp_path / "file").write_text("")
    base = ["--dataset", "shapes", "--data-root", str(coco_root), "--split", "val", "--num", "1", "--output-dir"]
    for out, reason in ((tmp_path / "file" / "out", "Not a directory"), (tmp_path / LONG_NAME, "File name too long")):
        assert browse_dataset.main([*base, str(out)]) == 1
        assert one_error_line(capsys) == f"error: cannot write to output folder {out}: {reason}"
    read_only(monkeypatch)
    assert browse_dataset.main([*base, str(tmp_path / "new")]) == 1
    assert one_error_line(capsys) == f"error: cannot write to output folder {tmp_path / 'new'}: Read-only file system"


def test_prepare_dataset_root_that_cannot_be_written(coco_root: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from tools import prepare_dataset

    (tmp_path / "file").write_text("")
    root = tmp_path / "file" / "voc"
    assert prepare_dataset.main(["voc", "--data-root", str(root), "--no-progress"]) == 1
    assert one_error_line(capsys) == f"error: cannot write under {root}: Not a directory ({root / 'downloads'})"
    json_out = tmp_path / "file" / "check.json"
    assert prepare_dataset.main(["coco", "--data-root", str(coco_root), "--check", "--json", str(json_out)]) == 1
    assert one_error_line(capsys).startswith(f"error: cannot write {json_out}: ")
    read_only(monkeypatch)
    assert prepare_dataset.main(["voc", "--data-root", str(tmp_path / "voc"), "--no-progress"]) == 1
    assert one_error_line(capsys).startswith(f"error: cannot write under {tmp_path / 'voc'}: Read-only file system")


def test_a_folder_or_an_impossible_name_as_weights(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(CheckpointError, match=r"it is a folder; give the checkpoint file in it"):
        Predictor(tmp_path, device="cpu")
    assert export.main(["--weights", str(tmp_path / LONG_NAME), "--no-check"]) == 2
    assert one_error_line(capsys) == f"error: cannot load checkpoint {tmp_path / LONG_NAME}: File name too long"


def test_test_det_scores_a_split_holding_a_10x10000_strip(tmp_path: Path) -> None:
    """The strip used to end the whole evaluation in a RuntimeError (a zero-sized trunk map)."""
    import cv2
    import numpy as np

    from tests.tools.test_test_det import checkpoint, load_main, run

    root = tmp_path / "shapes"
    generate_shapes(root, num_train=1, num_val=2, min_size=64, max_size=96)
    path = root / "annotations" / "instances_val.json"
    data = json.loads(path.read_text())
    image = data["images"][0]
    assert cv2.imwrite(str(root / "val" / image["file_name"]), np.full((10, 10000, 3), 128, np.uint8))
    image.update(height=10, width=10000)
    for ann in data["annotations"]:
        if ann["image_id"] == image["id"]:
            ann.update(bbox=[100.0, 1.0, 50.0, 8.0], area=400.0)
    path.write_text(json.dumps(data))
    out = tmp_path / "out"
    assert run(load_main(), root, out, [checkpoint(tmp_path / "w.pth")]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["images"] == 2 and metrics["skipped_images"] == 0


def test_a_nan_score_threshold_is_refused(detector: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tools import demo

    with pytest.raises(ValueError, match=r"score_thresh must be in \[0, 1\], got nan"):
        Predictor(detector, device="cpu", score_thresh=float("nan"))
    assert demo.main(["--weights", str(detector), "--images", str(tmp_path), "--output-dir", str(tmp_path / "o"),
                      "--score-thresh", "nan"]) == 2
    assert one_error_line(capsys) == "error: --score-thresh must be in [0, 1], got nan"
