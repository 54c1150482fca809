"""Anchors: A = len(sizes)·len(aspect_ratios) boxes per position of the stride-16 conv4 map."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def cell_anchors(sizes: list[float], aspect_ratios: list[float], round_to_pixels: bool = True) -> Tensor:
    """``[A, 4]`` xyxy anchors centred on (0, 0), ordered ratio-major: for each ratio, every size.

    An anchor of size s and ratio r = h/w has area s² (w = s/√r, h = s·√r), rounded to whole pixels as
    Faster R-CNN's anchors are; with ``round_to_pixels=False`` the sides stay exact, computed as detectron2's
    ``DefaultAnchorGenerator`` does (w = √(s²/r), h = r·w in float64, then float32), so its anchors are ours bit
    for bit (detectron2 orders them size-major; ``detection.weights.detectron2`` reorders its RPN weights instead).
    """
    if not round_to_pixels:
        exact = []
        for ratio in aspect_ratios:
            for size in sizes:
                w = math.sqrt(size**2.0 / ratio)
                h = ratio * w
                exact.append([-w / 2.0, -h / 2.0, w / 2.0, h / 2.0])
        return torch.tensor(exact, dtype=torch.float32)
    scales = torch.as_tensor(sizes, dtype=torch.float32)
    ratios = torch.as_tensor(aspect_ratios, dtype=torch.float32)
    h_ratio = torch.sqrt(ratios)
    ws = (scales[None, :] / h_ratio[:, None]).reshape(-1)
    hs = (scales[None, :] * h_ratio[:, None]).reshape(-1)
    return (torch.stack((-ws, -hs, ws, hs), dim=1) / 2).round()


def grid_anchors(cells: Tensor, height: int, width: int, stride: int, offset: float = 0.0) -> Tensor:
    """All anchors of an ``height × width`` feature map: ``[height·width·A, 4]``, ordered (y, x, anchor),
    the anchor of cell (y, x) centred at pixel ((x + offset)·stride, (y + offset)·stride) of the input image
    (offset 0: Faster R-CNN's and detectron2's default; 0.5: the centre of the cell's stride × stride block)."""
    device = cells.device
    shift_x = torch.arange(width, dtype=torch.float32, device=device) * stride
    shift_y = torch.arange(height, dtype=torch.float32, device=device) * stride
    if offset:
        shift_x, shift_y = shift_x + offset * stride, shift_y + offset * stride
    sy, sx = torch.meshgrid(shift_y, shift_x, indexing="ij")
    shifts = torch.stack((sx, sy, sx, sy), dim=-1).reshape(-1, 1, 4)
    return (shifts + cells.reshape(1, -1, 4)).reshape(-1, 4)


class AnchorGenerator:
    """Caches the grid of anchors per feature-map size (sizes repeat across iterations)."""

    def __init__(
        self,
        sizes: list[float],
        aspect_ratios: list[float],
        stride: int = 16,
        *,
        offset: float = 0.0,
        round_to_pixels: bool = True,
    ) -> None:
        if not 0.0 <= offset < 1.0:
            raise ValueError(f"the anchor offset is a fraction of the stride in [0, 1), got {offset}")
        self.cells = cell_anchors(sizes, aspect_ratios, round_to_pixels)
        self.stride = stride
        self.offset = offset
        self._cache: dict[tuple[int, int, str], Tensor] = {}

    @property
    def num_anchors(self) -> int:
        return self.cells.shape[0]

    def __call__(self, height: int, width: int, device: torch.device) -> Tensor:
        if torch.compiler.is_compiling():  # torch.export / compile: sizes may be symbolic, no cache keys by them
            return grid_anchors(self.cells.to(device), height, width, self.stride, self.offset)
        key = (height, width, str(device))
        if key not in self._cache:
            if len(self._cache) > 64:
                self._cache.clear()
            self._cache[key] = grid_anchors(self.cells.to(device), height, width, self.stride, self.offset)
        return self._cache[key]
