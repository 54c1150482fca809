"""Export: onnxruntime on the CPU, and the torch.export program loaded back, give the eager model's detections on
generated images."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from backbones.checkpoint import save_checkpoint
from detection import build_detector, load_config
from detection.data.shapes import render_image
from detection.data.transforms import to_tensor
from detection.deploy.export import (
    ExportDetector,
    ExportError,
    check_onnx,
    check_program,
    export_onnx,
    export_program,
    load_program,
    run_onnx,
)


def needs_onnxruntime() -> None:
    pytest.importorskip("onnxruntime")  # the optional `export` extra: pip install -e ".[export]"

ROOT = Path(__file__).resolve().parents[3]
TINY_CONFIG = ROOT / "tests" / "tiny_det.yaml"


def tiny_model(*overrides: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_detector(load_config(TINY_CONFIG, list(overrides))).eval()


@pytest.mark.parametrize("size", [(64, 96), (70, 90)])  # as is, and resized inside the graph (shorter side → 64)
def test_onnx_matches_the_eager_model(tmp_path: Path, size: tuple[int, int]) -> None:
    needs_onnxruntime()
    model = tiny_model()
    path = export_onnx(model, tmp_path / "tiny.onnx", *size)
    rng = np.random.default_rng(0)
    images = [to_tensor(render_image(rng, *size)[0]) for _ in range(3)]
    report = check_onnx(model, path, images)
    assert report["detections"] > 0  # a random tiny model keeps many boxes above the 0.05 threshold
    boxes, scores, labels = run_onnx(path, images[0])
    with torch.no_grad():
        eager = model([images[0]])[0]
    assert boxes.shape == tuple(eager["boxes"].shape) and labels.dtype == np.int64
    np.testing.assert_allclose(boxes, eager["boxes"].numpy(), atol=1e-2)
    np.testing.assert_allclose(scores, eager["scores"].numpy(), atol=1e-4)


def test_onnx_with_roialign_and_the_papers_proposal_counts(tmp_path: Path) -> None:
    """6000 boxes before the RPN's NMS take nms_first_k's CPU loop eagerly; the export records torchvision's NMS,
    which keeps the same boxes; RoIAlign exports as ONNX RoiAlign."""
    needs_onnxruntime()
    model = tiny_model("model.roi_heads.pooler=roialign", "model.rpn.pre_nms_top_n_test=6000",
                       "model.rpn.post_nms_top_n_test=300", "input.test_min_size=320", "input.test_max_size=480")
    path = export_onnx(model, tmp_path / "roialign.onnx", 320, 480)
    images = [to_tensor(render_image(np.random.default_rng(1), 320, 480)[0])]
    assert check_onnx(model, path, images)["detections"] > 0


def test_refinement_and_voting_are_refused() -> None:
    with pytest.raises(ExportError, match="box voting and box refinement"):
        ExportDetector(tiny_model("model.roi_heads.box_voting=true"), (64, 96))


def test_detectron2_resize_is_refused() -> None:
    """``input.resize_mode=detectron2`` resizes the uint8 image with PIL, outside any graph."""
    with pytest.raises(ExportError, match="resize_mode=detectron2"):
        ExportDetector(tiny_model("input.resize_mode=detectron2"), (64, 96))


def test_empty_boxes_after_top_k_export(tmp_path: Path) -> None:
    """detectron2's empty-box rule (clip to the input, drop empty boxes after the top k) is part of the graph:
    ONNX and the torch.export program give the eager model's detections on images that get resized."""
    model = tiny_model("model.roi_heads.empty_boxes=after_top_k")
    images = [to_tensor(render_image(np.random.default_rng(i), 70, 90)[0]) for i in range(2)]
    assert check_program(model, export_program(model, tmp_path / "d2.pt2", 70, 90), images)["detections"] > 0
    if importlib.util.find_spec("onnxruntime") is not None:
        assert check_onnx(model, export_onnx(model, tmp_path / "d2.onnx", 70, 90), images)["detections"] > 0


@pytest.mark.parametrize("size", [(64, 96), (70, 90)])
def test_torch_export_program_matches_the_eager_model(tmp_path: Path, size: tuple[int, int]) -> None:
    model = tiny_model()
    path = export_program(model, tmp_path / "tiny.pt2", *size)
    rng = np.random.default_rng(0)
    images = [to_tensor(render_image(rng, *size)[0]) for _ in range(3)]
    report = check_program(model, path, images)
    assert report["detections"] > 0
    boxes, scores, labels = load_program(path)(images[0])
    with torch.no_grad():
        eager = model([images[0]])[0]
    assert boxes.shape == eager["boxes"].shape and labels.dtype == torch.int64
    torch.testing.assert_close(boxes, eager["boxes"], atol=1e-2, rtol=0)
    torch.testing.assert_close(scores, eager["scores"], atol=1e-4, rtol=0)


def test_torch_export_program_with_roialign_and_the_papers_proposal_counts(tmp_path: Path) -> None:
    """The RPN's 6000 → 300 proposals (nms_first_k records torchvision's NMS under torch.export too) and RoIAlign;
    the per-class NMS of every detection cell (300 × 5 boxes) goes through FixedSizeSelector's single NMS."""
    model = tiny_model("model.roi_heads.pooler=roialign", "model.rpn.pre_nms_top_n_test=6000",
                       "model.rpn.post_nms_top_n_test=300", "input.test_min_size=320", "input.test_max_size=480")
    path = export_program(model, tmp_path / "roialign.pt2", 320, 480)
    images = [to_tensor(render_image(np.random.default_rng(1), 320, 480)[0])]
    assert check_program(model, path, images)["detections"] > 0


def test_torch_export_program_with_bgr_0_255_input(tmp_path: Path) -> None:
    """MSRA / detectron2 weights take BGR 0–255: the exported graph converts the RGB [0, 1] input as the model does."""
    model = tiny_model("input.channel_order=BGR", "input.pixel_scale=255", "input.pixel_mean=[103.53,116.28,123.675]",
                       "input.pixel_std=[57.4,57.1,58.4]")
    path = export_program(model, tmp_path / "bgr.pt2", 64, 96)
    images = [to_tensor(render_image(np.random.default_rng(2), 64, 96)[0])]
    assert check_program(model, path, images)["detections"] > 0


def test_torch_export_program_with_dynamic_image_size(tmp_path: Path) -> None:
    """One program for any size: landscape, portrait, already at the test scale (no resize), a side that rounds at
    .5 (128 × 129 → 64 × 64.5), and sizes far from the traced example; the same detections as eager at each."""
    model = tiny_model()
    path = export_program(model, tmp_path / "dynamic.pt2", 64, 96, dynamic=True)
    rng = np.random.default_rng(3)
    sizes = [(64, 96), (96, 64), (70, 90), (128, 129), (200, 33), (330, 143)]
    images = [to_tensor(render_image(rng, h, w)[0]) for h, w in sizes]
    report = check_program(model, path, images)
    assert report["images"] == len(sizes) and report["detections"] > 0
    with pytest.raises(AssertionError, match="Guard failed"):  # outside the exported range of sides
        load_program(path)(torch.rand(3, 16, 96))


@pytest.mark.parametrize("score_thresh", ["0.99", "0.2"])
def test_torch_export_program_with_no_or_few_detections(tmp_path: Path, score_thresh: str) -> None:
    """torchvision's fake NMS kernel claims ≥ 2 kept boxes; the exported program must run when NMS keeps 0 or 1."""
    model = tiny_model(f"model.roi_heads.score_thresh={score_thresh}")
    path = export_program(model, tmp_path / "few.pt2", 64, 96)
    images = [to_tensor(render_image(np.random.default_rng(i), 64, 96)[0]) for i in range(2)]
    report = check_program(model, path, images)
    if score_thresh == "0.99":
        assert report["detections"] == 0
    else:
        assert 0 < report["detections"] < 2 * 20


def test_export_tool(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    needs_onnxruntime()
    cfg = load_config(TINY_CONFIG)
    weights = tmp_path / "model_final.pth"
    save_checkpoint(weights, {"model": tiny_model().state_dict(), "config": cfg.to_dict(), "classes": list("abcde")})
    module = importlib.import_module("tools.export")
    out = tmp_path / "out" / "tiny.onnx"
    assert module.main(["--weights", str(weights), "--output", str(out), "--size", "64", "80"]) == 0
    assert "onnxruntime vs eager" in capsys.readouterr().out
    assert out.with_suffix(".classes.txt").read_text().split() == list("abcde")


def test_export_tool_torch_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    weights = tmp_path / "model_final.pth"
    save_checkpoint(weights, {"model": tiny_model().state_dict(), "config": load_config(TINY_CONFIG).to_dict(),
                              "classes": list("abcde")})
    module = importlib.import_module("tools.export")
    out, report = tmp_path / "out" / "tiny.pt2", tmp_path / "check.json"
    argv = ["--weights", str(weights), "--format", "torch-export", "--output", str(out), "--json", str(report),
            "--dynamic", "--check-images", "4"]
    assert module.main(argv) == 0
    assert "torch.export.load vs eager" in capsys.readouterr().out
    result = json.loads(report.read_text())
    assert result["format"] == "torch-export" and result["input_size"] == [64, 96] and result["dynamic"]
    assert result["check"]["images"] == 4 and result["check"]["max_box_diff_px"] <= 1e-2
    assert torch.export.load(out).module()(torch.rand(3, 50, 120))[0].shape[1] == 4
    assert module.main(["--weights", str(weights), "--format", "onnx", "--dynamic"]) == 2
