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


def test_same_stem_in_two_folders_and_a_10x10000_strip(tmp_path: Path) -> None:
    """``a/img.jpg`` and ``b/img.png`` used to be drawn to one ``img.png`` (3 reported, 1 written); a 10×10000 strip
    used to end the run with a RuntimeError (zero-sized trunk map)."""
    import cv2
    import numpy as np

    cfg = load_config(TINY_CONFIG)
    torch.manual_seed(0)
    weights = save_checkpoint(tmp_path / "w.pth", {"model": build_detector(cfg).state_dict(), "config": cfg.to_dict(),
                                                   "classes": list(SHAPE_CLASSES)})  # fmt: skip
    rng = np.random.default_rng(0)
    for folder, name, shape in (("a", "img.jpg", (64, 80, 3)), ("b", "img.png", (64, 80, 3)),
                                ("b", "strip.png", (10, 10000, 3))):
        (tmp_path / folder).mkdir(exist_ok=True)
        assert cv2.imwrite(str(tmp_path / folder / name), rng.integers(0, 256, shape, dtype=np.uint8))
    out = tmp_path / "out"
    assert demo.main(["--weights", str(weights), "--images", str(tmp_path / "a"), str(tmp_path / "b"),
                      "--output-dir", str(out), "--device", "cpu", "--no-progress"]) == 0
    records = json.loads((out / "detections.json").read_text())
    outputs = [Path(r["output"]) for r in records]
    assert len(records) == 3 and len(set(outputs)) == 3 and all(p.is_file() for p in outputs)


def test_an_image_the_model_fails_on_is_skipped_naming_it_or_stops_under_strict(tmp_path: Path, monkeypatch,
                                                                               capsys) -> None:
    """A failure inside the model on one image (fault-injected) costs only that image; ``--strict`` stops."""
    import cv2
    import numpy as np

    from detection.modeling.faster_rcnn import FasterRCNN

    cfg = load_config(TINY_CONFIG)
    torch.manual_seed(0)
    weights = save_checkpoint(tmp_path / "w.pth", {"model": build_detector(cfg).state_dict(), "config": cfg.to_dict(),
                                                   "classes": list(SHAPE_CLASSES)})  # fmt: skip
    rng = np.random.default_rng(0)
    for name in ("a.png", "odd.png"):
        assert cv2.imwrite(str(tmp_path / name), rng.integers(0, 256, (64, 80 if name == "a.png" else 81, 3),
                                                               dtype=np.uint8))
    forward = FasterRCNN.forward

    def failing(self, images, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if images[0].shape[-1] == 81:
            raise RuntimeError("injected failure\nsecond line")
        return forward(self, images, *args, **kwargs)

    monkeypatch.setattr(FasterRCNN, "forward", failing)
    args = ["--weights", str(weights), "--images", str(tmp_path / "a.png"), str(tmp_path / "odd.png"), "--device",
            "cpu", "--no-progress"]
    assert demo.main([*args, "--output-dir", str(tmp_path / "out")]) == 0
    assert len(json.loads((tmp_path / "out" / "detections.json").read_text())) == 1
    assert demo.main([*args, "--output-dir", str(tmp_path / "strict"), "--strict"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"error: {tmp_path / 'odd.png'}: detection failed: injected failure"
