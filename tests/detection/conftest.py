"""Fixtures shared by the detection tests."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor


@pytest.fixture
def pool_inputs() -> tuple[Tensor, list[Tensor]]:
    """A stride-16 feature map ``[2, 8, 12, 16]`` and per-image xyxy boxes (one reaching past the map's edge) for
    the RoI poolers and the box heads built on them."""
    g = torch.Generator().manual_seed(0)
    features = torch.randn(2, 8, 12, 16, generator=g)
    boxes = [
        torch.tensor([[3.0, 5.0, 100.0, 80.0], [0.0, 0.0, 250.0, 190.0]]),
        torch.tensor([[20.5, 7.25, 60.0, 33.0]]),
    ]
    return features, boxes
