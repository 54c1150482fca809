"""Faster R-CNN on the ResNet C4 split, with an API shaped like torchvision's detection models.

    batch, image_sizes, targets = self.transform(images, targets)
    features = self.trunk(batch)                                   # conv1 … conv4_x, stride 16
    proposals, rpn_losses = self.rpn(features, image_sizes, targets)
    detections, roi_losses = self.roi_heads(features, proposals, image_sizes, targets)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detection.roi_heads import C4RoIHeads
from detection.rpn import RegionProposalNetwork


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


def resized_shape(height: int, width: int, min_size: int, max_size: int) -> tuple[int, int]:
    """Shorter side → ``min_size`` unless the longer side would exceed ``max_size`` (Fast R-CNN's rule)."""
    scale = min(min_size / min(height, width), max_size / max(height, width))
    return round(height * scale), round(width * scale)


class ImageTransform(nn.Module):
    """Normalise, resize (at test time; training images arrive resized by the data pipeline), pad into a batch."""

    def __init__(
        self,
        *,
        pixel_mean: list[float],
        pixel_std: list[float],
        test_min_size: int,
        test_max_size: int,
        size_divisible: int = 32,
        resize_in_train: bool = False,
        train_min_size: int = 600,
        train_max_size: int = 1000,
    ) -> None:
        super().__init__()
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(3, 1, 1), persistent=False)
        self.test_min_size = test_min_size
        self.test_max_size = test_max_size
        self.size_divisible = size_divisible
        self.resize_in_train = resize_in_train
        self.train_min_size = train_min_size
        self.train_max_size = train_max_size

    def forward(
        self,
        images: list[Tensor],
        targets: list[dict[str, Tensor]] | None = None,
        min_size: int | None = None,
        max_size: int | None = None,
    ) -> tuple[Tensor, list[tuple[int, int]], list[dict[str, Tensor]] | None]:
        """``images``: float RGB ``[3, H, W]`` in [0, 1]. Returns the padded batch ``[B, 3, H', W']``, each
        image's size inside it, and targets with boxes scaled to match."""
        resize = not self.training or self.resize_in_train
        if min_size is None:
            min_size = self.train_min_size if self.training else self.test_min_size
        if max_size is None:
            max_size = self.train_max_size if self.training else self.test_max_size
        out, sizes, new_targets = [], [], []
        for i, image in enumerate(images):
            if image.dim() != 3 or image.shape[0] != 3:
                raise ValueError(f"image {i}: expected a float tensor [3, H, W], got shape {tuple(image.shape)}")
            image = (image - self.pixel_mean) / self.pixel_std
            h, w = image.shape[-2:]
            if resize:
                nh, nw = resized_shape(h, w, min_size, max_size)
                if (nh, nw) != (h, w):
                    image = F.interpolate(image[None], size=(nh, nw), mode="bilinear", align_corners=False)[0]
                if targets is not None:
                    target = dict(targets[i])
                    scale = torch.tensor([nw / w, nh / h, nw / w, nh / h], device=image.device)
                    target["boxes"] = target["boxes"] * scale
                    new_targets.append(target)
                h, w = nh, nw
            out.append(image)
            sizes.append((int(h), int(w)))
        if targets is not None and not new_targets:
            new_targets = list(targets)
        return self.batch(out), sizes, (new_targets if targets is not None else None)

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
        for det, (h, w), (oh, ow) in zip(detections, image_sizes, original_sizes):
            scale = torch.tensor([ow / w, oh / h, ow / w, oh / h], device=det["boxes"].device)
            det["boxes"] = det["boxes"] * scale
        return detections


class FasterRCNN(nn.Module):
    """Faster R-CNN, C4 variant. In train mode ``model(images, targets)`` returns a dict of losses; in eval mode
    ``model(images)`` returns per image ``{"boxes": [N, 4] xyxy in original-image pixels, "scores": [N],
    "labels": [N] in 1..K}`` (0 is background)."""

    def __init__(
        self,
        *,
        transform: ImageTransform,
        trunk: DetectorTrunk,
        rpn: RegionProposalNetwork,
        roi_heads: C4RoIHeads,
        pyramid_min_sizes: list[int] | None = None,
        pyramid_max_size: int = 2000,
    ) -> None:
        super().__init__()
        self.transform = transform
        self.trunk = trunk
        self.rpn = rpn
        self.roi_heads = roi_heads
        self.pyramid_min_sizes = sorted(pyramid_min_sizes or [])
        self.pyramid_max_size = pyramid_max_size

    @property
    def num_classes(self) -> int:
        return self.roi_heads.num_classes

    def forward(
        self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        if self.training and targets is None:
            raise ValueError("targets are required in training mode")
        original_sizes = [(int(i.shape[-2]), int(i.shape[-1])) for i in images]
        if not self.training and self.pyramid_min_sizes:
            from detection.multiscale import multi_scale_detect

            return multi_scale_detect(self, images, self.pyramid_min_sizes, self.pyramid_max_size)
        batch, image_sizes, targets = self.transform(images, targets)
        features = self.trunk(batch)
        proposals, rpn_losses = self.rpn(features, image_sizes, targets)
        detections, roi_losses = self.roi_heads(features, proposals, image_sizes, targets)
        if self.training:
            return {**rpn_losses, **roi_losses}
        return self.transform.postprocess(detections, image_sizes, original_sizes)
