import numpy as np
import pytest
import torch

from detection.data.transforms import build_transforms


def _image(height: int, width: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, size=(height, width, 3), dtype=np.uint8)


def test_resize_and_flip_move_a_known_box():
    # 50x80 image, shorter side -> 100 (scale 2), then mirrored in the 160-px width: x1' = 160 - x2.
    transform = build_transforms(True, (100,), 1000, flip_prob=1.0)
    image, boxes, kept = transform(_image(50, 80), np.array([[10, 5, 30, 25], [0, 0, 80, 50]], np.float32))
    assert image.shape == (3, 100, 160) and image.dtype == torch.float32
    np.testing.assert_allclose(boxes, [[100, 10, 140, 50], [0, 0, 160, 100]], atol=1e-3)
    assert kept.tolist() == [0, 1]


def test_flip_mirrors_pixels_with_boxes():
    pixels = np.zeros((40, 60, 3), np.uint8)
    pixels[10:20, 5:15] = 255  # a white block at xyxy [5, 10, 15, 20]
    transform = build_transforms(True, (40,), 1000, flip_prob=1.0)
    image, boxes, _ = transform(pixels, np.array([[5, 10, 15, 20]], np.float32))
    np.testing.assert_allclose(boxes, [[45, 10, 55, 20]], atol=1e-3)
    assert image[:, 10:20, 45:55].min() == 1.0 and image[:, :, :45].max() == 0.0


def test_max_size_caps_the_longer_side():
    transform = build_transforms(True, (100,), 120, flip_prob=0.0)
    image, boxes, kept = transform(_image(50, 100), np.array([[0, 0, 100, 50]], np.float32))
    assert image.shape == (3, 60, 120)  # 100/50 would give 200 wide; capped to 120 (scale 1.2)
    np.testing.assert_allclose(boxes, [[0, 0, 120, 60]], atol=1e-3)


def test_shorter_side_drawn_from_tuple_and_seedable():
    transform = build_transforms(True, (32, 48, 64), 1000, flip_prob=0.5)
    sizes = set()
    for seed in range(20):
        transform.set_random_seed(seed)
        sizes.add(transform(_image(40, 60), np.zeros((0, 4), np.float32))[0].shape[1])
    assert sizes == {32, 48, 64}
    runs = []
    for _ in range(2):
        transform.set_random_seed(7)
        runs.append([transform(_image(40, 60), np.array([[1, 2, 10, 20]], np.float32))[1] for _ in range(5)])
    np.testing.assert_array_equal(np.stack(runs[0]), np.stack(runs[1]))


def test_eval_is_identity_unless_asked():
    boxes = np.array([[1.5, 2, 10, 20]], np.float32)
    image, out, kept = build_transforms(False, (100,), 1000)(_image(40, 60), boxes)
    assert image.shape == (3, 40, 60) and kept.tolist() == [0]
    np.testing.assert_array_equal(out, boxes)
    image, out, _ = build_transforms(False, (80, 100), 1000, resize_in_eval=True)(_image(40, 60), boxes)
    assert image.shape == (3, 80, 120)
    np.testing.assert_allclose(out, boxes * 2, atol=1e-3)


@pytest.mark.parametrize("train", [True, False])
def test_empty_boxes_and_value_range(train):
    image, boxes, kept = build_transforms(train, (30,), 1000)(_image(30, 30), np.zeros((0, 4), np.float32))
    assert boxes.shape == (0, 4) and kept.shape == (0,)
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
