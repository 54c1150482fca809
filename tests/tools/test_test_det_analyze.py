"""``tools/test_det.py --analyze`` writes the analysis report beside metrics.json (a tiny untrained model on a few
generated shapes images: the report must be complete whatever the detector's quality)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from backbones.checkpoint import save_checkpoint
from detection import build_detector, load_config
from detection.data.shapes import SHAPE_CLASSES, generate_shapes
from tools import test_det

ROOT = Path(__file__).resolve().parents[2]


def test_analyze_writes_the_report_beside_metrics(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    root = generate_shapes(tmp_path / "shapes", num_train=1, num_val=3, min_size=64, max_size=96)
    cfg = load_config(ROOT / "tests" / "tiny_det.yaml", ["model.roi_heads.score_thresh=0.0"])
    torch.manual_seed(0)
    classes = list(SHAPE_CLASSES) if cfg.num_classes == len(SHAPE_CLASSES) else [f"c{i}" for i in
                                                                                 range(cfg.num_classes)]
    weights = save_checkpoint(tmp_path / "w.pth", {"model": build_detector(cfg).state_dict(), "config": cfg.to_dict(),
                                                   "classes": classes})  # fmt: skip
    out = tmp_path / "out"
    assert test_det.main(["--weights", str(weights), "--dataset", "shapes", "--data-root", str(root), "--split",
                          "val", "--output-dir", str(out), "--device", "cpu", "--no-progress", "--analyze"]) == 0
    assert f"analysis report: {out / 'report.html'}" in capsys.readouterr().out
    assert (out / "metrics.json").is_file()
    summary = json.loads((out / "analysis.json").read_text())
    assert summary["images"] == 3 and set(summary["tide"]) >= {"cls", "loc", "miss", "false_neg"}
    assert "data:image/png;base64," in (out / "report.html").read_text()
