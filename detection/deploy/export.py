"""Export of the inference model: ONNX (checked with onnxruntime) and ``torch.export`` (a ``.pt2`` program), each
checked against the eager model.

The exported graph is the single-scale detector (:class:`ExportDetector`): it takes a float RGB image
``[3, H, W]`` in [0, 1] and returns ``boxes [D, 4]`` (xyxy, pixels of that image), ``scores [D]`` and
``labels [D]`` (int64, 1..K) — what ``model([image])`` returns in eager mode, through the model's own
``ImageTransform``. ONNX files are for one **fixed size** ``(height, width)`` (the test-time resize,
``ImageTransform.test_size``, computed once at export, so the graph holds no shape arithmetic); a ``torch.export``
program is for that size too, or with ``dynamic=True`` for any height and width in :data:`DYNAMIC_SIDES` (the
resize is then computed in the graph, on symbolic sizes).
tests/detection/deploy/test_export.py checks the same detections on generated images (onnxruntime on the CPU, and the
re-loaded ``.pt2`` program, at several sizes for a dynamic one).

Limits (docs/deployment.md): one image per call; single scale (no ``test.pyramid_min_sizes``); box voting,
refinement and ``input.resize_mode=detectron2`` (PIL) are refused (:class:`ExportError`); the model as built,
not ``optimize_for_inference``'s swaps. ONNX
uses the TorchScript-based exporter (``dynamo=False``, opset 17), which represents NMS's data-dependent output
sizes natively. ``torch.export`` (``strict=False``) keeps them as unbacked symbolic sizes: NMS's size through the
per-image split stays symbolic, per-class NMS has no branch on the number of boxes (:class:`FixedSizeSelector`),
and torchvision's fake NMS kernel, which claims at least 2 kept boxes (``create_unbacked_symint``'s default
``min=2``, asserted at run time), is replaced for the duration of the export by one that allows 0
(:func:`_nms_may_keep_none`).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torchvision.ops import nms

from detection.files import atomic_open
from detection.modeling.faster_rcnn import FasterRCNN
from detection.modeling.postprocess import DetectionSelector

ONNX_OPSET = 17

# An exported file's forward: one float image [3, H, W] -> boxes [D, 4], scores [D], labels [D].
Runner = Callable[[Tensor], tuple[Tensor, Tensor, Tensor]]


class ExportError(RuntimeError):
    """The model holds a part that the export does not support."""


class FixedSizeSelector(DetectionSelector):
    """:class:`DetectionSelector` for boxes known to lie in ``[0, max_coordinate]`` (clipped to an image no larger).

    Per-class NMS is one NMS of the boxes shifted by ``label · (max_coordinate + 1)``, so that boxes of different
    classes never overlap: torchvision's "coordinate trick" with the shift fixed at export instead of read from
    ``boxes.max()``, which has no value on an empty set. ``torchvision.ops.batched_nms`` first branches on the
    (data-dependent) number of boxes, which ``torch.export`` cannot trace; this form has no branch.
    """

    def __init__(self, selector: DetectionSelector, max_coordinate: float) -> None:
        super().__init__(score_thresh=selector.score_thresh, nms_thresh=selector.nms_thresh,
                         detections_per_img=selector.detections_per_img, voting=selector.voting,
                         min_box_size=selector.min_box_size)
        self.max_coordinate = float(max_coordinate)

    def batched_nms(self, boxes: Tensor, scores: Tensor, labels: Tensor) -> Tensor:
        shifted = boxes + (labels.to(boxes.dtype) * (self.max_coordinate + 1.0))[:, None]
        return nms(shifted, scores, self.nms_thresh)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, max_coordinate={self.max_coordinate}"


class ExportDetector(nn.Module):
    """A built :class:`FasterRCNN` as ``forward(image [3, H, W]) -> (boxes, scores, labels)`` for export.

    Runs the model's own parts in the order of ``FasterRCNN.forward``: its ``ImageTransform`` (the test-time size
    rule, normalise, resize, pad; at the end boxes back to the input's pixels), trunk, RPN, RoI heads. With
    ``input_size`` every size is a Python int fixed here (the ONNX tracer then records no shape arithmetic);
    without it the sizes come from the image, and stay symbolic when ``torch.export`` is given a dynamic height
    and width (:func:`export_program`; the transform handles symbolic sizes, ``ImageTransform.test_size``).
    """

    def __init__(self, model: FasterRCNN, input_size: tuple[int, int] | None = None) -> None:
        super().__init__()
        if model.roi_heads.selector.voting is not None or model.roi_heads.box_refinement:
            raise ExportError("box voting and box refinement are not exported; set model.roi_heads.box_voting=false "
                              "and model.roi_heads.box_refinement=false")
        if model.transform.resize_mode != "float":
            raise ExportError(f"input.resize_mode={model.transform.resize_mode} resizes with PIL, which is not "
                              "exported; set input.resize_mode=float")
        self.model = copy.deepcopy(model).eval()
        self.input_size = None if input_size is None else (int(input_size[0]), int(input_size[1]))
        # The resize rule caps the longer side at test_max_size: a bound on every box coordinate for any input.
        self.model.roi_heads.selector = FixedSizeSelector(self.model.roi_heads.selector,
                                                          self.model.transform.test_max_size)

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        t = self.model.transform
        size = self.input_size or (image.shape[-2], image.shape[-1])
        resized = t.test_size(*size)
        batch = t.batch([t.resize(image, size, resized)], [resized])
        features = self.model.trunk(batch)
        proposals, _ = self.model.rpn(features, [resized])
        detections, _ = self.model.roi_heads(features, proposals, [resized])
        (det,) = t.postprocess(detections, [resized], [size])
        return det["boxes"], det["scores"], det["labels"]


def export_onnx(model: FasterRCNN, path: Path, height: int, width: int) -> Path:
    """Write ``model`` at input size ``(height, width)`` as an ONNX file (inputs ``image``; outputs ``boxes``,
    ``scores``, ``labels``)."""
    wrapper = ExportDetector(model, (height, width))
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.rand(3, height, width)
    # Sizes are Python constants here on purpose (ExportDetector's input_size), which the tracer warns about.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")
        with atomic_open(path, "wb") as f:  # a full disk leaves no half model under the name
            torch.onnx.export(wrapper, (example,), f, dynamo=False, opset_version=ONNX_OPSET,
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


def compare_with_eager(model: FasterRCNN, run: Runner, images: list[Tensor], name: str) -> dict[str, float]:
    """Run ``run`` (an exported file's boxes, scores, labels for one ``[3, H, W]`` image) and ``model`` eagerly on
    ``images`` (each of the exported size); raise :class:`ExportError` unless both give the same labels, boxes
    within ``BOX_TOLERANCE_PX`` and scores within ``SCORE_TOLERANCE``. Returns the largest differences and the
    number of detections compared."""
    model = model.eval()
    worst = {"images": float(len(images)), "detections": 0.0, "max_box_diff_px": 0.0, "max_score_diff": 0.0}
    for i, image in enumerate(images):
        boxes, scores, labels = run(image)
        with torch.no_grad():
            eager = model([image])[0]
        if len(labels) != len(eager["labels"]) or not torch.equal(labels, eager["labels"].cpu()):
            raise ExportError(f"image {i}: {name} gives {len(labels)} detections, the eager model "
                              f"{len(eager['labels'])} (or other labels)")
        if len(labels):
            worst["max_box_diff_px"] = max(worst["max_box_diff_px"],
                                           float((boxes - eager["boxes"].cpu()).abs().max()))
            worst["max_score_diff"] = max(worst["max_score_diff"], float((scores - eager["scores"].cpu()).abs().max()))
        worst["detections"] += len(labels)
    if worst["max_box_diff_px"] > BOX_TOLERANCE_PX or worst["max_score_diff"] > SCORE_TOLERANCE:
        raise ExportError(f"{name} and the eager model differ by {worst['max_box_diff_px']:.3g} px / "
                          f"{worst['max_score_diff']:.3g} in score (tolerance {BOX_TOLERANCE_PX} px / "
                          f"{SCORE_TOLERANCE})")
    return worst


def check_onnx(model: FasterRCNN, path: Path, images: list[Tensor]) -> dict[str, float]:
    """:func:`compare_with_eager` for an ONNX file run with onnxruntime on the CPU."""
    session = onnx_session(path)

    def run(image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        boxes, scores, labels = (torch.from_numpy(a) for a in run_onnx(session, image))
        return boxes, scores, labels

    return compare_with_eager(model, run, images, "onnxruntime")


# --- torch.export ---------------------------------------------------------------------------------------------
def _fake_nms(dets: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """``torchvision::nms`` under fake tensors: ``[n]`` int64 with ``0 <= n`` (``n <= len(dets)``, not stated)."""
    return dets.new_empty(torch.library.get_ctx().new_dynamic_size(), dtype=torch.long)


@contextmanager
def _nms_may_keep_none() -> Iterator[None]:
    """Within the block, ``torchvision::nms``'s fake kernel allows 0 or 1 kept boxes. torchvision 0.29's says
    ``n >= 2`` (``create_unbacked_symint()``), which ``torch.export`` turns into a run-time assertion that fails on
    an image with fewer than 2 detections. The registration is dropped on exit (a scoped library)."""
    with torch.library._scoped_library("torchvision", "FRAGMENT") as lib:
        torch.library.register_fake("torchvision::nms", _fake_nms, lib=lib)
        yield


# The image sides a dynamic-size program accepts (torch.export.Dim bounds; every input is resized to the test scale).
DYNAMIC_SIDES = (32, 4096)


def export_program(model: FasterRCNN, path: Path, height: int, width: int, *, dynamic: bool = False) -> Path:
    """Write ``model`` as a ``torch.export`` program (``torch.export.save``, ``.pt2``):
    ``program.module()(image [3, H, W]) -> (boxes, scores, labels)``. The input is ``(height, width)``, or with
    ``dynamic`` any height and width in :data:`DYNAMIC_SIDES` (``(height, width)`` is then the example traced)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.rand(3, height, width)
    shapes = None
    if dynamic:
        sides = {"min": DYNAMIC_SIDES[0], "max": DYNAMIC_SIDES[1]}
        shapes = ({1: torch.export.Dim("height", **sides), 2: torch.export.Dim("width", **sides)},)
    with torch.no_grad(), _nms_may_keep_none():
        program = torch.export.export(ExportDetector(model), (example,), dynamic_shapes=shapes, strict=False)
    with atomic_open(path, "wb") as f:
        torch.export.save(program, f)
    return path


def load_program(path: Path) -> Runner:
    """The callable module of a ``.pt2`` file written by :func:`export_program` (torchvision must be imported
    first: the graph calls its ``nms`` and ``roi_pool``/``roi_align`` operators)."""
    import torchvision  # noqa: F401  (registers torchvision::nms, roi_pool, roi_align)

    return torch.export.load(path).module()


def check_program(model: FasterRCNN, path: Path, images: list[Tensor]) -> dict[str, float]:
    """:func:`compare_with_eager` for a ``.pt2`` file, loaded back with ``torch.export.load``."""
    program = load_program(path)

    def run(image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        with torch.no_grad():
            return program(image)

    return compare_with_eager(model, run, images, "torch.export program")
