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


# --- hostile files: never block, never allocate what the header claims, always name the file -------------------
import logging  # noqa: E402
import os  # noqa: E402
import struct  # noqa: E402
import zlib  # noqa: E402

from PIL import Image, ImageOps  # noqa: E402

from detection.data.io import ImageTooLargeError  # noqa: E402


def fake_png(width, height):
    """A valid PNG header announcing ``width`` × ``height`` RGB pixels, with almost no pixel data."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(
        b"IEND", b"")


def test_fifo_and_device_are_refused_without_reading(tmp_path):
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)  # reading it would block forever: no writer ever comes
    with pytest.raises(UnreadableImageError, match=f"{fifo} is not a regular file"):
        read_image(fifo)
    with pytest.raises(UnreadableImageError, match="/dev/zero is not a regular file"):
        read_image("/dev/zero")  # would be read until memory runs out


def test_file_size_cap(tmp_path, write_image):
    path = write_image(tmp_path / "a.png", 32, 32)
    with pytest.raises(UnreadableImageError, match=f"{path} is {path.stat().st_size} bytes, over the 100-byte"):
        read_image(path, max_bytes=100)


@pytest.mark.parametrize("side", [40000, 60000])
def test_gigapixel_header_is_refused_before_decoding(tmp_path, side):
    """PIL refuses headers above ~179 M pixels itself (DecompressionBombError), which used to skip the size check
    and let OpenCV fail with a bare cv2.error or allocate 3–6 GB."""
    path = tmp_path / "bomb.png"
    path.write_bytes(fake_png(side, side))
    with pytest.raises(ImageTooLargeError, match=rf"{path} is {side}x{side} \(WxH\) = {side * side} pixels by its "
                                                 r"header, over the limit of 150000000"):
        read_image(path)


def test_pixel_limit_is_configurable(tmp_path, write_image):
    path = write_image(tmp_path / "a.png", 30, 40)
    assert read_image(path, max_pixels=1200)[1] == (30, 40)
    with pytest.raises(ImageTooLargeError, match="1200 pixels by its header, over the limit of 1199"):
        read_image(path, max_pixels=1199)


def test_opencv_errors_become_unreadable_image_errors(tmp_path):
    """Past our limit, OpenCV's own (2^30 pixels) raises cv2.error: it must come back naming the file."""
    path = tmp_path / "bomb.png"
    path.write_bytes(fake_png(40000, 40000))
    with pytest.raises(UnreadableImageError, match=f"image {path} could not be decoded"):
        read_image(path, max_pixels=10**10)


def test_corrupt_but_decodable_jpeg_is_reported_with_its_name(tmp_path, caplog):
    ok, data = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    data = data.tobytes()
    path = tmp_path / "damaged.jpg"
    path.write_bytes(data[:300] + bytes(200) + data[500:])  # zeroed bytes inside the scan: libjpeg warns, decodes
    with caplog.at_level(logging.WARNING, logger="detection.data.io"):
        image, size = read_image(path)
    assert size == (64, 64)
    assert any(f"image {path}: decoder says 'Corrupt JPEG data" in r.getMessage() for r in caplog.records)


def exif_jpeg(path, pixels, orientation):
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = orientation
    image.save(path, exif=exif, quality=100)
    return path


@pytest.mark.parametrize("orientation", [5, 6, 7, 8])
def test_exif_rotation_is_applied_when_the_annotated_size_is_the_rotated_one(tmp_path, orientation, caplog):
    pixels = np.random.default_rng(1).integers(0, 255, (20, 30, 3), np.uint8)
    path, other = (exif_jpeg(tmp_path / name, pixels, orientation) for name in ("r.jpg", "s.jpg"))
    displayed = np.asarray(ImageOps.exif_transpose(Image.open(path)))  # what a viewer (and the annotator) shows
    stored = np.asarray(Image.open(path).convert("RGB"))
    with caplog.at_level(logging.INFO, logger="detection.data.io"):
        image, size = read_image(path, annotated_size=(30, 20))
        # PIL and OpenCV may use different libjpeg IDCTs: equal up to rounding, and far from any other orientation.
        assert size == (30, 20) and np.abs(image.astype(int) - displayed).max() <= 3
        read_image(path, annotated_size=(30, 20))  # the next epoch: said once per file
        image, size = read_image(other, annotated_size=(20, 30))
        assert size == (20, 30) and np.abs(image.astype(int) - stored).max() <= 3
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        f"{path}: EXIF orientation {orientation} applied (the annotations give the rotated size 30x20 HxW)",
        f"{other}: EXIF orientation {orientation} ignored (the annotations give the stored size); pixels used as "
        "stored",
    ]


def test_rotated_annotation_without_exif_is_refused_not_stretched(tmp_path, write_image):
    path = write_image(tmp_path / "a.jpg", 20, 30)
    with pytest.raises(UnreadableImageError, match=r"20x30 \(HxW\) on disk but 30x20 in the annotations: rotated"):
        read_image(path, annotated_size=(30, 20))


def test_safe_join_refuses_nul_bytes(tmp_path):
    with pytest.raises(DatasetError, match="contains a NUL byte"):
        safe_join(tmp_path, "a.jpg\x00.png")
