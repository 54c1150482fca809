"""tools/demo.py in process on a tiny checkpoint: ``--config`` replaces the checkpoint's config, ``--amp`` runs under
autocast (bf16 on the CPU) and still writes float boxes and scores."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from backbones.checkpoint import save_checkpoint
from detection import build_detector, load_config
from detection.data.shapes import SHAPE_CLASSES, generate_shapes
from tools import demo

ROOT = Path(__file__).resolve().parents[2]
TINY_CONFIG = ROOT / "tests" / "tiny_det.yaml"


def test_demo_with_config_and_amp(tmp_path: Path) -> None:
    generate_shapes(tmp_path / "shapes", num_train=1, num_val=2, min_size=64, max_size=96)
    cfg = load_config(TINY_CONFIG, ["model.roi_heads.score_thresh=0.0"])
    torch.manual_seed(0)
    weights = save_checkpoint(tmp_path / "w.pth", {"model": build_detector(cfg).state_dict(), "config": cfg.to_dict(),
                                                   "classes": list(SHAPE_CLASSES)})  # fmt: skip
    out = tmp_path / "out"
    # The YAML keeps every detection (score_thresh 0); the drawing threshold 0 keeps them in detections.json.
    assert demo.main(["--weights", str(weights), "--images", str(tmp_path / "shapes" / "val"), "--output-dir", str(out),
                      "--config", str(TINY_CONFIG), "--amp", "--device", "cpu", "--no-progress", "--score-thresh", "0",
                      "model.roi_heads.score_thresh=0.0"]) == 0  # fmt: skip
    records = json.loads((out / "detections.json").read_text())
    assert len(records) == 2 and all(Path(r["output"]).is_file() for r in records)
    detections = [d for r in records for d in r["detections"]]
    assert detections and all(isinstance(d["score"], float) and d["label"] in SHAPE_CLASSES for d in detections)


def tiny_weights(tmp_path: Path) -> Path:
    cfg = load_config(TINY_CONFIG, ["model.roi_heads.score_thresh=0.0"])
    torch.manual_seed(0)
    return save_checkpoint(tmp_path / "w.pth", {"model": build_detector(cfg).state_dict(), "config": cfg.to_dict(),
                                                "classes": list(SHAPE_CLASSES)})  # fmt: skip


def test_demo_on_a_video_writes_the_same_size_frame_count_and_rate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clip = tmp_path / "clip.avi"  # another container in, mp4 out
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (80, 64))
    for i in range(5):
        writer.write(np.full((64, 80, 3), 40 * i, np.uint8))
    writer.release()
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    out = tmp_path / "out"
    assert demo.main(["--weights", str(tiny_weights(tmp_path)), "--video", str(clip), "--output-dir", str(out),
                      "--device", "cpu", "--no-progress", "--show", "--batch-size", "2"]) == 0  # fmt: skip
    printed = capsys.readouterr()
    assert re.search(rf"wrote {re.escape(str(out / 'clip.mp4'))}: 5 frames at [\d.]+ frames per second", printed.out)
    assert "no display here" in caplog.text  # --show without a display: a note, and the video is still written
    video = cv2.VideoCapture(str(out / "clip.mp4"))
    assert (video.get(cv2.CAP_PROP_FRAME_WIDTH), video.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (80, 64)
    assert (video.get(cv2.CAP_PROP_FRAME_COUNT), video.get(cv2.CAP_PROP_FPS)) == (5, 10.0)


def test_demo_on_a_file_that_is_not_a_video_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fake = tmp_path / "clip.mp4"
    fake.write_bytes(b"\x00" * 100)
    assert demo.main(["--weights", str(tiny_weights(tmp_path)), "--video", str(fake), "--output-dir",
                      str(tmp_path / "out"), "--device", "cpu"]) == 2  # fmt: skip
    assert capsys.readouterr().err.strip() == f"error: {fake}: not a video OpenCV can read"
