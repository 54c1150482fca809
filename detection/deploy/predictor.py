"""``Predictor``: a trained detector from its checkpoint, applied to whatever image a notebook has at hand.

    from detection import Predictor
    predictor = Predictor("output/quickstart/detector/model_final.pth")
    result = predictor("photo.jpg")           # or an OpenCV BGR array, a PIL image, a tensor, or a list of them
    for box, score, name in zip(result.boxes, result.scores, result.class_names):
        print(name, f"{score:.2f}", box.tolist())   # box: xyxy in the input image's pixels

Inputs and their conventions (the one place they are decided):
- ``str`` / ``Path``: an image file, read with OpenCV (EXIF orientation ignored, as in training). A file with a
  side over 10,000 px is decoded at reduced size; its boxes are still given in the file's own pixels.
- ``numpy.ndarray`` ``uint8 [H, W, 3]``: **BGR**, as ``cv2.imread`` returns it (pass ``rgb=True`` for RGB
  arrays); ``[H, W]`` grayscale is replicated. Other dtypes are refused.
- ``PIL.Image.Image``: converted to RGB; 16- and 32-bit integer modes (``I;16``, ``I``) are scaled to 8 bits as
  OpenCV does for a 16-bit file (a float ``F`` image is refused: its range is unknown).
- ``torch.Tensor``: RGB ``[3, H, W]`` or a batch ``[B, 3, H, W]``; floating point must lie in [0, 1], any integer
  dtype must lie in 0..255 and is scaled by 1/255. Anything else (a float tensor in 0..255, NaN) is refused with a
  ``ValueError`` saying what was found, never silently read as a dark or white image.
An image with no pixels (``0×0``) is refused. A list (or a batched tensor) gives a list of results; a single input
gives one.

Videos and cameras: ``Predictor.stream`` takes a video file, a camera index or any iterable of frames and yields
one result per frame (decoded frames only; detection/deploy/video.py reads them with OpenCV)::

    for result in predictor.stream("street.mp4"):   # or stream(0) for the first camera, or stream(frames)
        print(len(result), "objects")
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import Tensor

from backbones.runtime import autocast, pick_device
from detection.build import build_test_detector, load_detector
from detection.config import Config
from detection.data.io import read_image
from detection.data.transforms import to_tensor
from detection.deploy.video import open_video
from detection.fast.optimize import optimize_for_inference
from detection.modeling.boxes import scale_boxes
from detection.modeling.faster_rcnn import FasterRCNN

# str | Path | BGR array | tensor | PIL image (Any: PIL is imported only when used).
ImageInput = Any


@dataclass
class Prediction:
    """One image's detections, most confident first: ``boxes`` float32 ``[N, 4]`` xyxy in the input image's pixels,
    ``scores`` ``[N]``, ``labels`` int64 ``[N]`` in 1..K and ``class_names`` (``classes[label - 1]``)."""

    boxes: Tensor
    scores: Tensor
    labels: Tensor
    class_names: list[str]

    def __len__(self) -> int:
        return len(self.scores)

    def to_records(self) -> list[dict[str, Any]]:
        """JSON-ready ``[{"box": [x1, y1, x2, y2], "score": s, "label": name}]``."""
        return [{"box": [round(v, 2) for v in b], "score": round(float(s), 4), "label": name}
                for b, s, name in zip(self.boxes.tolist(), self.scores.tolist(), self.class_names)]


class Predictor:
    """A detector loaded from a toolkit checkpoint (``model_final.pth`` / ``model_best.pth``) for inference.

    ``score_thresh`` drops weaker detections (the model's own threshold, ``model.roi_heads.score_thresh``, applies
    first); ``overrides`` (``key=value``) change the stored config, e.g. ``test.pyramid_min_sizes=[400,600,800]``.
    With ``optimize`` the frozen BNs are folded into the convs (same detections, faster; detection/fast/optimize.py).
    ``classes`` are the checkpoint's class names. ``weights`` may be a URL or a model-zoo name (``load_detector``).
    """

    def __init__(
        self,
        weights: str | Path,
        *,
        device: str = "auto",
        score_thresh: float = 0.0,
        overrides: list[str] | None = None,
        optimize: bool = True,
        amp: bool = False,
    ) -> None:
        model, cfg, classes = load_detector(weights, overrides=overrides)
        self._setup(model, cfg, classes, device=device, score_thresh=score_thresh, optimize=optimize, amp=amp)

    @classmethod
    def from_detector(cls, model: FasterRCNN, cfg: Config, classes: list[str], *, device: str = "auto",
                      score_thresh: float = 0.0, optimize: bool = True, amp: bool = False) -> Predictor:  # fmt: skip
        """A predictor around a detector already loaded (``load_detector``, e.g. with another ``--config``)."""
        predictor = cls.__new__(cls)
        predictor._setup(model, cfg, classes, device=device, score_thresh=score_thresh, optimize=optimize, amp=amp)
        return predictor

    def _setup(self, model: FasterRCNN, cfg: Config, classes: list[str], *, device: str, score_thresh: float,
               optimize: bool, amp: bool) -> None:  # fmt: skip
        if not 0.0 <= score_thresh <= 1.0:  # NaN too: it would silently keep no detection
            raise ValueError(f"score_thresh must be in [0, 1], got {score_thresh}")
        self.cfg = cfg
        self.classes = classes or [str(k) for k in range(1, self.cfg.num_classes + 1)]
        self.device = pick_device(device)
        model = model.to(self.device).eval()
        self.model = model  # as built: what tools/export.py exports
        runner = optimize_for_inference(copy.deepcopy(model)) if optimize else model
        self.runner = build_test_detector(runner, self.cfg).eval()
        self.score_thresh = score_thresh
        self.amp = amp  # autocast (bf16 on the CPU, fp16 on CUDA); results are float32 either way

    @torch.inference_mode()
    def __call__(
        self, images: ImageInput | Sequence[ImageInput], *, rgb: bool = False
    ) -> Prediction | list[Prediction]:
        single = not isinstance(images, (list, tuple)) and not (torch.is_tensor(images) and images.dim() == 4)
        batch = [images] if single else list(images)
        loaded = [load_input(image, rgb=rgb) for image in batch]
        tensors = [tensor.to(self.device) for tensor, _ in loaded]
        with autocast(self.device, self.amp):
            outputs = self.runner(tensors) if tensors else []
        results = [self._result(out, tuple(t.shape[-2:]), size) for out, t, (_, size) in zip(outputs, tensors, loaded)]
        return results[0] if single else results

    def stream(self, source: str | Path | int | Iterable[ImageInput], *, batch_size: int = 1, rgb: bool = False,
               frames_too: bool = False) -> Iterator[Any]:  # fmt: skip
        """One :class:`Prediction` per frame of ``source``, in order: a video file, a camera index (``0``), a
        :class:`~detection.deploy.video.VideoReader`, or any iterable of frames (BGR arrays unless ``rgb``, or any
        input ``__call__`` takes). ``batch_size`` frames go through the model at once (on a GPU that is faster);
        ``frames_too`` yields ``(frame, prediction)`` pairs. A file that is not a video raises ``VideoError``."""
        if isinstance(source, (str, Path, int)):
            source = open_video(source)
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        frames: list[Any] = []
        for frame in source:
            frames.append(frame)
            if len(frames) == batch_size:
                yield from self._batch(frames, rgb, frames_too)
                frames = []
        if frames:
            yield from self._batch(frames, rgb, frames_too)

    def _batch(self, frames: list[Any], rgb: bool, frames_too: bool) -> Iterator[Any]:
        results = self(frames, rgb=rgb)
        yield from zip(frames, results) if frames_too else results

    def _result(self, output: dict[str, Tensor], decoded: tuple[int, ...], original: tuple[int, int]) -> Prediction:
        keep = output["scores"] >= self.score_thresh
        boxes, scores, labels = (output[k][keep].cpu() for k in ("boxes", "scores", "labels"))
        if tuple(decoded) != tuple(original):  # a huge file decoded at reduced size: back to the file's pixels
            boxes = scale_boxes(boxes.float(), (decoded[0], decoded[1]), original)
        order = scores.argsort(descending=True)
        boxes, scores, labels = boxes[order].float(), scores[order].float(), labels[order]
        names = [self.classes[int(k) - 1] if 0 < int(k) <= len(self.classes) else str(int(k)) for k in labels]
        return Prediction(boxes, scores, labels, names)


def image_to_tensor(image: ImageInput, *, rgb: bool = False) -> Tensor:
    """Float RGB ``[3, H, W]`` in [0, 1] from any input :class:`Predictor` accepts (see the module docstring)."""
    return load_input(image, rgb=rgb)[0]


def load_input(image: ImageInput, *, rgb: bool = False) -> tuple[Tensor, tuple[int, int]]:
    """``(float RGB [3, h, w] in [0, 1], (H, W) of the original image)``: the two differ only for a file decoded at
    reduced size, whose boxes must be scaled back by ``(H / h, W / w)``. Raises ``ValueError`` / ``TypeError``
    (one line) for inputs the module docstring refuses."""
    if isinstance(image, (str, Path)):
        pixels, size = read_image(Path(image))
        return to_tensor(pixels), size
    if isinstance(image, np.ndarray):
        tensor = _array_to_tensor(image, rgb=rgb)
    elif torch.is_tensor(image):
        tensor = _tensor_to_float(image)
    elif hasattr(image, "convert") and hasattr(image, "size"):  # a PIL image
        tensor = to_tensor(_pil_to_rgb(image))
    else:
        raise TypeError(f"cannot read an image from {type(image).__name__}: pass a path, a BGR array, a PIL image or "
                        "a tensor")
    if tensor.shape[-1] == 0 or tensor.shape[-2] == 0:
        raise ValueError(f"the image has no pixels (shape {tuple(tensor.shape)})")
    return tensor, (int(tensor.shape[-2]), int(tensor.shape[-1]))


def _array_to_tensor(image: np.ndarray, *, rgb: bool) -> Tensor:
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"expected an image array [H, W, 3] (BGR), got shape {image.shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image array, got {image.dtype} (convert it, e.g. a 16-bit array >> 8)")
    if image.size == 0:
        raise ValueError(f"the image has no pixels (shape {image.shape})")
    image = np.ascontiguousarray(image[..., :3])
    return to_tensor(image if rgb else cv2.cvtColor(image, cv2.COLOR_BGR2RGB))


def _tensor_to_float(image: Tensor) -> Tensor:
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"expected an RGB tensor [3, H, W] (or a batch [B, 3, H, W]), got {tuple(image.shape)}")
    if image.numel() == 0:
        raise ValueError(f"the image has no pixels (shape {tuple(image.shape)})")
    if image.dtype == torch.bool or image.is_complex():
        raise ValueError(f"expected a float tensor in [0, 1] or an integer one in 0..255, got {image.dtype}")
    low, high = float(image.min()), float(image.max())
    if image.is_floating_point():
        if not (0.0 <= low and high <= 1.0):  # also false for NaN
            raise ValueError(f"a float image tensor must lie in [0, 1]; this one spans [{low:g}, {high:g}] "
                             "(divide 0..255 values by 255)")
        return image.float()
    if not (0 <= low and high <= 255):
        raise ValueError(f"an integer image tensor must lie in 0..255; this {image.dtype} one spans "
                         f"[{low:g}, {high:g}]")
    return image.float() / 255.0


def _pil_to_rgb(image: Any) -> np.ndarray:
    """RGB ``uint8 [H, W, 3]`` from a PIL image of any mode; 16/32-bit integer modes keep their top 8 bits."""
    mode = image.mode
    if mode == "F":
        raise ValueError("a PIL image of mode F (32-bit float) has no known range; convert it to 8-bit RGB first")
    if mode.startswith("I"):  # "I;16", "I;16B", "I": PIL's convert("RGB") would clip everything above 255 to white
        array = np.asarray(image)
        if array.dtype.itemsize > 1:
            maximum = 65535 if mode.startswith("I;16") or int(array.max(initial=0)) <= 65535 else 2**32 - 1
            shift = 8 if maximum == 65535 else 24
            array = (np.clip(array.astype(np.int64), 0, maximum) >> shift).astype(np.uint8)
        return np.repeat(array.reshape(array.shape[0], array.shape[1], 1), 3, axis=2)
    return np.asarray(image.convert("RGB"))
