"""tools/demo.py in process on a tiny checkpoint: ``--config`` replaces the checkpoint's config, ``--amp`` runs under
autocast (bf16 on the CPU) and still writes float boxes and scores."""

from __future__ import annotations

import json
from pathlib import Path

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
