"""detection.Predictor: every input kind gives the detections the model gives for the same pixels."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from backbones.checkpoint import save_checkpoint
from detection import Predictor, build_detector, load_config
from detection.data.shapes import render_image
from detection.data.transforms import to_tensor

TINY_CONFIG = Path(__file__).resolve().parents[2] / "tiny_det.yaml"
CLASSES = ["circle", "square", "triangle", "diamond", "cross"]


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised tiny detector saved as train_det saves model_final.pth (weights, config, classes)."""
    cfg = load_config(TINY_CONFIG)
    torch.manual_seed(0)
    model = build_detector(cfg)
    path = tmp_path_factory.mktemp("weights") / "model_final.pth"
    save_checkpoint(path, {"model": model.state_dict(), "config": cfg.to_dict(), "classes": CLASSES})
    return path


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, Path]:
    """An RGB uint8 shapes scene and the same pixels as a PNG file."""
    rgb, _ = render_image(np.random.default_rng(3), 72, 96)
    path = tmp_path_factory.mktemp("scene") / "scene.png"
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return rgb, path


def same(a, b) -> None:  # noqa: ANN001 - two Predictions
    assert len(a) == len(b) and a.class_names == b.class_names
    assert torch.equal(a.labels, b.labels)
    torch.testing.assert_close(a.boxes, b.boxes)
    torch.testing.assert_close(a.scores, b.scores)


def test_every_input_kind_gives_the_same_detections(weights: Path, scene: tuple[np.ndarray, Path]) -> None:
    rgb, path = scene
    predictor = Predictor(weights, device="cpu")
    reference = predictor(path)
    assert len(reference) > 0  # a random tiny model still scores many boxes above the 0.05 threshold
    assert reference.class_names == [CLASSES[int(k) - 1] for k in reference.labels]
    assert (reference.scores[:-1] >= reference.scores[1:]).all()  # most confident first
    bgr = cv2.imread(str(path))
    same(predictor(bgr), reference)  # OpenCV's BGR array
    same(predictor(rgb, rgb=True), reference)
    same(predictor(Image.open(path)), reference)
    same(predictor(to_tensor(rgb)), reference)
    same(predictor(torch.from_numpy(rgb).permute(2, 0, 1).contiguous()), reference)  # uint8 tensor
    batch = predictor(torch.stack([to_tensor(rgb), to_tensor(rgb)]))
    assert isinstance(batch, list) and len(batch) == 2
    for result in batch + predictor([path, bgr]):
        same(result, reference)


def test_matches_the_model_as_built_and_thresholds(weights: Path, scene: tuple[np.ndarray, Path]) -> None:
    rgb, path = scene
    plain = Predictor(weights, device="cpu", optimize=False)
    with torch.inference_mode():
        eager = plain.model([to_tensor(rgb)])[0]
    result = plain(path)
    order = eager["scores"].argsort(descending=True)
    torch.testing.assert_close(result.boxes, eager["boxes"][order])
    torch.testing.assert_close(result.scores, eager["scores"][order])
    same(Predictor(weights, device="cpu")(path), result)  # BN folding keeps the detections
    strict = Predictor(weights, device="cpu", score_thresh=float(result.scores.median()))
    assert 0 < len(strict(path)) < len(result)
    records = strict(path).to_records()
    assert records[0]["label"] in CLASSES and len(records[0]["box"]) == 4


def test_unreadable_inputs_are_clear_errors(weights: Path) -> None:
    predictor = Predictor(weights, device="cpu")
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        predictor(np.zeros((4, 4, 5), np.uint8))
    with pytest.raises(TypeError, match="cannot read an image from int"):
        predictor(3)
