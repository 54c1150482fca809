"""Robust image reading with OpenCV, and path handling that keeps annotation-supplied names inside the dataset root.

Every image comes back as ``uint8 [H, W, 3]`` RGB whatever is on disk: grayscale is replicated, alpha is dropped,
16-bit is reduced to 8 bits. Images whose longer side exceeds ``max_side`` are decoded at a reduced size (libjpeg's
DCT scaling for JPEG) and then resized, so a 30k-pixel panorama never needs its full-resolution buffer kept around.

What a hostile or broken file cannot do here (each is an :class:`UnreadableImageError` naming the file, which the
datasets turn into a skipped sample with a warning, or an error under ``strict``):

- block or exhaust memory: only regular files are opened (a FIFO or device named ``x.jpg`` is refused without
  reading it), at most ``max_bytes`` of them;
- allocate gigabytes: the header's width × height is checked against ``max_pixels`` before any pixel is decoded
  (:class:`ImageTooLargeError`); OpenCV's own errors never escape as ``cv2.error``;
- go unnoticed: libjpeg's "Corrupt JPEG data" warnings (and libpng's), which the decoders print to stderr without
  a file name, are captured and logged naming the file.

EXIF orientation: pixels are decoded as stored unless the annotated size says the annotator saw the EXIF-rotated
image (``annotated_size`` equals the stored size with height and width swapped, orientation 5–8); then the rotation
is applied. Either way a log line says so. A swapped size that EXIF does not explain is an error, never papered
over by stretching boxes.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import stat
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from detection.data.errors import DatasetError, UnreadableImageError

logger = logging.getLogger(__name__)

MAX_SIDE = 10_000
# 150 megapixels: a 12k × 12k photo still loads, a PNG whose header claims 40000 × 40000 (4.8 GB decoded) does not.
MAX_PIXELS = 150_000_000
MAX_BYTES = 1 << 30  # no image file of a detection dataset comes near 1 GiB; /dev/zero renamed x.jpg does
_READ_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
_REDUCED_FLAGS = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}
_EXIF_ORIENTATION = 0x0112
_ROTATED_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that swap width and height


class ImageTooLargeError(UnreadableImageError):
    """The header announces more pixels than the configured limit; nothing was decoded."""


def safe_join(root: Path, name: str, *, what: str = "file name") -> Path:
    """``root / name``, refusing names that are absolute, climb out of ``root`` with ``..`` or hold a NUL byte.

    The check is lexical on purpose: a dataset folder that is itself a symlink to another disk stays usable, while a
    name such as ``../../etc/passwd`` taken from an annotation file is refused with a :class:`DatasetError`.
    """
    if "\x00" in name:
        raise DatasetError(f"{what} {name!r} contains a NUL byte; refused")
    normalized = os.path.normpath(name)
    if not name or os.path.isabs(name) or normalized == ".." or normalized.startswith(".." + os.sep):
        raise DatasetError(f"{what} {name!r} escapes the dataset root {root}; refused")
    return root / normalized


_PIL_LIMIT = threading.Lock()


def _header(data: bytes) -> tuple[tuple[int, int], int] | None:
    """``((height, width), EXIF orientation)`` from the header alone, or None when it cannot be parsed."""
    # PIL refuses (DecompressionBombError) to even open a header above ~179 M pixels; the limit here is ours
    # (``max_pixels``), so PIL's is lifted for the header read, which decodes no pixels.
    with _PIL_LIMIT:
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            with Image.open(io.BytesIO(data)) as im:
                width, height = im.size
                try:
                    orientation = int(im.getexif().get(_EXIF_ORIENTATION, 1))
                except Exception:  # noqa: BLE001 - a malformed EXIF block means "no orientation"
                    orientation = 1
            return (height, width), orientation
        except Exception:  # noqa: BLE001 - any header problem means "unknown"; decoding will then report the error
            return None
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def header_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) from the image header alone (no pixel decoding), or None when it cannot be parsed."""
    header = _header(data)
    return None if header is None else header[0]


def read_file(path: Path, *, max_bytes: int = MAX_BYTES) -> bytes:
    """The bytes of a regular file of at most ``max_bytes``; :class:`UnreadableImageError` naming it otherwise.

    Opened non-blocking and checked with ``fstat`` on the open descriptor: a FIFO or a device is refused before a
    single read (and without a window in which the name could be swapped for one)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        raise UnreadableImageError(f"cannot read image {path}: {getattr(exc, 'strerror', None) or exc}") from exc
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnreadableImageError(f"image {path} is not a regular file (a FIFO, device or folder); refused")
        if info.st_size > max_bytes:
            raise UnreadableImageError(f"image {path} is {info.st_size} bytes, over the {max_bytes}-byte limit")
        return f.read(max_bytes + 1)


def _is_truncated_jpeg(data: bytes) -> bool:
    # libjpeg fills a cut-off scan with grey and only warns; a complete JPEG ends with the EOI marker.
    return data[:2] == b"\xff\xd8" and not data.rstrip(b"\x00\r\n ").endswith(b"\xff\xd9")


_capture_files: dict[int, tempfile._TemporaryFileWrapper] = {}  # one per process (DataLoader workers fork)


@contextlib.contextmanager
def _decoder_messages() -> Iterator[list[str]]:
    """Collect what C code writes to file descriptor 2 inside the block: libjpeg and libpng print their warnings
    and errors there ("Corrupt JPEG data: ...") without naming the file; the caller logs them naming it."""
    lines: list[str] = []
    sink = _capture_files.get(os.getpid())
    if sink is None:
        sink = _capture_files[os.getpid()] = tempfile.TemporaryFile()
    sink.seek(0)
    sink.truncate()
    saved = os.dup(2)
    os.dup2(sink.fileno(), 2)
    try:
        yield lines
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        sink.seek(0)
        lines.extend(line.strip() for line in sink.read().decode("utf-8", "replace").splitlines() if line.strip())


def _apply_orientation(image: np.ndarray, orientation: int) -> np.ndarray:
    """Rotate/mirror stored pixels ``[H, W, C]`` as EXIF ``orientation`` 5–8 asks (PIL's ``exif_transpose``)."""
    if orientation == 5:  # transpose
        return image.transpose(1, 0, 2)
    if orientation == 6:  # rotate 90° clockwise
        return np.rot90(image, k=-1)
    if orientation == 7:  # transverse
        return np.rot90(image, k=1)[:, ::-1]
    return np.rot90(image, k=1)  # 8: rotate 90° counter-clockwise


_exif_reported: set[str] = set()  # files whose EXIF decision was logged (once per process: epochs repeat it)


def _report_once(path: Path, message: str, *args: object) -> None:
    if str(path) not in _exif_reported:
        _exif_reported.add(str(path))
        logger.info(message, path, *args)


def _orientation_to_apply(path: Path, stored: tuple[int, int], orientation: int,
                          annotated: tuple[int, int] | None) -> int:
    """The EXIF orientation to apply (1: none), deciding from the annotated (height, width); logs the decision."""
    swapped = (stored[1], stored[0])
    if orientation in _ROTATED_ORIENTATIONS and annotated is not None and annotated == swapped != stored:
        _report_once(path, "%s: EXIF orientation %d applied (the annotations give the rotated size %dx%d HxW)",
                     orientation, *annotated)
        return orientation
    if orientation != 1:
        reason = ("the annotations give the stored size" if annotated == stored
                  else "no annotated size to decide" if annotated is None
                  else "it does not change the size, so the annotations cannot tell")
        _report_once(path, "%s: EXIF orientation %d ignored (%s); pixels used as stored", orientation, reason)
    elif annotated is not None and annotated == swapped != stored:
        raise UnreadableImageError(
            f"image {path} is {stored[0]}x{stored[1]} (HxW) on disk but {annotated[0]}x{annotated[1]} in the "
            "annotations: rotated, and no EXIF orientation says how; refused rather than stretching the boxes")
    return 1


def read_image(
    path: Path,
    *,
    max_side: int = MAX_SIDE,
    max_pixels: int = MAX_PIXELS,
    max_bytes: int = MAX_BYTES,
    annotated_size: tuple[int, int] | None = None,
) -> tuple[np.ndarray, tuple[int, int]]:
    """Read an image file as RGB ``uint8 [H, W, 3]``.

    Returns ``(image, (orig_height, orig_width))``: the size of the image in the orientation returned (the stored
    size, or the EXIF-rotated one when ``annotated_size`` (H, W) asks for it, see the module docstring), which differs
    from the returned array only when the longer side exceeded ``max_side`` and it was scaled down (aspect kept).
    Raises :class:`UnreadableImageError` (naming the file) when it is missing, not a regular file, over
    ``max_bytes``, empty, truncated or not an image, and :class:`ImageTooLargeError` when its header announces more
    than ``max_pixels`` pixels (checked before decoding).
    """
    data = read_file(Path(path), max_bytes=max_bytes)
    if not data:
        raise UnreadableImageError(f"image {path} is an empty (zero-byte) file")
    if _is_truncated_jpeg(data):
        raise UnreadableImageError(f"image {path} is a truncated JPEG (no end-of-image marker)")
    header = _header(data)
    size, orientation = header if header is not None else (None, 1)
    if size is not None and size[0] * size[1] > max_pixels:
        raise ImageTooLargeError(f"image {path} is {size[1]}x{size[0]} (WxH) = {size[0] * size[1]} pixels by its "
                                 f"header, over the limit of {max_pixels} (input.max_image_pixels); not decoded")
    apply = _orientation_to_apply(Path(path), size, orientation, annotated_size) if size is not None else 1
    flags = _READ_FLAGS
    if size is not None and max(size) > max_side:
        factor = max((f for f in _REDUCED_FLAGS if max(size) / f >= max_side), default=2)
        flags = _REDUCED_FLAGS[factor] | cv2.IMREAD_IGNORE_ORIENTATION
    buffer = np.frombuffer(data, dtype=np.uint8)
    try:
        with _decoder_messages() as messages:
            image = cv2.imdecode(buffer, flags)
    except cv2.error as exc:  # e.g. OpenCV's own pixel limit, or an allocation failure
        message = str(exc).strip().splitlines()[-1] if str(exc).strip() else "cv2.error"
        raise UnreadableImageError(f"image {path} could not be decoded by OpenCV: {message}") from None
    if image is None or image.size == 0:
        said = f": {'; '.join(messages[:3])}" if messages else ""
        raise UnreadableImageError(f"image {path} could not be decoded (not an image or corrupt){said}")
    for line in messages:
        logger.warning("image %s: decoder says %r; decoded anyway, check the file", path, line)
    image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if size is None:
        size = image.shape[:2]
    if apply != 1:
        image = _apply_orientation(image, apply)
        size = (size[1], size[0])
    if max(image.shape[:2]) > max_side:
        ratio = max_side / max(image.shape[:2])
        new_wh = (max(1, round(image.shape[1] * ratio)), max(1, round(image.shape[0] * ratio)))
        image = cv2.resize(np.ascontiguousarray(image), new_wh, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(image), (int(size[0]), int(size[1]))
