"""detection/engine/run.py: ``model.weights`` starts training from another detector's checkpoint (COCO → VOC
fine-tuning, in miniature), reporting what was loaded; ``--resume`` does not reload it."""

from __future__ import annotations

from pathlib import Path

import torch

from backbones.checkpoint import load_checkpoint, save_checkpoint
from detection import build_detector
from detection.engine.run import RunOptions, train


def test_model_weights_initialise_training_from_a_detector_checkpoint(
    tmp_path: Path, shapes_root: Path, tiny_config
) -> None:
    source_cfg = tiny_config("num_classes=3")
    torch.manual_seed(5)
    source = build_detector(source_cfg)
    # A "COCO" detector with two of the shapes classes, under other spellings and order, and one other class.
    source_classes = ["Triangle", "zebra", "circle"]
    path = save_checkpoint(tmp_path / "coco.pth", {"model": source.state_dict(), "config": source_cfg.to_dict(),
                                                    "classes": source_classes})  # fmt: skip
    cfg = tiny_config("solver.max_iter=1", "solver.checkpoint_period=1", f"model.weights={path}")
    opts = RunOptions(dataset="shapes", data_root=shapes_root, output_dir=tmp_path / "run", device="cpu",
                      progress=False, evaluate=False)  # fmt: skip
    train(cfg, opts)
    log = (tmp_path / "run" / "log.txt").read_text()
    assert f"detector weights from {path}" in log and "2 shared classes" in log
    final = load_checkpoint(tmp_path / "run" / "model_final.pth")["model"]
    frozen = "trunk.body.conv1.weight"  # frozen (freeze_at 2): still exactly the source's after training
    assert torch.equal(final[frozen], source.state_dict()[frozen])
