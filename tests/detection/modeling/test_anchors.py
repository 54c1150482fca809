import math

import pytest
import torch

from detection.modeling.anchors import AnchorGenerator, cell_anchors, grid_anchors


def test_cell_anchors_hand_computed():
    cells = cell_anchors([32.0, 64.0], [0.5, 1.0, 2.0])
    # ratio 0.5 (h/w): w = 32/√0.5 = 45.25, h = 22.63 → half sizes rounded: 23, 11
    expected = torch.tensor([
        [-23.0, -11.0, 23.0, 11.0], [-45.0, -23.0, 45.0, 23.0],
        [-16.0, -16.0, 16.0, 16.0], [-32.0, -32.0, 32.0, 32.0],
        [-11.0, -23.0, 11.0, 23.0], [-23.0, -45.0, 23.0, 45.0],
    ])
    torch.testing.assert_close(cells, expected)


def test_grid_order_and_stride():
    cells = torch.tensor([[-8.0, -8.0, 8.0, 8.0], [-16.0, -16.0, 16.0, 16.0]])
    grid = grid_anchors(cells, height=2, width=3, stride=16)
    assert grid.shape == (2 * 3 * 2, 4)
    # order (y, x, anchor): index 1 is cell (0,0) anchor 1; index 2 is cell (0,1) anchor 0; index 6 is (1,0) a0
    torch.testing.assert_close(grid[1], torch.tensor([-16.0, -16.0, 16.0, 16.0]))
    torch.testing.assert_close(grid[2], torch.tensor([8.0, -8.0, 24.0, 8.0]))
    torch.testing.assert_close(grid[6], torch.tensor([-8.0, 8.0, 8.0, 24.0]))


def test_generator_caches():
    gen = AnchorGenerator([32.0], [1.0])
    a = gen(4, 5, torch.device("cpu"))
    assert gen(4, 5, torch.device("cpu")) is a
    assert a.shape == (20, 4) and gen.num_anchors == 1


def test_detectron2_geometry_unrounded_with_offset():
    """detectron2's DefaultAnchorGenerator: w = √(s²/r), h = r·w, not rounded; centres at (x + offset)·stride."""
    cells = cell_anchors([32.0], [0.5, 1.0, 2.0], round_to_pixels=False)
    for row, ratio in zip(cells, [0.5, 1.0, 2.0]):
        w = math.sqrt(32.0**2 / ratio)
        h = ratio * w
        torch.testing.assert_close(row, torch.tensor([-w / 2, -h / 2, w / 2, h / 2]))
    assert cells[0, 2] != cell_anchors([32.0], [0.5])[0, 2]  # 22.627 unrounded, 23 rounded
    grid = AnchorGenerator([32.0], [1.0], 16, offset=0.5, round_to_pixels=False)(2, 3, torch.device("cpu"))
    torch.testing.assert_close(grid[0], torch.tensor([-8.0, -8.0, 24.0, 24.0]))  # centred at (8, 8)
    torch.testing.assert_close(grid[4], torch.tensor([8.0, 8.0, 40.0, 40.0]))  # cell (1, 1): (24, 24)
    # Defaults unchanged: rounded, first centre at (0, 0).
    torch.testing.assert_close(AnchorGenerator([32.0], [1.0])(2, 3, torch.device("cpu"))[0],
                               torch.tensor([-16.0, -16.0, 16.0, 16.0]))
    with pytest.raises(ValueError, match="offset"):
        AnchorGenerator([32.0], [1.0], offset=1.0)
