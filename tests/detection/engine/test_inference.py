"""``run_inference`` edge cases."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from detection.build import build_detector
from detection.data import build_dataset, build_transforms
from detection.engine.inference import run_inference


@pytest.mark.xfail(
    strict=True,
    raises=RuntimeError,
    reason="known bug: detection/boxes.py decode_boxes does reshape(0, -1) when an image has no proposals "
    "(seen with a randomly initialised R101 at 64 px and after divergence); expected: empty detections",
)
def test_an_image_without_proposals_gives_empty_detections(shapes_root: Path, tiny_config: Any) -> None:
    cfg = tiny_config("model.rpn.min_box_size=100000")  # every proposal is "too small": none survive
    dataset = build_dataset("shapes", shapes_root, "val", build_transforms(train=False))
    torch.manual_seed(0)
    predictions = run_inference(build_detector(cfg), dataset, device=torch.device("cpu"), progress=False)
    assert len(predictions.outputs) == len(dataset)
    for output in predictions.outputs:
        assert output["boxes"].shape == (0, 4) and len(output["scores"]) == len(output["labels"]) == 0
