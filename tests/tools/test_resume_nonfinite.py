"""``--resume`` from a checkpoint holding a NaN or inf weight is refused in one line naming the file and the tensor,
for the detector (``tools/train_det.py``: exit code 1), the classifier and the localiser: they share
``backbones.loop.TrainLoop.resume``. Training on would only spread the NaN (and score mAP 0 at the end)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from backbones.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from tests.tools.conftest import ROOT, TINY_CONFIG, tool_env
from tests.tools.test_train_cls import _args as cls_args
from tests.tools.test_train_cls import tiny_cifar as tiny_cifar  # noqa: F401 - the module-scoped fixture
from tests.tools.test_train_loc import TINY as LOC_TINY
from tests.tools.test_train_loc import one_thread as one_thread  # noqa: F401 - fixture
from tests.tools.test_train_loc import pipeline as pipeline  # noqa: F401 - fixture


def poison(path: Path, value: float = float("nan")) -> str:
    """Put one NaN (or ``value``) into the checkpoint's first floating-point weight, saved as a real checkpoint;
    returns the weight's name."""
    ckpt = load_checkpoint(path)
    name = next(k for k, v in ckpt["model"].items() if v.is_floating_point() and v.numel() > 1)
    tensor = ckpt["model"][name].contiguous().clone()
    tensor.view(-1)[1] = value
    ckpt["model"][name] = tensor
    save_checkpoint(path, ckpt)
    return name


def tool(name: str):  # noqa: ANN201
    spec = importlib.util.spec_from_file_location(f"{name}_tool", ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_detector_refuses_to_resume_from_a_nan_weight(tiny_shapes: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    args = ["--dataset", "shapes", "--data-root", str(tiny_shapes), "--output-dir", str(out), "--config",
            str(TINY_CONFIG), "--device", "cpu", "--no-progress", "--no-eval", "solver.max_iter=3"]  # fmt: skip
    train_det = tool("train_det")
    assert train_det.main(args) == 0
    name = poison(out / "model_0000003.pth")
    assert train_det.main([*args, "--resume"]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: cannot load checkpoint {out / 'model_0000003.pth'}: 1 tensor holds NaN/inf: {name}; resume from an "
        "earlier checkpoint (move this one away)")


def test_the_classifier_refuses_to_resume_from_an_inf_weight(tiny_cifar: Path, tmp_path: Path) -> None:  # noqa: F811
    out = tmp_path / "cls"
    common = ("--iters", "4", "--eval-every", "4", "--ckpt-every", "4")
    tool("train_cls").main(cls_args(tiny_cifar, out, *common))
    name = poison(out / "checkpoint_0000004.pth", float("inf"))
    with pytest.raises(CheckpointError, match=rf"checkpoint_0000004\.pth: 1 tensor holds NaN/inf: {name};"):
        tool("train_cls").main(cls_args(tiny_cifar, out, *common, "--resume"))
    # The command line says the same in one line (exit code 1), no traceback.
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "train_cls.py"),
                           *cls_args(tiny_cifar, out, *common, "--resume")],
                          env=tool_env(), capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(f"error: cannot load checkpoint {out}")


def test_the_localiser_refuses_to_resume_from_a_nan_weight(pipeline: tuple[Path, Path], capsys) -> None:  # noqa: F811
    root, tmp = pipeline
    out = tmp / "rpn_nan"
    args = ["rpn", "--data-root", str(root), "--no-progress", "--output-dir", str(out),
            f"net.weights={tmp / 'cls' / 'model_final.pth'}", "solver.max_iter=4", *LOC_TINY]  # fmt: skip
    train_loc = tool("train_loc")
    assert train_loc.main(args) == 0
    newest = sorted(out.glob("model_0*.pth"))[-1]  # the one --resume takes
    name = poison(newest)
    assert train_loc.main([*args, "--resume"]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: cannot load checkpoint {newest}: 1 tensor holds NaN/inf: {name}; resume from an earlier checkpoint "
        "(move this one away)")
    assert torch.isnan(load_checkpoint(newest)["model"][name]).any()  # left as it was
