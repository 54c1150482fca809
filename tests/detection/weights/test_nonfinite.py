"""No success on NaN weights: every way weights enter the toolkit (a detector checkpoint, an ensemble member, a
backbone, a transfer source, a detectron2 or MSRA conversion) refuses a tensor holding NaN or inf, naming it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from backbones import build_resnet, load_weights
from backbones.checkpoint import CheckpointError, nonfinite_tensors, save_checkpoint
from backbones.weights import WeightsError
from detection.build import build_detector, load_detector, load_ensemble_members
from detection.config import load_config
from detection.weights.detectron2 import convert_detectron2, read_detectron2_weights
from detection.weights.transfer import load_detector_weights

ROOT = Path(__file__).resolve().parents[3]
TINY_CONFIG = ROOT / "tests" / "tiny_det.yaml"
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "detectron2_r50_c4"
POISONED = "roi_heads.predictor.bbox_pred.bias"


def checkpoint(path: Path, poison: str | None = None) -> Path:
    cfg = load_config(TINY_CONFIG)
    torch.manual_seed(0)
    state = build_detector(cfg).state_dict()
    if poison:
        state[poison] = state[poison].clone()
        state[poison].view(-1)[0] = float("nan")
    return save_checkpoint(path, {"model": state, "config": cfg.to_dict(), "classes": list("abcde")})


def test_nonfinite_tensors_names_them() -> None:
    assert nonfinite_tensors({"a": torch.ones(2), "n": torch.arange(3)}) is None
    found = nonfinite_tensors({"a": torch.tensor([1.0, float("inf")]), "b": np.array([np.nan]), "c": torch.ones(1)})
    assert found == "2 tensors hold NaN/inf: a, b"


def test_detector_checkpoint_and_ensemble_member_with_a_nan_weight_are_refused(tmp_path: Path) -> None:
    good, bad = checkpoint(tmp_path / "good.pth"), checkpoint(tmp_path / "bad.pth", POISONED)
    with pytest.raises(CheckpointError, match=f"bad.pth: 1 tensor holds NaN/inf: {POISONED}"):
        load_detector(bad)
    _, cfg, classes = load_detector(good)
    with pytest.raises(CheckpointError, match=f"bad.pth: 1 tensor holds NaN/inf: {POISONED}"):
        load_ensemble_members([bad], cfg, classes, None, [])
    with pytest.raises(CheckpointError, match="NaN/inf"):
        load_detector_weights(build_detector(cfg), bad, classes=classes)


def test_test_det_with_a_nan_checkpoint_is_one_line(tmp_path: Path) -> None:
    """It used to report mAP 0 with exit code 0."""
    bad = checkpoint(tmp_path / "bad.pth", POISONED)
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "test_det.py"), "--weights", str(bad), "--dataset",
                           "shapes", "--data-root", str(tmp_path / "none"), "--output-dir", str(tmp_path / "out"),
                           "--device", "cpu"], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (f"error: cannot load checkpoint {bad}: 1 tensor holds NaN/inf: "
                                                     f"{POISONED}")


def test_backbone_weights_with_inf_are_refused() -> None:
    net = build_resnet(18, base_width=8)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    state["layer1.0.conv1.weight"].view(-1)[3] = float("inf")
    with pytest.raises(WeightsError, match="1 tensor holds NaN/inf: layer1.0.conv1.weight"):
        load_weights(build_resnet(18, base_width=8), state)


def test_detectron2_conversion_refuses_nan() -> None:
    weights = dict(read_detectron2_weights(FIXTURE / "model_final.pkl"))
    key = "roi_heads.box_predictor.bbox_pred.bias"
    weights[key] = torch.as_tensor(weights[key]).clone().float()
    weights[key][0] = float("nan")
    cfg = load_config(ROOT / "configs" / "detectron2" / "faster_rcnn_R_50_C4_1x.yaml")
    with pytest.raises(ValueError, match=f"refusing to convert: 1 tensor holds NaN/inf: {key}"):
        convert_detectron2(weights, cfg)
