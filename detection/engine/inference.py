"""Run a detector over a dataset: batched, with a progress bar, skipping unreadable images (counted); sharded over
the ranks of a torchrun process group when asked (each rank a contiguous block, gathered in dataset order)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from backbones import runtime
from backbones.sharding import gather_in_rank_order, shard_range
from detection.data import collate
from detection.modeling.boxes import scale_boxes

logger = logging.getLogger(__name__)


@dataclass
class Predictions:
    """Per image (dataset order): the target dict (boxes in original-image pixels) and the model output dict
    (``boxes`` xyxy original-image pixels, ``scores``, ``labels`` 1..K), all on the CPU.

    ``images_per_rank``: how many images each rank was given (one entry without sharding); ``seconds``: the wall
    time of the slowest rank."""

    targets: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[dict[str, torch.Tensor]] = field(default_factory=list)
    skipped: int = 0
    seconds: float = 0.0
    images_per_rank: list[int] = field(default_factory=list)

    @property
    def world_size(self) -> int:
        return len(self.images_per_rank)


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
    sharded: bool = False,
) -> Predictions:
    """Predictions for every image of ``dataset``. With ``sharded`` (a collective: call it on every rank of the
    process group) each rank runs its block of the images (``backbones.sharding.shard_range``) and every rank
    returns all of them, in dataset order; without a process group ``sharded`` changes nothing."""
    total = len(dataset)  # type: ignore[arg-type]
    rank = runtime.get_rank() if sharded else 0
    world_size = runtime.get_world_size() if sharded else 1
    mine = shard_range(total, rank, world_size)
    part = dataset if len(mine) == total else Subset(dataset, list(mine))
    local = _infer(model, part, device=device, batch_size=batch_size, num_workers=num_workers, amp=amp,
                   progress=progress and rank == 0)  # fmt: skip
    local.images_per_rank = [len(mine)]
    result = local
    if world_size > 1:
        parts = gather_in_rank_order(local)
        result = Predictions(
            targets=[t for p in parts for t in p.targets], outputs=[o for p in parts for o in p.outputs],
            skipped=sum(p.skipped for p in parts), seconds=max(p.seconds for p in parts),
            images_per_rank=[n for p in parts for n in p.images_per_rank],
        )
    if result.skipped:
        logger.warning("inference: %d of %d images could not be read and were skipped", result.skipped, total)
    return result


def _infer(model: nn.Module, dataset: Dataset, *, device: torch.device, batch_size: int, num_workers: int,
           amp: bool, progress: bool) -> Predictions:  # fmt: skip
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=collate, shuffle=False)
    result = Predictions()
    start = time.perf_counter()
    for images, targets in tqdm(loader, desc="inference", disable=not progress, dynamic_ncols=True):
        if not images:
            continue
        images = [i.to(device, non_blocking=True) for i in images]
        with runtime.autocast(device, amp):
            outputs = model(images)
        for image, target, output in zip(images, targets, outputs):
            output = {k: v.float().cpu() if v.is_floating_point() else v.cpu() for k, v in output.items()}
            target, output = in_original_pixels(tuple(image.shape[-2:]), _cpu(target), output)
            result.targets.append(target)
            result.outputs.append(output)
    result.seconds = time.perf_counter() - start
    result.skipped = len(dataset) - len(result.outputs)  # type: ignore[arg-type]
    return result


def _cpu(target: dict[str, Any]) -> dict[str, Any]:
    return {k: v.cpu() if torch.is_tensor(v) else v for k, v in target.items()}
