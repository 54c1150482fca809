import cv2
import numpy as np
import pytest

from detection.data.errors import DatasetError, UnreadableImageError
from detection.data.io import read_image, safe_join


def test_reads_rgb(tmp_path):
    pixels = np.zeros((10, 20, 3), np.uint8)
    pixels[..., 2] = 255  # red in OpenCV's BGR
    cv2.imwrite(str(tmp_path / "red.png"), pixels)
    image, size = read_image(tmp_path / "red.png")
    assert image.shape == (10, 20, 3) and image.dtype == np.uint8 and size == (10, 20)
    assert image[0, 0].tolist() == [255, 0, 0]


def test_grayscale_rgba_and_16bit_become_8bit_rgb(tmp_path):
    cv2.imwrite(str(tmp_path / "gray.jpg"), np.full((8, 9), 100, np.uint8))
    cv2.imwrite(str(tmp_path / "rgba.png"), np.dstack([np.full((8, 9, 3), 50, np.uint8), np.zeros((8, 9), np.uint8)]))
    cv2.imwrite(str(tmp_path / "deep.png"), np.full((8, 9), 40000, np.uint16))
    for name, value in (("gray.jpg", 100), ("rgba.png", 50), ("deep.png", 40000 >> 8)):
        image, size = read_image(tmp_path / name)
        assert image.shape == (8, 9, 3) and image.dtype == np.uint8 and size == (8, 9), name
        assert abs(int(image[4, 4, 0]) - value) <= 2, name


def test_huge_image_is_decoded_reduced(tmp_path):
    pixels = np.zeros((40, 12000, 3), np.uint8)
    pixels[:, 6000:] = 200
    cv2.imwrite(str(tmp_path / "wide.jpg"), pixels)
    image, size = read_image(tmp_path / "wide.jpg")
    assert size == (40, 12000) and max(image.shape[:2]) <= 10_000
    assert image.shape[1] / image.shape[0] == pytest.approx(300, rel=0.02)
    image, _ = read_image(tmp_path / "wide.jpg", max_side=1000)
    assert image.shape[1] == 1000 and image[:, -10:].min() > 150 and image[:, :10].max() < 50


@pytest.mark.parametrize("case", ["zero-byte", "truncated", "not-an-image", "missing"])
def test_unreadable_files_name_the_file(tmp_path, case):
    path = tmp_path / f"{case}.jpg"
    if case == "zero-byte":
        path.write_bytes(b"")
    elif case == "truncated":
        ok, data = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
        path.write_bytes(data.tobytes()[: len(data) // 2])
    elif case == "not-an-image":
        path.write_text("hello, I am a text file")
    with pytest.raises(UnreadableImageError, match=f"{case}.jpg"):
        read_image(path)


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "a/../../b.jpg", ".."])
def test_safe_join_refuses_escapes(tmp_path, name):
    with pytest.raises(DatasetError, match="escapes the dataset root"):
        safe_join(tmp_path, name)


def test_safe_join_allows_subfolders(tmp_path):
    assert safe_join(tmp_path, "sub/./x.jpg") == tmp_path / "sub" / "x.jpg"
    assert safe_join(tmp_path, "sub/../x.jpg") == tmp_path / "x.jpg"
