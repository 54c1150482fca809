import torch

from detection.anchors import AnchorGenerator, cell_anchors, grid_anchors


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
