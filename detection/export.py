"""Export of the inference model to ONNX, checked with onnxruntime against the eager model.

The exported graph is the single-scale detector for images of one **fixed size** ``(height, width)`` (e.g. a
camera's frames): it takes a float RGB image ``[3, height, width]`` in [0, 1] and returns ``boxes [D, 4]`` (xyxy,
pixels of that image), ``scores [D]`` and ``labels [D]`` (int64, 1..K) — what ``model([image])`` returns in eager
mode for an image of that size. The test-time resize (``detection.boxes.resized_shape``) is computed once, at
export, so the graph holds no shape arithmetic; tests/detection/test_export.py checks the same detections on
generated images (onnxruntime, CPU provider).

Limits (docs/deployment.md): one input size per exported file (export again for another); one image per call;
single scale (no ``test.pyramid_min_sizes``); box voting and refinement are refused (:class:`ExportError`); the
model as built, not ``optimize_for_inference``'s swaps (onnxruntime folds BN itself). ONNX uses the
TorchScript-based exporter (``dynamo=False``, opset 17), which represents NMS's data-dependent output sizes
natively. ``torch.export`` (and the dynamo ONNX exporter built on it) fails on those sizes in torch 2.14
(``GuardOnDataDependentSymNode`` in the per-image split after the RoI head): not supported yet.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detection.boxes import resized_shape, scale_boxes
from detection.model import FasterRCNN

ONNX_OPSET = 17


class ExportError(RuntimeError):
    """The model holds a part that the export does not support."""


class FixedSizeDetector(nn.Module):
    """A built :class:`FasterRCNN` for images of one size: ``forward(image [3, H, W]) -> (boxes, scores, labels)``.

    Runs the model's public parts in the order of ``FasterRCNN.forward`` (normalise, resize by the test-time rule,
    pad, trunk, RPN, RoI heads, boxes back to the input's pixels) with every size a Python int fixed here.
    """

    def __init__(self, model: FasterRCNN, height: int, width: int) -> None:
        super().__init__()
        if model.roi_heads.selector.voting is not None or model.roi_heads.box_refinement:
            raise ExportError("box voting and box refinement are not exported; set model.roi_heads.box_voting=false "
                              "and model.roi_heads.box_refinement=false")
        self.model = copy.deepcopy(model).eval()
        t = self.model.transform
        self.input_size = (int(height), int(width))
        self.resized = resized_shape(self.input_size[0], self.input_size[1], t.test_min_size, t.test_max_size)
        d = t.size_divisible
        self.padding = (0, -self.resized[1] % d, 0, -self.resized[0] % d)  # right, bottom: as ImageTransform.batch

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        t = self.model.transform
        x = (image - t.pixel_mean) / t.pixel_std
        if self.resized != self.input_size:
            x = F.interpolate(x[None], size=self.resized, mode="bilinear", align_corners=False)[0]
        batch = F.pad(x, self.padding)[None]
        features = self.model.trunk(batch)
        proposals, _ = self.model.rpn(features, [self.resized])
        detections, _ = self.model.roi_heads(features, proposals, [self.resized])
        det = detections[0]
        return scale_boxes(det["boxes"], self.resized, self.input_size), det["scores"], det["labels"]


def export_onnx(model: FasterRCNN, path: Path, height: int, width: int) -> Path:
    """Write ``model`` at input size ``(height, width)`` as an ONNX file (inputs ``image``; outputs ``boxes``,
    ``scores``, ``labels``)."""
    wrapper = FixedSizeDetector(model, height, width)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.rand(3, height, width)
    # Sizes are Python constants here on purpose (FixedSizeDetector), which is what the tracer warns about.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")
        torch.onnx.export(wrapper, (example,), str(path), dynamo=False, opset_version=ONNX_OPSET,
                          input_names=["image"], output_names=["boxes", "scores", "labels"],
                          dynamic_axes={"boxes": {0: "detections"}, "scores": {0: "detections"},
                                        "labels": {0: "detections"}})
    return path


def onnx_session(path: Path) -> Any:
    """An onnxruntime ``InferenceSession`` on the CPU provider for an exported file."""
    import onnxruntime

    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def run_onnx(model: Path | Any, image: Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run an exported file (or an :func:`onnx_session` of it) on the CPU: ``image`` float ``[3, H, W]`` →
    boxes, scores, labels."""
    session = onnx_session(model) if isinstance(model, (str, Path)) else model
    boxes, scores, labels = session.run(None, {"image": image.detach().cpu().numpy().astype(np.float32)})
    return boxes, scores, labels


# The exported graph runs the same operations as the eager model; these bound the float differences seen
# between onnxruntime's CPU kernels and PyTorch's (measured ~2e-5 px and ~3e-7 on the tiny test model).
BOX_TOLERANCE_PX = 1e-2
SCORE_TOLERANCE = 1e-4


def check_onnx(model: FasterRCNN, path: Path, images: list[Tensor]) -> dict[str, float]:
    """Run ``path`` with onnxruntime and ``model`` eagerly on ``images`` (each ``[3, H, W]`` of the exported size);
    raise :class:`ExportError` unless both give the same labels, boxes within ``BOX_TOLERANCE_PX`` and scores
    within ``SCORE_TOLERANCE``. Returns the largest differences and the number of detections compared."""
    model = model.eval()
    session = onnx_session(path)
    worst = {"images": float(len(images)), "detections": 0.0, "max_box_diff_px": 0.0, "max_score_diff": 0.0}
    for i, image in enumerate(images):
        boxes, scores, labels = (torch.from_numpy(a) for a in run_onnx(session, image))
        with torch.no_grad():
            eager = model([image])[0]
        if len(labels) != len(eager["labels"]) or not torch.equal(labels, eager["labels"].cpu()):
            raise ExportError(f"image {i}: onnxruntime gives {len(labels)} detections, the eager model "
                              f"{len(eager['labels'])} (or other labels)")
        if len(labels):
            worst["max_box_diff_px"] = max(worst["max_box_diff_px"],
                                           float((boxes - eager["boxes"].cpu()).abs().max()))
            worst["max_score_diff"] = max(worst["max_score_diff"], float((scores - eager["scores"].cpu()).abs().max()))
        worst["detections"] += len(labels)
    if worst["max_box_diff_px"] > BOX_TOLERANCE_PX or worst["max_score_diff"] > SCORE_TOLERANCE:
        raise ExportError(f"onnxruntime and the eager model differ by {worst['max_box_diff_px']:.3g} px / "
                          f"{worst['max_score_diff']:.3g} in score (tolerance {BOX_TOLERANCE_PX} px / "
                          f"{SCORE_TOLERANCE})")
    return worst
