"""Faster R-CNN on the ResNet C4 split, with an API shaped like torchvision's detection models.

    # FasterRCNN.propose, the opening the test-time wrappers share:
    batch = self.transform(images, targets)                        # normalise, resize (test), pad
    features = self.trunk(batch.tensor)                            # conv1 … conv4_x, stride 16
    proposals, rpn_losses = self.rpn(features, batch.image_sizes, batch.targets)
    # then:
    detections, roi_losses = self.roi_heads(features, proposals, batch.image_sizes, batch.targets)
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from detection.modeling.box_head import conv5_of
from detection.modeling.boxes import clip_boxes_to_image, resize_scale, resized_shape, scale_boxes
from detection.modeling.roi_heads import C4RoIHeads
from detection.modeling.rpn import RegionProposalNetwork


class DetectorTrunk(nn.Module):
    """conv1 … conv4_x. The first ``num_frozen`` children (stem, conv2_x, …) run without autograd: their weights
    are fixed, so storing their activations for a backward pass would only cost memory and time."""

    def __init__(self, body: nn.Module, out_channels: int, num_frozen: int) -> None:
        super().__init__()
        self.body = body
        self.out_channels = out_channels
        self.num_frozen = num_frozen
        for child in list(body.children())[:num_frozen]:
            child.requires_grad_(False)

    def forward(self, x: Tensor) -> Tensor:
        children = list(self.body.children())
        if self.num_frozen and torch.is_grad_enabled():
            with torch.no_grad():
                for child in children[: self.num_frozen]:
                    x = child(x)
            children = children[self.num_frozen :]
        for child in children:
            x = child(x)
        return x


class ImageBatch(NamedTuple):
    """Images normalised, resized and padded into one tensor ``[B, 3, H', W']``; each image's size inside it
    (H, W); targets with boxes scaled to match (``None`` at test time)."""

    tensor: Tensor
    image_sizes: list[tuple[int, int]]
    targets: list[dict[str, Tensor]] | None


RESIZE_MODES = ("float", "detectron2")


def detectron2_resized_shape(height: int, width: int, min_size: int, max_size: int) -> tuple[int, int]:
    """detectron2's test-time size (``ResizeShortestEdge.get_output_shape``): the shorter side set to ``min_size``,
    both sides scaled down again if the longer one exceeds ``max_size``, each rounded by ``int(x + 0.5)``. It can
    differ from :func:`detection.modeling.boxes.resized_shape` by a pixel (ties, and the two-step arithmetic)."""
    size = float(min_size)
    scale = size / min(height, width)
    new_h, new_w = (size, scale * width) if height < width else (scale * height, size)
    if max(new_h, new_w) > max_size:
        scale = max_size / max(new_h, new_w)
        new_h, new_w = new_h * scale, new_w * scale
    return int(new_h + 0.5), int(new_w + 0.5)


def pil_resize(image: Tensor, size: tuple[int, int]) -> Tensor:
    """detectron2's ``ResizeTransform`` on a ``uint8`` image: ``[3, H, W]`` RGB in [0, 1] (whole grey levels
    ÷ 255, as decoded) → rounded to ``uint8``, PIL bilinear to ``size`` (H', W') (antialiased when shrinking),
    back to [0, 1]. The result is whole grey levels again, as detectron2's network sees them."""
    pixels = (image.detach() * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    resized = Image.fromarray(pixels).resize((size[1], size[0]), Image.Resampling.BILINEAR)
    return torch.from_numpy(np.asarray(resized).copy()).permute(2, 0, 1).to(image.device, image.dtype) / 255


def _fixed(*sizes: Any) -> bool:
    """Every size a plain int (not a ``torch.export`` symbolic size), so it can be compared without a guard."""
    return not any(isinstance(s, torch.SymInt) for s in sizes)


class ImageTransform(nn.Module):
    """Normalise, resize (at test time: training images arrive resized by the data pipeline, with the same rule,
    ``detection.modeling.boxes.resize_scale``), pad into a batch; and map detections back to the original pixels.

    Normalising maps the toolkit's RGB [0, 1] images to what the backbone's weights expect: reorder the channels
    (``channel_order="BGR"`` for MSRA / detectron2 weights), multiply by ``pixel_scale`` (255 for those), then
    subtract ``pixel_mean`` and divide by ``pixel_std`` (given in the network's channel order and scale).

    ``resize_mode``: ``"float"`` (the toolkit's: the size rounded by ``round``, normalised pixels resampled by
    ``F.interpolate``, bilinear) or ``"detectron2"`` (detectron2's test path: :func:`detectron2_resized_shape`,
    the ``uint8`` image resized by PIL, :func:`pil_resize`). ``drop_empty_boxes``: :meth:`postprocess` also clips
    the boxes to the original image and drops those with no width or height, *after* the top-k selection, as
    detectron2's ``detector_postprocess`` does (the toolkit's selector drops thin boxes before NMS instead).

    Export (detection/deploy/export.py) calls the same methods with sizes that may be ``torch.export`` symbolic
    sizes or (ONNX) fixed Python ints, which is why :meth:`resize` and :meth:`batch` take the sizes as arguments.
    """

    def __init__(
        self,
        *,
        pixel_mean: list[float],
        pixel_std: list[float],
        test_min_size: int,
        test_max_size: int,
        size_divisible: int = 32,
        channel_order: str = "RGB",
        pixel_scale: float = 1.0,
        resize_mode: str = "float",
        drop_empty_boxes: bool = False,
    ) -> None:
        super().__init__()
        if channel_order not in ("RGB", "BGR"):
            raise ValueError(f"channel_order must be 'RGB' or 'BGR', got {channel_order!r}")
        if resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {resize_mode!r}")
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(3, 1, 1), persistent=False)
        self.test_min_size = test_min_size
        self.test_max_size = test_max_size
        self.size_divisible = size_divisible
        self.channel_order = channel_order
        self.pixel_scale = pixel_scale
        self.resize_mode = resize_mode
        self.drop_empty_boxes = drop_empty_boxes

    def forward(
        self,
        images: list[Tensor],
        targets: list[dict[str, Tensor]] | None = None,
        *,
        min_size: int | None = None,
        max_size: int | None = None,
    ) -> ImageBatch:
        """``images``: float RGB ``[3, H, W]`` in [0, 1]. In eval mode each is resized to ``min_size`` /
        ``max_size`` (default: the test scale); in training mode sizes are kept and targets pass through."""
        out, sizes = [], []
        for i, image in enumerate(images):
            if image.dim() != 3 or image.shape[0] != 3:
                raise ValueError(f"image {i}: expected a float tensor [3, H, W], got shape {tuple(image.shape)}")
            size = (int(image.shape[-2]), int(image.shape[-1]))
            if self.training:
                out.append(self.normalize(image))
                sizes.append(size)
            else:
                sizes.append(self.test_size(*size, min_size=min_size, max_size=max_size))
                out.append(self.resize(image, size, sizes[-1]))
        return ImageBatch(self.batch(out, sizes), sizes, targets)

    def normalize(self, image: Tensor) -> Tensor:
        """``[3, H, W]`` RGB in [0, 1] → the network's input: channel order, scale, ``(x - mean) / std``."""
        return (self.to_network_pixels(image) - self.pixel_mean) / self.pixel_std

    def to_network_pixels(self, image: Tensor) -> Tensor:
        """``[3, H, W]`` RGB in [0, 1] → the weights' channel order and scale (before the mean and std)."""
        if self.channel_order == "BGR":
            image = image.flip(0)
        return image * self.pixel_scale if self.pixel_scale != 1.0 else image

    def test_size(
        self, height: int, width: int, *, min_size: int | None = None, max_size: int | None = None
    ) -> tuple[int, int]:
        """``(H', W')`` of an image resized at test time (``min_size`` / ``max_size``: default the test scale),
        by ``resize_mode``'s rule. Symbolic sizes (``torch.export``) get the float rule too (:func:`_symbolic_size`)."""
        min_size = self.test_min_size if min_size is None else min_size
        max_size = self.test_max_size if max_size is None else max_size
        if self.resize_mode == "detectron2":
            return detectron2_resized_shape(height, width, min_size, max_size)
        if _fixed(height, width):
            return resized_shape(height, width, min_size, max_size)
        return _symbolic_size(height, width, min_size, max_size)

    def resize(self, image: Tensor, size: tuple[int, int], resized: tuple[int, int]) -> Tensor:
        """``image`` ``[3, H, W]`` RGB in [0, 1] of ``size`` (H, W) → normalised and resized to ``resized``. An
        image already of that size is not resampled (a symbolic size always is: an exact copy, not a guard)."""
        same = _fixed(*size, *resized) and tuple(size) == tuple(resized)
        if self.resize_mode == "detectron2":
            return self.normalize(image if same else pil_resize(image, resized))
        x = self.normalize(image)
        return x if same else F.interpolate(x[None], size=resized, mode="bilinear", align_corners=False)[0]

    def batch(self, images: list[Tensor], sizes: list[tuple[int, int]]) -> Tensor:
        """Images ``[3, h_i, w_i]`` (``sizes``) zero-padded at the bottom and right into ``[B, 3, H, W]``, both
        sides the largest rounded up to a multiple of ``size_divisible``."""
        d = self.size_divisible
        height = -(-max(h for h, _ in sizes) // d) * d
        width = -(-max(w for _, w in sizes) // d) * d
        return torch.stack([F.pad(x, (0, width - w, 0, height - h)) for x, (h, w) in zip(images, sizes)])

    def postprocess(
        self,
        detections: list[dict[str, Tensor]],
        image_sizes: list[tuple[int, int]],
        original_sizes: list[tuple[int, int]],
    ) -> list[dict[str, Tensor]]:
        """Scale boxes from the resized image back to the original image's pixels (``drop_empty_boxes``: then clip
        them to it and drop those with no width or height, with their scores and labels)."""
        for det, size, original in zip(detections, image_sizes, original_sizes):
            det["boxes"] = scale_boxes(det["boxes"], size, original)
            if self.drop_empty_boxes:
                det["boxes"] = clip_boxes_to_image(det["boxes"], original)
                wh = det["boxes"][:, 2:] - det["boxes"][:, :2]
                keep = torch.nonzero((wh > 0).all(dim=1)).squeeze(1)
                for key in det:
                    det[key] = det[key][keep]
        return detections

    def extra_repr(self) -> str:
        return (f"channel_order={self.channel_order}, pixel_scale={self.pixel_scale}, test_min_size="
                f"{self.test_min_size}, test_max_size={self.test_max_size}, size_divisible={self.size_divisible}, "
                f"resize_mode={self.resize_mode}, drop_empty_boxes={self.drop_empty_boxes}")


def _symbolic_size(height: Any, width: Any, min_size: int, max_size: int) -> tuple[Any, Any]:
    """:func:`detection.modeling.boxes.resized_shape` for ``torch.export``'s symbolic sizes
    (detection/deploy/export.py).

    Python's ``round`` of a symbolic size cannot be saved in a ``.pt2`` (``SerializeError: op <built-in function
    round> is not in _SYM_OPS``), and written with saveable operations it makes export and loading take minutes.
    So the same float64 product is rounded in a tensor (``torch.round`` halves to even, as ``round`` does) and read
    back as a new size, bounded by what the rule allows."""
    scale = resize_scale(height, width, min_size, max_size)
    sides = torch.stack([torch.scalar_tensor(height, dtype=torch.float64),
                         torch.scalar_tensor(width, dtype=torch.float64)])
    rounded = torch.round(sides * scale).to(torch.int64)
    out = (rounded[0].item(), rounded[1].item())
    for side in out:
        torch._check(side >= 1)
        torch._check(side <= max_size)  # the rule caps the longer side
    return out


class Proposed(NamedTuple):
    """The opening every detector shares (:meth:`FasterRCNN.propose`): the batch, the trunk's conv4 features
    ``[B, C, H/16, W/16]``, per image the RPN's proposals ``[P, 4]`` xyxy in the batch's (resized) pixels and, at
    test time, their objectness ``[P]`` (probabilities, descending); in training the RPN's losses instead."""

    batch: ImageBatch
    features: Tensor
    proposals: list[Tensor]
    objectness: list[Tensor] | None
    rpn_losses: dict[str, Tensor]


class FasterRCNN(nn.Module):
    """Faster R-CNN, C4 variant. In train mode ``model(images, targets)`` returns a dict of losses; in eval mode
    ``model(images)`` returns per image ``{"boxes": [N, 4] xyxy in original-image pixels, "scores": [N],
    "labels": [N] in 1..K}`` (0 is background).

    Test-time variants (``detection.testtime``) wrap a built model: they open with :meth:`propose` (transform →
    trunk → RPN) and then call the RoI heads' parts (``box_features / predict / detect``) in their own order.
    """

    def __init__(
        self,
        *,
        transform: ImageTransform,
        trunk: DetectorTrunk,
        rpn: RegionProposalNetwork,
        roi_heads: C4RoIHeads,
    ) -> None:
        super().__init__()
        self.transform = transform
        self.trunk = trunk
        self.rpn = rpn
        self.roi_heads = roi_heads

    @property
    def num_classes(self) -> int:
        return self.roi_heads.num_classes

    def forward(
        self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        if self.training and targets is None:
            raise ValueError("targets are required in training mode")
        original_sizes = [(int(i.shape[-2]), int(i.shape[-1])) for i in images]
        batch, features, proposals, _, rpn_losses = self.propose(images, targets)
        detections, roi_losses = self.roi_heads(features, proposals, batch.image_sizes, batch.targets)
        if self.training:
            return {**rpn_losses, **roi_losses}
        return self.transform.postprocess(detections, batch.image_sizes, original_sizes)

    def propose(self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None) -> Proposed:
        """Transform → trunk → RPN on ``images`` (float RGB ``[3, H, W]`` in [0, 1]). At test time the proposals
        come with their objectness (``rpn.propose``: ensembles NMS the union of several RPNs' proposals by it); in
        training with the RPN's losses on ``targets``."""
        batch = self.transform(images, targets)
        features = self.trunk(batch.tensor)
        if self.training:
            proposals, rpn_losses = self.rpn(features, batch.image_sizes, batch.targets)
            return Proposed(batch, features, proposals, None, rpn_losses)
        proposals, objectness = self.rpn.propose(features, batch.image_sizes)
        return Proposed(batch, features, proposals, objectness, {})

    def _load_from_state_dict(self, state_dict: dict[str, Tensor], prefix: str, *args: Any) -> None:
        # Checkpoints written before the box head was a module keep conv5_x under ``roi_heads.head.``; move those
        # keys to where conv5_x lives now (``roi_heads.box_head.head.``, or inside the global-context wrapper).
        # Runs before the children load (tests/detection/modeling/test_faster_rcnn.py holds an old-layout
        # checkpoint loading).
        old = prefix + "roi_heads.head."
        if any(k.startswith(old) for k in state_dict):
            conv5 = conv5_of(self.roi_heads.box_head)
            new = prefix + next(name for name, m in self.named_modules() if m is conv5) + "."
            for key in [k for k in state_dict if k.startswith(old)]:
                state_dict[new + key[len(old) :]] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args)
