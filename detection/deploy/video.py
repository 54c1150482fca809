"""Video in and out with OpenCV: frames from a file or a camera, annotated frames to an ``.mp4``.

    reader = open_video("street.mp4")            # or open_video(0): the first camera
    with VideoOutput("out/street.mp4", reader.info) as out:
        for frame in reader:                      # BGR uint8 [H, W, 3], decoded frames only
            out.write(frame)
    print(reader.failed, "frames could not be decoded and were skipped")

``annotate_video`` runs a :class:`~detection.deploy.predictor.Predictor` over a video and writes it with the boxes
drawn (``tools/demo.py --video``). Frames are BGR arrays throughout, as OpenCV reads and writes them.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import cv2
import numpy as np

__all__ = ["VideoError", "VideoInfo", "VideoOutput", "VideoReader", "VideoSummary", "annotate_video", "open_video"]

logger = logging.getLogger(__name__)
FAILURES_IN_A_ROW = 25  # a file that stops decoding for this many frames has ended (or is broken beyond use)
CAMERA_FPS = 30.0  # what a camera that reports no rate is written at


class VideoError(ValueError):
    """A video that cannot be opened or written; the message is one line naming it."""


@dataclass(frozen=True)
class VideoInfo:
    """``width`` × ``height`` pixels, ``fps`` frames per second, ``frame_count`` (-1 when unknown: a camera)."""

    width: int
    height: int
    fps: float
    frame_count: int


class VideoReader:
    """Iterate a capture's frames (BGR ``uint8 [H, W, 3]``). A frame that fails to decode is skipped and counted in
    ``failed``; a file ends at its stated frame count, or after ``FAILURES_IN_A_ROW`` failures in a row (then
    not counted: the count was an estimate); a camera ends at its first failure. ``capture`` is a
    ``cv2.VideoCapture`` (or anything with its ``read``, ``get`` and ``release``)."""

    def __init__(self, capture: Any, name: str, *, camera: bool = False) -> None:
        self.capture, self.name, self.camera = capture, name, camera
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        fps = float(capture.get(cv2.CAP_PROP_FPS))
        self.info = VideoInfo(
            width=int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), height=int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            fps=fps if fps > 0 else CAMERA_FPS, frame_count=count if count > 0 and not camera else -1,
        )
        self.read = 0
        self.failed = 0

    def __iter__(self) -> Iterator[np.ndarray]:
        known = self.info.frame_count
        position = pending = 0  # pending: failures since the last decoded frame
        while known < 0 or position < known:
            ok, frame = self.capture.read()
            position += 1
            if ok and frame is not None:
                self.failed += pending
                pending = 0
                self.read += 1
                yield frame
            elif self.camera or known < 0:
                return
            else:
                pending += 1
                if pending >= FAILURES_IN_A_ROW:  # the stated frame count was an estimate: the file has ended
                    return
        self.failed += pending  # the count was reached: those were frames, and they did not decode

    def close(self) -> None:
        self.capture.release()


def open_video(source: str | int | Path) -> VideoReader:
    """A reader for a video file or a camera (an ``int``, or a string of digits: ``"0"``). Raises
    :class:`VideoError` (one line) for a missing file, a file that is not a video, or a camera that does not open."""
    camera = isinstance(source, int) or str(source).isdigit()
    if camera:
        capture = cv2.VideoCapture(int(source))
        if not capture.isOpened():
            raise VideoError(f"camera {source} cannot be opened (no such device, or it is in use)")
        return VideoReader(capture, f"camera{int(source)}", camera=True)
    path = Path(source)
    if not path.is_file():
        raise VideoError(f"{path}: no such file")
    capture = cv2.VideoCapture(str(path))
    ok = capture.isOpened() and capture.get(cv2.CAP_PROP_FRAME_WIDTH) > 0
    if not ok:
        capture.release()
        raise VideoError(f"{path}: not a video OpenCV can read")
    return VideoReader(capture, path.stem)


class VideoOutput:
    """An ``.mp4`` (``mp4v``) written to ``<path>.partial.mp4`` and renamed to ``path`` on a clean close, so an
    interrupted run leaves no file under the final name. Frames must be BGR ``uint8`` of ``info``'s size."""

    def __init__(self, path: str | Path, info: VideoInfo) -> None:
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.stem + ".partial.mp4")
        self.size = (info.width, info.height)
        self.frames = 0
        self.writer = cv2.VideoWriter(str(self.partial), cv2.VideoWriter_fourcc(*"mp4v"), info.fps, self.size)
        if not self.writer.isOpened():
            raise VideoError(f"{self.path}: cannot write an mp4v video here (folder not writable, or no encoder)")

    def write(self, frame: np.ndarray) -> None:
        if (frame.shape[1], frame.shape[0]) != self.size:
            raise VideoError(f"{self.path}: frame of {frame.shape[1]}×{frame.shape[0]}, the video is "
                             f"{self.size[0]}×{self.size[1]}")
        self.writer.write(frame)
        self.frames += 1

    def __enter__(self) -> VideoOutput:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.writer.release()
        if kind is None and self.frames:
            self.partial.replace(self.path)
        else:
            self.partial.unlink(missing_ok=True)


@dataclass
class VideoSummary:
    """What ``annotate_video`` did: frames written, frames that failed to decode, seconds, frames per second."""

    output: Path
    frames: int
    failed: int
    seconds: float

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def has_display() -> bool:
    """Whether a window can be opened (an X11 / Wayland display on Linux; assumed elsewhere)."""
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def annotate_video(predictor: Any, source: str | int | Path, output_dir: Path, *, score_thresh: float = 0.5,
                   batch_size: int = 1, show: bool = False, progress: bool = True) -> VideoSummary:  # fmt: skip
    """Run ``predictor`` (a :class:`~detection.deploy.predictor.Predictor`) on every frame of ``source`` and write
    ``output_dir/<name>.mp4`` (the same size, frame count and frame rate) with the detections drawn. ``show``
    also opens a window (``q`` or Esc stops); without a display that is one logged note and the run goes on."""
    from tqdm import tqdm

    from detection.deploy.visualize import draw_detections

    reader = open_video(source)
    if show and not has_display():
        logger.warning("--show: no display here (DISPLAY is not set); writing the video only")
        show = False
    output_dir.mkdir(parents=True, exist_ok=True)
    output = output_dir / f"{reader.name}.mp4"
    total = reader.info.frame_count if reader.info.frame_count > 0 else None
    start = time.perf_counter()
    try:
        with VideoOutput(output, reader.info) as out, tqdm(total=total, desc=reader.name, unit="frame",
                                                           disable=not progress) as bar:  # fmt: skip
            for frame, result in predictor.stream(reader, batch_size=batch_size, frames_too=True):
                rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                drawn = draw_detections(rgb, result.boxes, result.scores, result.labels, predictor.classes,
                                        score_thresh)  # fmt: skip
                drawn = cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR)
                out.write(drawn)
                bar.update(1)
                if show:
                    show = _show(reader.name, drawn)
                    if show is None:
                        break
    finally:
        reader.close()
        if show:
            cv2.destroyAllWindows()
    if reader.failed:
        logger.warning("%s: %d frames could not be decoded and were skipped", reader.name, reader.failed)
    return VideoSummary(output, out.frames, reader.failed, time.perf_counter() - start)


def _show(name: str, frame: np.ndarray) -> bool | None:
    """Show ``frame``; False when no window can be opened (logged once), None when the user asked to stop."""
    try:
        cv2.imshow(name, frame)
        key = cv2.waitKey(1) & 0xFF
    except cv2.error as exc:
        logger.warning("--show: cannot open a window (%s); writing the video only", str(exc).strip().splitlines()[-1])
        return False
    return None if key in (ord("q"), 27) else True
