"""Run a detector over a dataset: batched, with a progress bar, skipping unreadable images (counted) and images the
model fails on (named; ``strict``: stop at the first); sharded over the ranks of a torchrun process group when asked
(each rank a contiguous block, gathered in dataset order)."""

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

    ``skipped``: unreadable images; ``failed``: the files of images the model raised on (skipped, not scored);
    ``images_per_rank``: how many images each rank was given (one entry without sharding); ``seconds``: the wall
    time of the slowest rank."""

    targets: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[dict[str, torch.Tensor]] = field(default_factory=list)
    skipped: int = 0
    failed: list[str] = field(default_factory=list)
    stopped: str | None = None  # strict: "<file>: detection failed: <reason>" of the image that stopped this rank
    seconds: float = 0.0
    images_per_rank: list[int] = field(default_factory=list)

    @property
    def world_size(self) -> int:
        return len(self.images_per_rank)


class ImageFailedError(Exception):
    """The model raised on an image under ``strict`` (or on every image): the message names the file and the first
    line of the model's error."""


def image_name(dataset: Dataset, index: int) -> str:
    """The file of item ``index`` of ``dataset`` (through ``Subset`` and dataset unions), for messages."""
    while isinstance(dataset, Subset):
        dataset, index = dataset.dataset, int(dataset.indices[index])
    locate = getattr(dataset, "locate", None)
    if locate is not None:
        dataset, index = locate(index)
    path = getattr(dataset, "image_path", None)
    return str(path(index)) if path is not None else f"image {index}"


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]


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
    strict: bool = False,
) -> Predictions:
    """Predictions for every image of ``dataset``. With ``sharded`` (a collective: call it on every rank of the
    process group) each rank runs its block of the images (``backbones.sharding.shard_range``) and every rank
    returns all of them, in dataset order; without a process group ``sharded`` changes nothing.

    An image the model raises on (``RuntimeError`` / ``ValueError``: a map too small, out of memory, ...) is skipped
    with a warning naming its file and listed in ``failed``; with ``strict`` (or when every image fails)
    :class:`ImageFailedError` names it instead, on every rank (a rank stops at its first failure and the ranks
    still gather, so none waits forever)."""
    total = len(dataset)  # type: ignore[arg-type]
    rank = runtime.get_rank() if sharded else 0
    world_size = runtime.get_world_size() if sharded else 1
    mine = shard_range(total, rank, world_size)
    part = dataset if len(mine) == total else Subset(dataset, list(mine))
    local = _infer(model, part, device=device, batch_size=batch_size, num_workers=num_workers, amp=amp,
                   progress=progress and rank == 0, strict=strict)  # fmt: skip
    local.images_per_rank = [len(mine)]
    result = local
    if world_size > 1:
        parts = gather_in_rank_order(local)
        result = Predictions(
            targets=[t for p in parts for t in p.targets], outputs=[o for p in parts for o in p.outputs],
            skipped=sum(p.skipped for p in parts), seconds=max(p.seconds for p in parts),
            images_per_rank=[n for p in parts for n in p.images_per_rank], failed=[f for p in parts for f in p.failed],
            stopped=next((p.stopped for p in parts if p.stopped), None),
        )
    if result.stopped:
        raise ImageFailedError(result.stopped)
    if result.failed and not result.outputs:
        raise ImageFailedError(f"the model failed on every image ({len(result.failed)}); the first: "
                               f"{result.failed[0]} (its error is above)")
    if result.skipped:
        logger.warning("inference: %d of %d images could not be read and were skipped", result.skipped, total)
    if result.failed:
        logger.warning("inference: the model failed on %d of %d images, skipped (listed in failed_images)",
                       len(result.failed), total)
    return result


def _infer(model: nn.Module, dataset: Dataset, *, device: torch.device, batch_size: int, num_workers: int,
           amp: bool, progress: bool, strict: bool) -> Predictions:  # fmt: skip
    model.eval()
    loader = DataLoader(_Indexed(dataset), batch_size=batch_size, num_workers=num_workers, collate_fn=_collate,
                        shuffle=False)  # fmt: skip
    result = Predictions()
    start = time.perf_counter()
    for indices, images, targets in tqdm(loader, desc="inference", disable=not progress, dynamic_ncols=True):
        if not images:
            continue
        images = [i.to(device, non_blocking=True) for i in images]
        try:
            outputs: list[dict[str, Any] | Exception] = list(_detect(model, images, device, amp))
        except (RuntimeError, ValueError) as exc:  # one odd image must not cost the others their results
            outputs = _detect_each(model, images, device, amp) if len(images) > 1 else [exc]
        for index, image, target, output in zip(indices, images, targets, outputs):
            if isinstance(output, Exception):
                name, reason = image_name(dataset, index), _first_line(output)
                if strict:
                    result.stopped = f"{name}: detection failed: {reason}"
                    break
                logger.warning("%s: detection failed (%s); skipped", name, reason)
                result.failed.append(name)
                continue
            output = {k: v.float().cpu() if v.is_floating_point() else v.cpu() for k, v in output.items()}
            target, output = in_original_pixels(tuple(image.shape[-2:]), _cpu(target), output)
            result.targets.append(target)
            result.outputs.append(output)
        if result.stopped:
            break
    result.seconds = time.perf_counter() - start
    result.skipped = len(dataset) - len(result.outputs) - len(result.failed)  # type: ignore[arg-type]
    return result


def _detect(model: nn.Module, images: list[torch.Tensor], device: torch.device, amp: bool) -> list[dict[str, Any]]:
    with runtime.autocast(device, amp):
        return model(images)


def _detect_each(model: nn.Module, images: list[torch.Tensor], device: torch.device,
                 amp: bool) -> list[dict[str, Any] | Exception]:  # fmt: skip
    """A batch the model failed on, one image at a time: each image's output, or the error it raised."""
    outputs: list[dict[str, Any] | Exception] = []
    for image in images:
        try:
            outputs.append(_detect(model, [image], device, amp)[0])
        except (RuntimeError, ValueError) as exc:
            outputs.append(exc)
    return outputs


class _Indexed(Dataset):
    """``dataset`` whose items carry their index, so that a failure can name the image's file."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[int, Any]:
        return index, self.dataset[index]


def _collate(batch: list[tuple[int, Any]]) -> tuple[list[int], list[torch.Tensor], Any]:
    """``collate`` plus the indices of the images it kept (unreadable ones, None, are dropped)."""
    images, targets = collate([sample for _, sample in batch])
    return [index for index, sample in batch if sample is not None], images, targets


def _cpu(target: dict[str, Any]) -> dict[str, Any]:
    return {k: v.cpu() if torch.is_tensor(v) else v for k, v in target.items()}
