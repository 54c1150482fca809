"""Box-aware augmentation with albumentations.

Training: resize so the shorter side is ``s`` (drawn from ``min_sizes``) unless the longer side would exceed
``max_size`` (then the longer side is ``max_size``), and horizontal flip. Evaluation: no resize by default, because
the model resizes at test time. Boxes are xyxy float32 in continuous pixel coordinates (``pascal_voc`` format in
albumentations' terms); images go in as RGB ``uint8 [H, W, 3]`` and come out as float32 ``[3, H, W]`` in [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import albumentations as A
import numpy as np
import torch
import torch.utils.data
from albumentations.augmentations.geometric.resize import MaxSizeTransform

from detection.modeling.boxes import resize_scale


class ShortestEdgeResize(MaxSizeTransform):
    """Scale by :func:`detection.modeling.boxes.resize_scale` (the model's test-time rule) with the shorter side
    ``s`` drawn
    at random from ``min_sizes``.

    One resize (the library's ``SmallestMaxSize`` + ``LongestMaxSize`` would interpolate twice, and the latter
    also enlarges small images).
    """

    def __init__(self, min_sizes: Sequence[int], max_size: int, p: float = 1.0) -> None:
        super().__init__(max_size=list(min_sizes), p=p)
        self.min_sizes = tuple(int(s) for s in min_sizes)
        self.longest = int(max_size)

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        height, width = params["shape"][:2]
        shorter = self.py_random.choice(self.min_sizes)
        return {"scale": resize_scale(height, width, shorter, self.longest)}


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """RGB ``uint8 [H, W, 3]`` → float32 ``[3, H, W]`` in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(255.0)


class DetectionTransform:
    """Callable ``(image uint8 [H,W,3], boxes float32 [N,4] xyxy) -> (image tensor [3,H',W'], boxes [N',4], kept)``.

    ``kept`` (int64 ``[N']``) indexes the input boxes that survived, so labels and flags can follow them.
    """

    def __init__(self, transforms: list[A.BasicTransform], *, seed: int | None = None) -> None:
        self._seeded = seed is not None
        self._worker_seed: int | None = None
        self.compose: A.Compose | None = None
        if transforms:
            self.compose = A.Compose(
                transforms,
                bbox_params=A.BboxParams(format="pascal_voc", label_fields=["index"], clip=True),
                seed=seed,
            )

    def set_random_seed(self, seed: int) -> None:
        """Reseed the augmentation RNG (used by the trainer for exactly reproducible augmentations)."""
        self._seeded = True
        if self.compose is not None:
            self.compose.set_random_seed(seed)

    def _reseed_in_worker(self) -> None:
        # Forked DataLoader workers inherit one RNG state; without a seed of our own, take the worker's.
        info = torch.utils.data.get_worker_info()
        if info is not None and not self._seeded and self._worker_seed != info.seed and self.compose is not None:
            self.compose.set_random_seed(info.seed % 2**32)
            self._worker_seed = info.seed

    def __call__(self, image: np.ndarray, boxes: np.ndarray) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        if self.compose is None:
            return to_tensor(image), boxes, np.arange(len(boxes))
        self._reseed_in_worker()
        out = self.compose(image=image, bboxes=boxes, index=np.arange(len(boxes)))
        new_boxes = np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4)
        kept = np.asarray(out["index"], dtype=np.int64).reshape(-1)
        return to_tensor(out["image"]), new_boxes, kept

    def __repr__(self) -> str:
        steps = self.compose.transforms if self.compose is not None else []
        return f"DetectionTransform({steps!r})"


def build_transforms(
    train: bool,
    min_sizes: tuple[int, ...] = (600,),
    max_size: int = 1000,
    flip_prob: float = 0.5,
    resize_in_eval: bool = False,
    seed: int | None = None,
) -> DetectionTransform:
    """The detector's input pipeline.

    ``train=True``: :class:`ShortestEdgeResize` (shorter side ∈ ``min_sizes``, longer ≤ ``max_size``) and
    horizontal flip with probability ``flip_prob``. ``train=False``: nothing but the tensor conversion, unless
    ``resize_in_eval`` (then the resize with the first of ``min_sizes``).
    """
    if isinstance(min_sizes, int):
        min_sizes = (min_sizes,)
    transforms: list[A.BasicTransform] = []
    if train:
        transforms.append(ShortestEdgeResize(min_sizes, max_size))
        if flip_prob > 0:
            transforms.append(A.HorizontalFlip(p=flip_prob))
    elif resize_in_eval:
        transforms.append(ShortestEdgeResize(min_sizes[:1], max_size))
    return DetectionTransform(transforms, seed=seed)
