"""Predictor on odd inputs: boxes always in the original image's pixels (also for a file decoded at reduced size),
pixel ranges by dtype (16-bit PIL, integer and 0..255 float tensors), empty and extreme-aspect images."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor

from backbones.checkpoint import save_checkpoint
from detection import Predictor, build_detector, load_config
from detection.deploy.predictor import image_to_tensor, load_input

TINY_CONFIG = Path(__file__).resolve().parents[2] / "tiny_det.yaml"


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = load_config(TINY_CONFIG)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "model_final.pth"
    save_checkpoint(path, {"model": build_detector(cfg).state_dict(), "config": cfg.to_dict(),
                           "classes": ["a", "b", "c", "d", "e"]})
    return path


def whole_image_detector(images: list[Tensor]) -> list[dict[str, Tensor]]:
    """A stand-in model that detects its whole input image: the box says which pixels the predictor fed it."""
    return [{"boxes": torch.tensor([[0.0, 0.0, float(i.shape[-1]), float(i.shape[-2])]]),
             "scores": torch.ones(1), "labels": torch.ones(1, dtype=torch.int64)} for i in images]


def test_a_file_decoded_at_reduced_size_gives_boxes_in_the_files_pixels(weights: Path, tmp_path: Path) -> None:
    path = tmp_path / "panorama.png"
    assert cv2.imwrite(str(path), np.full((400, 12000, 3), 90, np.uint8))
    tensor, size = load_input(path)
    assert size == (400, 12000) and max(tensor.shape[-2:]) <= 10_000  # decoded smaller, the file's size kept
    predictor = Predictor(weights, device="cpu")
    predictor.runner = whole_image_detector
    assert predictor(path).boxes.tolist() == [[0.0, 0.0, 12000.0, 400.0]]
    assert predictor(cv2.imread(str(path))).boxes.tolist() == [[0.0, 0.0, 12000.0, 400.0]]


def test_pixel_ranges_follow_the_dtype_or_are_refused() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    reference = image_to_tensor(rgb, rgb=True)
    assert torch.equal(image_to_tensor(torch.from_numpy(rgb).permute(2, 0, 1).long()), reference)  # int64 0..255
    assert torch.equal(image_to_tensor(reference), reference)  # float in [0, 1]
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\].*spans \[\d+, \d+\].*divide"):
        image_to_tensor(reference * 255)  # a float tensor in 0..255: used to be read as white, 0 detections
    with pytest.raises(ValueError, match="must lie in 0..255"):
        image_to_tensor(torch.full((3, 4, 4), 300, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        image_to_tensor(torch.full((3, 4, 4), float("nan")))
    with pytest.raises(ValueError, match="uint8"):
        image_to_tensor(rgb.astype(np.uint16))
    with pytest.raises(ValueError, match="no pixels"):
        image_to_tensor(np.zeros((0, 0, 3), np.uint8))
    with pytest.raises(ValueError, match="no pixels"):
        image_to_tensor(torch.zeros(3, 0, 5))


def test_a_16_bit_pil_image_keeps_its_contrast() -> None:
    gray = np.random.default_rng(1).integers(0, 256, (6, 5), dtype=np.uint8)
    sixteen = Image.fromarray(gray.astype(np.uint16) * 257)  # mode I;16, what Image.open gives for a 16-bit PNG
    assert sixteen.mode.startswith("I")
    expected = image_to_tensor(np.repeat(gray[..., None], 3, axis=2), rgb=True)
    assert torch.equal(image_to_tensor(sixteen), expected)  # convert("RGB") clipped it all to white
    with pytest.raises(ValueError, match="mode F"):
        image_to_tensor(Image.fromarray(gray.astype(np.float32)))


@pytest.mark.parametrize("shape", [(10, 10000, 3), (10000, 10, 3), (1, 1, 3)])
def test_extreme_aspect_ratios_are_detected_not_a_crash(weights: Path, shape: tuple[int, int, int]) -> None:
    """A 10×10000 strip resized to the test scale used to be 0 pixels high: an empty trunk map, a RuntimeError."""
    predictor = Predictor(weights, device="cpu", optimize=False)
    image = np.random.default_rng(2).integers(0, 256, shape, dtype=np.uint8)
    result = predictor(image)
    if len(result):
        assert float(result.boxes[:, 2].max()) <= shape[1] + 1e-3 and float(result.boxes[:, 3].max()) <= shape[0] + 1e-3
