"""ILSVRC DET evaluation during training/testing honours the devkit blacklist, so its numbers equal
``tools/eval_imagenet.py det`` on the result file it writes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from detection.data import ImageNetDetDataset
from detection.data.errors import DatasetError
from detection.engine.evaluate import evaluate_predictions
from detection.engine.inference import Predictions
from detection.evaluation.imagenet_det import evaluate_det_files

WNIDS = ("n02672831", "n02691156")
GT = {1: (WNIDS[0], (1, 1, 40, 40)), 2: (WNIDS[1], (11, 11, 50, 50)), 3: (WNIDS[0], (5, 5, 30, 30))}


def write_ilsvrc(root: Path, blacklist: str | None) -> Path:
    """val: three 60×60 images with one object each; the devkit blacklist, if given, in devkit/data."""
    data = root / "ILSVRC"
    (data / "devkit" / "data").mkdir(parents=True)
    (data / "devkit" / "data" / "map_det.txt").write_text(f"{WNIDS[0]} 1 accordion\n{WNIDS[1]} 2 airplane\n")
    if blacklist is not None:
        (data / "devkit" / "data" / "ILSVRC2015_det_validation_blacklist.txt").write_text(blacklist)
    for folder in ("Data/DET/val", "Annotations/DET/val", "ImageSets/DET"):
        (data / folder).mkdir(parents=True)
    for index, (wnid, box) in GT.items():
        name = f"ILSVRC2012_val_{index:08d}"
        (data / "Data" / "DET" / "val" / f"{name}.JPEG").write_bytes(b"")  # never decoded here
        coords = "".join(f"<{k}>{v}</{k}>" for k, v in zip(("xmin", "ymin", "xmax", "ymax"), box))
        (data / "Annotations" / "DET" / "val" / f"{name}.xml").write_text(
            "<annotation><size><width>60</width><height>60</height></size>"
            f"<object><name>{wnid}</name><bndbox>{coords}</bndbox></object></annotation>"
        )
    (data / "ImageSets" / "DET" / "val.txt").write_text("".join(f"ILSVRC2012_val_{i:08d} {i}\n" for i in GT))
    return root


def predictions(dataset: ImageNetDetDataset) -> Predictions:
    """Per image, its GT box found (score 0.9 − 0.1·i) and a miss of class 1 (score 0.95): the misses on the
    blacklisted (image 2, class 1) pair are what the blacklist takes out."""
    out = Predictions()
    for i in range(len(dataset)):
        part, local = dataset.locate(i)
        ann = part.annotation(local)
        gt = torch.as_tensor(ann.boxes)
        out.targets.append({"boxes": gt, "labels": torch.as_tensor(ann.labels),
                            "image_id": dataset.image_info(i)["image_id"]})  # fmt: skip
        out.outputs.append({"boxes": torch.cat((gt, torch.tensor([[0.0, 0.0, 5.0, 5.0]]))),
                            "scores": torch.tensor([0.9 - 0.1 * i, 0.95]),
                            "labels": torch.cat((torch.as_tensor(ann.labels), torch.tensor([1])))})  # fmt: skip
    return out


@pytest.mark.parametrize("given", [False, True])
def test_blacklist_found_in_the_devkit_or_given_is_applied_as_by_the_tool(tmp_path: Path, given: bool) -> None:
    blacklist = f"2 {WNIDS[0]}\n"
    if given:
        root = write_ilsvrc(tmp_path, None)
        (tmp_path / "black.txt").write_text(blacklist)
        dataset = ImageNetDetDataset(root, "val", blacklist_file=tmp_path / "black.txt")
    else:
        root = write_ilsvrc(tmp_path, blacklist)
        dataset = ImageNetDetDataset(root, "val")
    assert dataset.blacklist_file is not None
    preds = predictions(dataset)
    metrics, _ = evaluate_predictions("imagenet_det", dataset, preds, tmp_path / "out", "val")
    tool = evaluate_det_files(root / "ILSVRC", "val", tmp_path / "out" / "ilsvrc_det_val.txt", dataset.blacklist_file)
    assert metrics["mAP50"] == pytest.approx(tool.mAP) and metrics["blacklist"] == str(dataset.blacklist_file)
    # Without the blacklist the miss on image 2 counts against class 1: a lower number than the tool's.
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    plain = evaluate_det_files(root / "ILSVRC", "val", tmp_path / "out" / "ilsvrc_det_val.txt", empty)
    assert plain.mAP < tool.mAP


def test_a_missing_blacklist_file_is_an_error_naming_it(tmp_path: Path) -> None:
    root = write_ilsvrc(tmp_path, f"2 {WNIDS[0]}\n")
    with pytest.raises(DatasetError, match="blacklist file not found: .*nowhere.txt"):
        ImageNetDetDataset(root, "val", blacklist_file=tmp_path / "nowhere.txt")
