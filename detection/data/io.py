"""Robust image reading with OpenCV, and path handling that keeps annotation-supplied names inside the dataset root.

Every image comes back as ``uint8 [H, W, 3]`` RGB whatever is on disk: grayscale is replicated, alpha is dropped,
16-bit is reduced to 8 bits. EXIF orientation is ignored, so pixels stay on the grid the annotations were made on.
Images whose longer side exceeds ``max_side`` are decoded at a reduced size (libjpeg's DCT scaling for JPEG) and
then resized, so a 30k-pixel panorama never needs its full-resolution buffer kept around.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from detection.data.errors import DatasetError, UnreadableImageError

MAX_SIDE = 10_000
_READ_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
_REDUCED_FLAGS = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}


def safe_join(root: Path, name: str, *, what: str = "file name") -> Path:
    """``root / name``, refusing names that are absolute or climb out of ``root`` with ``..``.

    The check is lexical on purpose: a dataset folder that is itself a symlink to another disk stays usable, while a
    name such as ``../../etc/passwd`` taken from an annotation file is refused with a :class:`DatasetError`.
    """
    normalized = os.path.normpath(name)
    if not name or os.path.isabs(name) or normalized == ".." or normalized.startswith(".." + os.sep):
        raise DatasetError(f"{what} {name!r} escapes the dataset root {root}; refused")
    return root / normalized


def header_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) from the image header alone (no pixel decoding), or None when it cannot be parsed."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
        return height, width
    except Exception:  # noqa: BLE001 - any header problem means "unknown"; decoding will then report the error
        return None


def _is_truncated_jpeg(data: bytes) -> bool:
    # libjpeg fills a cut-off scan with grey and only warns; a complete JPEG ends with the EOI marker.
    return data[:2] == b"\xff\xd8" and not data.rstrip(b"\x00\r\n ").endswith(b"\xff\xd9")


def read_image(path: Path, *, max_side: int = MAX_SIDE) -> tuple[np.ndarray, tuple[int, int]]:
    """Read an image file as RGB ``uint8 [H, W, 3]``.

    Returns ``(image, (orig_height, orig_width))``: the size of the file on disk, which differs from the returned
    image only when the file's longer side exceeded ``max_side`` and it was scaled down (aspect ratio kept).
    Raises :class:`UnreadableImageError` (naming the file) when it is missing, empty, truncated or not an image.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise UnreadableImageError(f"cannot read image {path}: {exc.strerror or exc}") from exc
    if not data:
        raise UnreadableImageError(f"image {path} is an empty (zero-byte) file")
    if _is_truncated_jpeg(data):
        raise UnreadableImageError(f"image {path} is a truncated JPEG (no end-of-image marker)")
    buffer = np.frombuffer(data, dtype=np.uint8)
    size = header_size(data)
    flags = _READ_FLAGS
    if size is not None and max(size) > max_side:
        factor = max((f for f in _REDUCED_FLAGS if max(size) / f >= max_side), default=2)
        flags = _REDUCED_FLAGS[factor] | cv2.IMREAD_IGNORE_ORIENTATION
    image = cv2.imdecode(buffer, flags)
    if image is None or image.size == 0:
        raise UnreadableImageError(f"image {path} could not be decoded (not an image or corrupt)")
    image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if size is None:
        size = image.shape[:2]
    if max(image.shape[:2]) > max_side:
        ratio = max_side / max(image.shape[:2])
        new_wh = (max(1, round(image.shape[1] * ratio)), max(1, round(image.shape[0] * ratio)))
        image = cv2.resize(image, new_wh, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(image), (int(size[0]), int(size[1]))
