"""evaluate_predictions: the dataset's declared protocol and attributes decide the metric and the files written."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from detection.data import VOCDataset
from detection.engine.evaluate import evaluate_predictions
from detection.engine.inference import Predictions
from detection.evaluation.voc import load_voc_ground_truth, read_voc_results, voc_eval

GT_BOX = (1, 1, 50, 50)  # devkit pixels; internal [0, 0, 50, 50]


def write_voc_split(root: Path, year: str, split: str, names: list[str]) -> None:
    base = root / "VOCdevkit" / f"VOC{year}"
    for folder in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (base / folder).mkdir(parents=True, exist_ok=True)
    for name in names:
        (base / "JPEGImages" / f"{name}.jpg").write_bytes(b"")  # never decoded here
        coords = "".join(f"<{k}>{v}</{k}>" for k, v in zip(("xmin", "ymin", "xmax", "ymax"), GT_BOX))
        (base / "Annotations" / f"{name}.xml").write_text(
            "<annotation><size><width>100</width><height>100</height></size>"
            f"<object><name>dog</name><bndbox>{coords}</bndbox></object></annotation>"
        )
    (base / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{n}\n" for n in names))


def predictions_for(dataset: VOCDataset) -> Predictions:
    """One dog per image; detections by score: hit (image 0), miss (image 1), hit (image 1); image 2 unseen.

    Recall 1/3, 1/3, 2/3 at precision 1, 1/2, 2/3: area AP = 1/3 · 1 + 1/3 · 2/3 = 5/9; 11-point AP =
    (4 · 1 + 3 · 2/3) / 11 = 6/11 (thresholds 0–0.3 reach precision 1, 0.4–0.6 reach 2/3, 0.7–1 nothing).
    """
    hit, miss = [0.0, 0.0, 50.0, 50.0], [60.0, 60.0, 90.0, 90.0]
    detections = [([hit], [0.9]), ([miss, hit], [0.8, 0.7]), ([], [])]
    dog = dataset.classes.index("dog") + 1
    out = Predictions()
    for i, (boxes, scores) in enumerate(detections):
        part, local = dataset.locate(i)
        ann = part.annotation(local)
        out.targets.append({"boxes": torch.as_tensor(ann.boxes), "labels": torch.as_tensor(ann.labels),
                            "difficult": torch.as_tensor(ann.flags["difficult"]),
                            "image_id": dataset.image_info(i)["image_id"]})
        out.outputs.append({"boxes": torch.tensor(boxes).reshape(-1, 4), "scores": torch.tensor(scores),
                            "labels": torch.full((len(scores),), dog)})
    return out


@pytest.mark.parametrize(
    "year, split, metric, ap",
    [("2007", "test", "VOC07 11-point mAP@0.5", 6 / 11), ("2012", "val", "VOC area mAP@0.5", 5 / 9)],
)
def test_voc_metric_follows_the_split_year(tmp_path: Path, year: str, split: str, metric: str, ap: float) -> None:
    names = [f"{year}_00000{i}" for i in range(3)]
    write_voc_split(tmp_path, year, split, names)
    dataset = VOCDataset(tmp_path, f"{year}_{split}")
    metrics, _ = evaluate_predictions("voc", dataset, predictions_for(dataset), tmp_path / "out", f"{year}_{split}")
    assert metrics["metric"] == metric
    assert metrics["ap"]["dog"] == pytest.approx(ap)
    assert metrics["mAP50"] == pytest.approx(ap / 20)  # the other 19 classes have no objects: AP 0
    # Named by the devkit's own split, so tools/eval_voc.py --split <split> finds them and scores the same AP.
    lines = (tmp_path / "out" / "results" / f"comp4_det_{split}_dog.txt").read_text().splitlines()
    assert [line.split()[0] for line in lines] == [names[0], names[1], names[1]]  # devkit image names
    ground_truth = load_voc_ground_truth(tmp_path / "VOCdevkit" / f"VOC{year}", split)
    from_files = voc_eval(read_voc_results(tmp_path / "out" / "results", split, ["dog"]), ground_truth, ["dog"],
                          use_07_metric=dataset.use_07_metric)
    assert from_files.ap["dog"] == pytest.approx(ap)
