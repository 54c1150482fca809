"""Video through the Predictor (detection/deploy/video.py, ``Predictor.stream``) on a short clip the test writes
with OpenCV: every frame read and predicted in order, batched or not, the annotated copy with the same size, frame
count and frame rate; frames that fail to decode are skipped and counted; a file that is not a video is one line."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from backbones.checkpoint import save_checkpoint
from detection import build_detector, load_config
from detection.deploy.predictor import Predictor
from detection.deploy.video import VideoError, VideoReader, annotate_video, open_video

ROOT = Path(__file__).resolve().parents[3]
SIZE, FRAMES, FPS = (96, 72), 7, 12.0


def write_clip(path: Path, frames: int = FRAMES, size: tuple[int, int] = SIZE, fps: float = FPS) -> Path:
    """A square sliding over a grey background, ``frames`` long (mp4v)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    assert writer.isOpened()
    for i in range(frames):
        frame = np.full((size[1], size[0], 3), 90, np.uint8)
        cv2.rectangle(frame, (5 + 8 * i, 20), (35 + 8 * i, 50), (20, 200, 240), -1)
        writer.write(frame)
    writer.release()
    return path


@pytest.fixture(scope="module")
def predictor(tmp_path_factory: pytest.TempPathFactory) -> Predictor:
    cfg = load_config(ROOT / "tests" / "tiny_det.yaml", ["model.roi_heads.score_thresh=0.0"])
    torch.manual_seed(0)
    weights = save_checkpoint(tmp_path_factory.mktemp("w") / "w.pth", {
        "model": build_detector(cfg).state_dict(), "config": cfg.to_dict(), "classes": list("abcde")})
    return Predictor(weights, device="cpu")


def test_a_written_clip_reads_back_frame_by_frame(tmp_path: Path) -> None:
    reader = open_video(write_clip(tmp_path / "clip.mp4"))
    assert (reader.info.width, reader.info.height, reader.info.frame_count) == (*SIZE, FRAMES)
    assert reader.info.fps == pytest.approx(FPS)
    frames = list(reader)
    assert len(frames) == FRAMES and reader.failed == 0 and frames[0].shape == (SIZE[1], SIZE[0], 3)


def test_stream_yields_one_result_per_frame_batched_or_not(tmp_path: Path, predictor: Predictor) -> None:
    clip = write_clip(tmp_path / "clip.mp4")
    frames = list(open_video(clip))
    one_by_one = [predictor(frame) for frame in frames]
    assert sum(len(r) for r in one_by_one) > 0
    for batched in (list(predictor.stream(clip, batch_size=3)), list(predictor.stream(iter(frames), batch_size=2))):
        assert len(batched) == FRAMES
        for a, b in zip(one_by_one, batched):
            assert len(a) == len(b) and torch.equal(a.labels, b.labels)
            torch.testing.assert_close(a.boxes, b.boxes, atol=1e-3, rtol=0)
            torch.testing.assert_close(a.scores, b.scores, atol=1e-5, rtol=0)


def test_the_annotated_video_keeps_size_frame_count_and_rate(tmp_path: Path, predictor: Predictor) -> None:
    clip = write_clip(tmp_path / "street.mp4")
    done = annotate_video(predictor, clip, tmp_path / "out", score_thresh=0.0, batch_size=2, progress=False)
    assert done.output == tmp_path / "out" / "street.mp4" and (done.frames, done.failed) == (FRAMES, 0)
    assert done.fps > 0 and not (tmp_path / "out" / "street.partial.mp4").exists()
    written = open_video(done.output)
    assert (written.info.width, written.info.height, written.info.frame_count) == (*SIZE, FRAMES)
    assert written.info.fps == pytest.approx(FPS) and len(list(written)) == FRAMES
    assert not np.array_equal(next(iter(open_video(done.output))), next(iter(open_video(clip)))), "boxes drawn"


class FlakyCapture:
    """A capture whose frames at ``bad`` fail to decode; ``stated`` is the frame count it reports."""

    def __init__(self, frames: int, bad: set[int], stated: int) -> None:
        self.frames, self.bad, self.stated, self.position = frames, bad, stated, 0

    def get(self, prop: int) -> float:
        return {cv2.CAP_PROP_FRAME_COUNT: self.stated, cv2.CAP_PROP_FPS: 25.0, cv2.CAP_PROP_FRAME_WIDTH: 8,
                cv2.CAP_PROP_FRAME_HEIGHT: 6}.get(prop, 0.0)  # fmt: skip

    def read(self) -> tuple[bool, np.ndarray | None]:
        index, self.position = self.position, self.position + 1
        if index >= self.frames or index in self.bad:
            return False, None
        return True, np.full((6, 8, 3), index, np.uint8)

    def release(self) -> None:
        pass


def test_frames_that_fail_to_decode_are_skipped_and_counted() -> None:
    reader = VideoReader(FlakyCapture(6, bad={1, 4, 5}, stated=6), "flaky")
    assert [int(f[0, 0, 0]) for f in reader] == [0, 2, 3] and reader.failed == 3
    # A frame count that was only an estimate: the file ends early, and the missing frames are not "failed".
    reader = VideoReader(FlakyCapture(4, bad={2}, stated=100), "estimated")
    assert [int(f[0, 0, 0]) for f in reader] == [0, 1, 3] and reader.failed == 1


def test_a_file_that_is_not_a_video_is_one_line(tmp_path: Path, predictor: Predictor) -> None:
    fake = tmp_path / "notes.mp4"
    fake.write_text("not a video\n")
    for source, expected in ((fake, f"{fake}: not a video OpenCV can read"),
                             (tmp_path / "missing.mp4", f"{tmp_path / 'missing.mp4'}: no such file")):
        with pytest.raises(VideoError) as info:
            list(predictor.stream(source))
        assert str(info.value) == expected
