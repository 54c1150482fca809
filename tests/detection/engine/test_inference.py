"""``run_inference`` edge cases."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from detection.build import build_detector
from detection.data import build_dataset, build_transforms
from detection.engine.inference import run_inference


def test_an_image_without_proposals_gives_empty_detections(shapes_root: Path, tiny_config: Any) -> None:
    cfg = tiny_config("model.rpn.min_box_size=100000")  # every proposal is "too small": none survive
    dataset = build_dataset("shapes", shapes_root, "val", build_transforms(train=False))
    torch.manual_seed(0)
    predictions = run_inference(build_detector(cfg), dataset, device=torch.device("cpu"), progress=False)
    assert len(predictions.outputs) == len(dataset)
    for output in predictions.outputs:
        assert output["boxes"].shape == (0, 4) and len(output["scores"]) == len(output["labels"]) == 0
