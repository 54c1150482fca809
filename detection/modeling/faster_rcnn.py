"""Faster R-CNN on the ResNet C4 split, with an API shaped like torchvision's detection models.

    batch = self.transform(images, targets)                        # normalise, resize (test), pad
    features = self.trunk(batch.tensor)                            # conv1 … conv4_x, stride 16
    proposals, rpn_losses = self.rpn(features, batch.image_sizes, batch.targets)
    detections, roi_losses = self.roi_heads(features, proposals, batch.image_sizes, batch.targets)
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detection.modeling.box_head import conv5_of
from detection.modeling.boxes import resized_shape, scale_boxes
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


class ImageTransform(nn.Module):
    """Normalise, resize (at test time: training images arrive resized by the data pipeline, with the same rule,
    ``detection.modeling.boxes.resize_scale``), pad into a batch; and map detections back to the original pixels.

    Normalising maps the toolkit's RGB [0, 1] images to what the backbone's weights expect: reorder the channels
    (``channel_order="BGR"`` for MSRA / detectron2 weights), multiply by ``pixel_scale`` (255 for those), then
    subtract ``pixel_mean`` and divide by ``pixel_std`` (given in the network's channel order and scale)."""

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
    ) -> None:
        super().__init__()
        if channel_order not in ("RGB", "BGR"):
            raise ValueError(f"channel_order must be 'RGB' or 'BGR', got {channel_order!r}")
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(3, 1, 1), persistent=False)
        self.test_min_size = test_min_size
        self.test_max_size = test_max_size
        self.size_divisible = size_divisible
        self.channel_order = channel_order
        self.pixel_scale = pixel_scale

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
        min_size = self.test_min_size if min_size is None else min_size
        max_size = self.test_max_size if max_size is None else max_size
        out, sizes = [], []
        for i, image in enumerate(images):
            if image.dim() != 3 or image.shape[0] != 3:
                raise ValueError(f"image {i}: expected a float tensor [3, H, W], got shape {tuple(image.shape)}")
            image = (self.to_network_pixels(image) - self.pixel_mean) / self.pixel_std
            if not self.training:
                h, w = image.shape[-2:]
                size = resized_shape(h, w, min_size, max_size)
                if size != (h, w):
                    image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]
            out.append(image)
            sizes.append((int(image.shape[-2]), int(image.shape[-1])))
        return ImageBatch(self.batch(out), sizes, targets)

    def to_network_pixels(self, image: Tensor) -> Tensor:
        """``[3, H, W]`` RGB in [0, 1] → the weights' channel order and scale (before the mean and std)."""
        if self.channel_order == "BGR":
            image = image.flip(0)
        return image * self.pixel_scale if self.pixel_scale != 1.0 else image

    def extra_repr(self) -> str:
        return (f"channel_order={self.channel_order}, pixel_scale={self.pixel_scale}, test_min_size="
                f"{self.test_min_size}, test_max_size={self.test_max_size}, size_divisible={self.size_divisible}")

    def batch(self, images: list[Tensor]) -> Tensor:
        d = self.size_divisible
        height = int(math.ceil(max(i.shape[-2] for i in images) / d) * d)
        width = int(math.ceil(max(i.shape[-1] for i in images) / d) * d)
        batch = images[0].new_zeros((len(images), 3, height, width))
        for image, slot in zip(images, batch):
            slot[:, : image.shape[-2], : image.shape[-1]].copy_(image)
        return batch

    @staticmethod
    def postprocess(
        detections: list[dict[str, Tensor]],
        image_sizes: list[tuple[int, int]],
        original_sizes: list[tuple[int, int]],
    ) -> list[dict[str, Tensor]]:
        """Scale boxes from the resized image back to the original image's pixels."""
        for det, size, original in zip(detections, image_sizes, original_sizes):
            det["boxes"] = scale_boxes(det["boxes"], size, original)
        return detections


class FasterRCNN(nn.Module):
    """Faster R-CNN, C4 variant. In train mode ``model(images, targets)`` returns a dict of losses; in eval mode
    ``model(images)`` returns per image ``{"boxes": [N, 4] xyxy in original-image pixels, "scores": [N],
    "labels": [N] in 1..K}`` (0 is background).

    Test-time variants (``detection.testtime.pyramid.MultiScaleDetector``) wrap a built model and call its parts
    (``transform``, ``trunk``, ``rpn``, ``roi_heads.box_features / predict / detect``) in their own order.
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
        batch = self.transform(images, targets)
        features = self.trunk(batch.tensor)
        proposals, rpn_losses = self.rpn(features, batch.image_sizes, batch.targets)
        detections, roi_losses = self.roi_heads(features, proposals, batch.image_sizes, batch.targets)
        if self.training:
            return {**rpn_losses, **roi_losses}
        return self.transform.postprocess(detections, batch.image_sizes, original_sizes)

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
