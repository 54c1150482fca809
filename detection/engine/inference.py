"""Run a detector over a dataset: batched, with a progress bar, skipping unreadable images (counted)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from backbones import runtime
from detection.data import collate
from detection.modeling.boxes import scale_boxes

logger = logging.getLogger(__name__)


@dataclass
class Predictions:
    """Per image (dataset order): the target dict (boxes in original-image pixels) and the model output dict
    (``boxes`` xyxy original-image pixels, ``scores``, ``labels`` 1..K), all on the CPU."""

    targets: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[dict[str, torch.Tensor]] = field(default_factory=list)
    skipped: int = 0
    seconds: float = 0.0


def in_original_pixels(
    decoded: tuple[int, ...], target: dict[str, Any], output: dict[str, torch.Tensor]
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Target and output boxes brought from the decoded image ``(h, w)`` to the annotations' frame
    (``target["annotated_size"]``, else ``orig_size``): they differ for a file over ``max_side`` pixels, decoded at
    reduced size (detection/data/io.py), or one resized after annotation (warned about when loaded); result files
    and metrics must be in the pixels the ground truth is in."""
    original = tuple(int(v) for v in target.get("annotated_size", target.get("orig_size", decoded)))
    if tuple(decoded) == original:
        return target, output
    size = (int(decoded[0]), int(decoded[1]))
    target = {**target, "boxes": scale_boxes(target["boxes"].float(), size, original)}
    output = {**output, "boxes": scale_boxes(output["boxes"], size, original)}
    return target, output


@torch.inference_mode()
def run_inference(
    model: nn.Module,
    dataset: Dataset,
    *,
    device: torch.device,
    batch_size: int = 1,
    num_workers: int = 0,
    amp: bool = False,
    progress: bool = True,
) -> Predictions:
    import time

    from tqdm import tqdm

    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=collate, shuffle=False)
    result = Predictions()
    expected = len(dataset)  # type: ignore[arg-type]
    start = time.perf_counter()
    for images, targets in tqdm(loader, desc="inference", disable=not progress, dynamic_ncols=True):
        if not images:
            continue
        images = [i.to(device, non_blocking=True) for i in images]
        with runtime.autocast(device, amp):
            outputs = model(images)
        for image, target, output in zip(images, targets, outputs):
            output = {k: v.float().cpu() if v.is_floating_point() else v.cpu() for k, v in output.items()}
            target, output = in_original_pixels(tuple(image.shape[-2:]), target, output)
            result.targets.append(target)
            result.outputs.append(output)
    result.seconds = time.perf_counter() - start
    result.skipped = expected - len(result.outputs)
    if result.skipped:
        logger.warning("inference: %d of %d images could not be read and were skipped", result.skipped, expected)
    return result
