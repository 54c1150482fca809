"""Own data, as docs/custom_data.md walks through it: a COCO-format JSON anywhere plus an image folder, and a
VOC-format folder without a VOC<year> level, each trained and tested with the tools on a tiny generated set; class
mismatches between a checkpoint and the data are one error line; a missing dataset root says what to do."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from types import ModuleType

import pytest

from backbones.checkpoint import load_checkpoint
from detection.data import build_dataset
from detection.data.shapes import generate_shapes

ROOT = Path(__file__).resolve().parents[3]
TINY_CONFIG = ROOT / "tests" / "tiny_det.yaml"
FRUIT = {1: "apple", 2: "pear", 3: "plum"}  # shapes categories 1–3 renamed; 4 and 5 dropped


def tool(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"tool_{name}", ROOT / "tools" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def own_coco(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``labels/{train,val}.json`` and ``pictures/{train,val}/``: 3 classes of our own, not the COCO layout."""
    tmp = tmp_path_factory.mktemp("own")
    generated = generate_shapes(tmp / "generated", num_train=8, num_val=3, min_size=64, max_size=96)
    (tmp / "labels").mkdir()
    for split in ("train", "val"):
        data = json.loads((generated / "annotations" / f"instances_{split}.json").read_text())
        data["categories"] = [{"id": k, "name": name} for k, name in FRUIT.items()]
        data["annotations"] = [a for a in data["annotations"] if a["category_id"] in FRUIT]
        (tmp / "labels" / f"{split}.json").write_text(json.dumps(data))
        shutil.copytree(generated / split, tmp / "pictures" / split)
    return tmp


def voc_folder(coco: Path, out: Path, classes: list[str]) -> Path:
    """The same images as a VOC-format folder (1-based inclusive XML boxes) with ``classes.txt``."""
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    for split, listed in (("train", "trainval"), ("val", "test")):
        data = json.loads((coco / "labels" / f"{split}.json").read_text())
        names = {c["id"]: c["name"] for c in data["categories"]}
        stems = []
        for image in data["images"]:
            stem = f"{split}_{Path(image['file_name']).stem}"
            stems.append(stem)
            shutil.copy(coco / "pictures" / split / image["file_name"], out / "JPEGImages" / f"{stem}.jpg")
            objects = "".join(
                f"<object><name>{names[a['category_id']]}</name><difficult>0</difficult><bndbox>"
                f"<xmin>{a['bbox'][0] + 1:.0f}</xmin><ymin>{a['bbox'][1] + 1:.0f}</ymin>"
                f"<xmax>{a['bbox'][0] + a['bbox'][2]:.0f}</xmax><ymax>{a['bbox'][1] + a['bbox'][3]:.0f}</ymax>"
                "</bndbox></object>"
                for a in data["annotations"] if a["image_id"] == image["id"]
            )
            (out / "Annotations" / f"{stem}.xml").write_text(
                f"<annotation><size><width>{image['width']}</width><height>{image['height']}</height>"
                f"<depth>3</depth></size>{objects}</annotation>")
        (out / "ImageSets" / "Main" / f"{listed}.txt").write_text("".join(f"{s}\n" for s in stems))
    (out / "classes.txt").write_text("".join(f"{c}\n" for c in classes))
    return out


def common(output_dir: Path, *overrides: str) -> list[str]:
    return ["--config", str(TINY_CONFIG), "--output-dir", str(output_dir), "--device", "cpu", "--no-progress",
            "num_classes=0", "solver.max_iter=2", "solver.checkpoint_period=0", *overrides]  # fmt: skip


@pytest.fixture(scope="module")
def coco_run(own_coco: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The docs' COCO-format walk-through: trained 2 iterations, evaluated at each (test.eval_period=1)."""
    out = tmp_path_factory.mktemp("coco_run")
    rc = tool("train_det").main([
        "--dataset", "coco", "--train-json", str(own_coco / "labels/train.json"),
        "--train-images", str(own_coco / "pictures/train"), "--test-json", str(own_coco / "labels/val.json"),
        "--test-images", str(own_coco / "pictures/val"),
        *common(out, "test.eval_period=1", "solver.checkpoint_period=1"),
    ])  # fmt: skip
    assert rc == 0
    return out


def test_coco_json_anywhere_takes_classes_from_its_categories(coco_run: Path) -> None:
    assert json.loads((coco_run / "config.json").read_text())["num_classes"] == 3
    assert load_checkpoint(coco_run / "model_final.pth")["classes"] == list(FRUIT.values())
    metrics = json.loads((coco_run / "metrics.json").read_text())
    assert metrics["split"] == "val" and metrics["images"] == 3  # named after val.json
    assert (coco_run / "coco_results_val.json").is_file()


def test_periodic_evaluation_logs_and_keeps_the_best(coco_run: Path) -> None:
    log = (coco_run / "log.txt").read_text()
    for field in ("eta: ", "iter: 2/2", "time: ", "data_time: ", "max_mem: ", "eval at iter 1: "):
        assert field in log, field
    evaluated = [json.loads((coco_run / "eval" / f"iter_{i:07d}" / "metrics.json").read_text()) for i in (1, 2)]
    best = load_checkpoint(coco_run / "model_best.pth")
    assert best["metric"] == "mAP50" and best["value"] == max(m["mAP50"] for m in evaluated)
    assert best["iteration"] == max((1, 2), key=lambda i: (evaluated[i - 1]["mAP50"], -i))
    assert best["classes"] == list(FRUIT.values())
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(coco_run / "tensorboard"))
    events.Reload()
    scalars = events.Scalars("eval/mAP50")
    assert [e.step for e in scalars] == [1, 2]
    assert [e.value for e in scalars] == pytest.approx([m["mAP50"] for m in evaluated])
    assert "eval/mAP" in events.Tags()["scalars"]  # COCO's AP@[.5:.95] too


def test_resumed_run_keeps_comparing_against_the_stored_best(coco_run: Path, own_coco: Path, tmp_path: Path) -> None:
    evaluated = {i: json.loads((coco_run / "eval" / f"iter_{i:07d}" / "metrics.json").read_text())["mAP50"]
                 for i in (1, 2)}  # fmt: skip
    assert load_checkpoint(coco_run / "model_0000002.pth")["best_metric"] == max(evaluated.values())
    out = tmp_path / "resumed"
    shutil.copytree(coco_run, out)
    rc = tool("train_det").main([
        "--dataset", "coco", "--train-json", str(own_coco / "labels/train.json"),
        "--train-images", str(own_coco / "pictures/train"), "--test-json", str(own_coco / "labels/val.json"),
        "--test-images", str(own_coco / "pictures/val"), "--resume", "--no-eval",
        "--resume-anyway",  # extending max_iter 2 → 3 is another config (detection/engine/run_dir.py)
        *common(out, "test.eval_period=1", "solver.checkpoint_period=1", "solver.max_iter=3"),
    ])  # fmt: skip
    assert rc == 0
    evaluated[3] = json.loads((out / "eval" / "iter_0000003" / "metrics.json").read_text())["mAP50"]
    best = load_checkpoint(out / "model_best.pth")
    assert best["value"] == max(evaluated.values())
    assert best["iteration"] == (3 if evaluated[3] > max(evaluated[1], evaluated[2]) else
                                 load_checkpoint(coco_run / "model_best.pth")["iteration"])


def test_test_det_on_own_coco_json(coco_run: Path, own_coco: Path, tmp_path: Path) -> None:
    rc = tool("test_det").main([
        "--weights", str(coco_run / "model_final.pth"), "--dataset", "coco", "--test-json",
        str(own_coco / "labels/val.json"), "--test-images", str(own_coco / "pictures/val"),
        "--output-dir", str(tmp_path), "--device", "cpu", "--no-progress",
    ])  # fmt: skip
    assert rc == 0
    assert json.loads((tmp_path / "metrics.json").read_text())["metric"] == "COCO mAP@0.5 (pycocotools)"


def test_voc_folder_without_a_year_trains_and_tests(own_coco: Path, tmp_path: Path) -> None:
    folder = voc_folder(own_coco, tmp_path / "fruit_voc", list(FRUIT.values()))
    dataset = build_dataset("voc", folder, "trainval", None, train=True)
    assert dataset.classes == list(FRUIT.values()) and len(dataset) > 0
    out = tmp_path / "run"
    assert tool("train_det").main(["--dataset", "voc", "--data-root", str(folder), *common(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["metric"] == "VOC area mAP@0.5" and set(metrics["ap"]) == set(FRUIT.values())
    assert load_checkpoint(out / "model_final.pth")["classes"] == list(FRUIT.values())
    # The result files carry the folder's own split name: tools/eval_voc.py --split test scores them the same.
    assert tool("eval_voc").main(["--data-root", str(folder), "--split", "test", "--results", str(out / "results"),
                                  "--classes", ",".join(FRUIT.values()), "--json", str(tmp_path / "voc.json")]) == 0
    assert json.loads((tmp_path / "voc.json").read_text())["mAP"] == pytest.approx(metrics["mAP50"])


def relabelled_json(own_coco: Path, out: Path, categories: dict[int, str]) -> Path:
    data = json.loads((own_coco / "labels" / "val.json").read_text())
    data["categories"] = [{"id": k, "name": name} for k, name in categories.items()]
    data["annotations"] = [a for a in data["annotations"] if a["category_id"] in categories]
    out.write_text(json.dumps(data))
    return out


@pytest.mark.parametrize("categories, message", [
    ({1: "apple", 2: "pear", 3: "cherry"}, "trained on 3 classes (apple, pear, plum) but coco other has 3 "
                                            "(apple, pear, cherry)"),
    ({1: "apple", 2: "pear"}, "trained on 3 classes (apple, pear, plum) but coco other has 2 (apple, pear)"),
])  # fmt: skip
def test_class_mismatch_between_checkpoint_and_data_is_one_line(
    coco_run: Path, own_coco: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], categories: dict[int, str],
    message: str,
) -> None:
    other = relabelled_json(own_coco, tmp_path / "other.json", categories)
    rc = tool("test_det").main(["--weights", str(coco_run / "model_final.pth"), "--dataset", "coco", "--test-json",
                                str(other), "--test-images", str(own_coco / "pictures/val"), "--output-dir",
                                str(tmp_path / "out"), "--device", "cpu", "--no-progress"])  # fmt: skip
    assert rc == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


def test_voc_folder_is_read_in_the_checkpoints_class_order(coco_run: Path, own_coco: Path, tmp_path: Path) -> None:
    reordered = voc_folder(own_coco, tmp_path / "reordered", ["plum", "pear", "apple"])
    assert build_dataset("voc", reordered, "test", None).classes == ["plum", "pear", "apple"]  # its classes.txt
    rc = tool("test_det").main(["--weights", str(coco_run / "model_final.pth"), "--dataset", "voc", "--data-root",
                                str(reordered), "--output-dir", str(tmp_path / "out"), "--device", "cpu",
                                "--no-progress"])  # fmt: skip
    assert rc == 0
    assert list(json.loads((tmp_path / "out" / "metrics.json").read_text())["ap"]) == list(FRUIT.values())


def test_num_classes_that_disagrees_with_the_data_is_one_line(
    own_coco: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = voc_folder(own_coco, tmp_path / "fruit", list(FRUIT.values()))
    rc = tool("train_det").main(["--dataset", "voc", "--data-root", str(folder),
                                 *common(tmp_path / "out", "num_classes=5")])  # fmt: skip
    assert rc == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "num_classes=5" in err and "has 3 classes" in err, err


def test_missing_dataset_root_names_layout_prepare_command_and_quickstart(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "coco"
    rc = tool("train_det").main(["--dataset", "coco", "--data-root", str(missing), *common(tmp_path / "out")])
    assert rc == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    for part in ("annotations/instances_<split>.json", f"tools/prepare_dataset.py coco --data-root {missing}",
                 "tools/quickstart.py", "offline"):
        assert part in err, (part, err)


@pytest.fixture(scope="module")
def coco2014(own_coco: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The own data in COCO 2014's layout: train2014 (8 images), val2014 (3, ids from 1001) and Detectron's
    minival2014 (the first val image) / valminusminival2014 (the others), whose images are in val2014/."""
    root = tmp_path_factory.mktemp("coco2014")
    (root / "annotations").mkdir()
    train = json.loads((own_coco / "labels/train.json").read_text())
    val = json.loads((own_coco / "labels/val.json").read_text())
    for image in val["images"]:
        image["id"] += 1000
    for ann in val["annotations"]:
        ann["image_id"] += 1000
    first = val["images"][0]["id"]
    subsets = {"train2014": train, "val2014": val,
               "minival2014": {**val, "images": val["images"][:1],
                               "annotations": [a for a in val["annotations"] if a["image_id"] == first]},
               "valminusminival2014": {**val, "images": val["images"][1:],
                                       "annotations": [a for a in val["annotations"] if a["image_id"] != first]}}
    for split, data in subsets.items():
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
    shutil.copytree(own_coco / "pictures/train", root / "train2014")
    shutil.copytree(own_coco / "pictures/val", root / "val2014")
    return root


def union_size(root: Path, *splits: str) -> int:
    return sum(len(build_dataset("coco", root, split, None, train=True)) for split in splits)


def test_training_on_train2014_plus_val_minus_minival_tests_on_minival(coco2014: Path, tmp_path: Path,
                                                                        caplog) -> None:
    rc = tool("train_det").main([
        "--dataset", "coco", "--data-root", str(coco2014),
        *common(tmp_path, "data.train_split=[train2014, valminusminival2014]", "data.test_split=minival2014"),
    ])  # fmt: skip
    assert rc == 0
    images = union_size(coco2014, "train2014", "valminusminival2014")
    assert f"coco train2014+valminusminival2014: {images} images" in (tmp_path / "log.txt").read_text()
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["split"] == "minival2014" and metrics["images"] == 1  # its image read from val2014/


def test_training_on_full_val_with_minival_excluded_and_the_leak_refused(coco2014: Path, tmp_path: Path) -> None:
    minival = coco2014 / "annotations" / "instances_minival2014.json"
    args = ["--dataset", "coco", "--data-root", str(coco2014), "--config", str(TINY_CONFIG), "--device", "cpu",
            "--no-progress", "num_classes=0", "solver.max_iter=1", "solver.checkpoint_period=0",
            "data.train_split=train2014+val2014+minival2014", "data.test_split=minival2014"]  # fmt: skip
    assert tool("train_det").main(["--output-dir", str(tmp_path / "leak"), *args]) == 1
    rc = tool("train_det").main(["--output-dir", str(tmp_path / "ok"), *args, f"data.exclude_images={minival}"])
    assert rc == 0
    images = union_size(coco2014, "train2014", "valminusminival2014")
    assert f"train2014+val2014+minival2014: {images} images" in (tmp_path / "ok" / "log.txt").read_text()


def test_several_own_coco_jsons_train_as_one(own_coco: Path, tmp_path: Path) -> None:
    rc = tool("train_det").main([
        "--dataset", "coco", "--train-json", str(own_coco / "labels/train.json"), "--train-images",
        str(own_coco / "pictures/train"), "--train-json", str(own_coco / "labels/val.json"), "--train-images",
        str(own_coco / "pictures/val"), "--test-json", str(own_coco / "labels/val.json"), "--test-images",
        str(own_coco / "pictures/val"), *common(tmp_path),
    ])  # fmt: skip
    assert rc == 0
    images = sum(len(build_dataset("coco", own_coco, "", None, train=True, ann_file=own_coco / f"labels/{s}.json",
                                   image_dir=own_coco / f"pictures/{s}")) for s in ("train", "val"))
    assert f"coco train+val: {images} images" in (tmp_path / "log.txt").read_text()  # ids repeat, files do not


def test_exclude_images_is_for_coco_training_only(tmp_path: Path) -> None:
    from detection.config import ConfigError, load_config
    from detection.engine.own_data import own_data_kwargs

    cfg = load_config(None, [f"data.exclude_images={tmp_path / 'minival.json'}", "data.image_dirs={minival: val}"])
    assert own_data_kwargs("coco", cfg.data, train=True)["exclude_images"] == tmp_path / "minival.json"
    assert own_data_kwargs("coco", cfg.data, train=False) == {"image_dirs": {"minival": "val"}}  # tests see all
    with pytest.raises(ConfigError, match="data.exclude_images .* removes COCO image ids; --dataset voc"):
        own_data_kwargs("voc", cfg.data, train=True)
