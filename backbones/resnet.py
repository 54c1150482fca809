"""The paper's ImageNet ResNets (Table 1) with torchvision's module names and stride placement.

With shortcut option "B" and the default style, state-dict keys, shapes and the forward pass are those of
torchvision's ``resnet{depth}``, so torchvision checkpoints load strictly. Options "A" and "C" and the plain nets
change only the shortcut modules. ``style="msra"`` puts the stride of a down-sampling bottleneck on its first 1x1
conv, as in the paper's original Caffe models.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from backbones.frozen_bn import freeze_bn

__all__ = [
    "MSRA_INPUT",
    "STAGE_BLOCKS",
    "TORCHVISION_INPUT",
    "BasicBlock",
    "Bottleneck",
    "InputSpec",
    "ResNet",
    "ZeroPadShortcut",
    "build_resnet",
    "make_shortcut",
]

Shortcut = Literal["A", "B", "C"]
Style = Literal["torchvision", "msra"]

# Blocks per stage (conv2_x .. conv5_x), Table 1.
STAGE_BLOCKS: dict[int, tuple[int, int, int, int]] = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}


@dataclass(frozen=True)
class InputSpec:
    """The pixel format a backbone's weights expect.

    ``normalize`` maps toolkit images (RGB in [0, 1], ``[N, 3, H, W]`` or ``[3, H, W]``) to that format:
    optional RGB->BGR flip, multiply by ``scale``, subtract ``mean``, divide by ``std`` (per channel, in the
    target channel order).
    """

    channel_order: Literal["RGB", "BGR"]
    scale: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def normalize(self, images: Tensor) -> Tensor:
        if self.channel_order == "BGR":
            images = images.flip(-3)
        mean = torch.tensor(self.mean, dtype=images.dtype, device=images.device).view(3, 1, 1)
        std = torch.tensor(self.std, dtype=images.dtype, device=images.device).view(3, 1, 1)
        return (images * self.scale - mean) / std


TORCHVISION_INPUT = InputSpec("RGB", 1.0, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
MSRA_INPUT = InputSpec("BGR", 255.0, (103.530, 116.280, 123.675), (1.0, 1.0, 1.0))


class ZeroPadShortcut(nn.Module):
    """Option A shortcut: identity, subsampled by ``stride``, extra channels zero-filled. No parameters.

    Shapes: ``[N, C_in, H, W] -> [N, C_out, ceil(H / stride), ceil(W / stride)]`` (the size of a stride-s conv
    with "same" padding, so it matches the residual branch).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        if out_channels < in_channels:
            raise ValueError(f"option A cannot reduce channels ({in_channels} -> {out_channels})")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        extra = self.out_channels - self.in_channels
        if extra:
            x = F.pad(x, (0, 0, 0, 0, 0, extra))
        return x

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}"


def make_shortcut(option: Shortcut, in_channels: int, out_channels: int, stride: int) -> nn.Module | None:
    """The shortcut module of one block for paper option A/B/C; ``None`` means plain identity.

    A: zero-pad identity where dimensions change. B: 1x1 projection + BN where dimensions change (torchvision's
    ``downsample``). C: 1x1 projection + BN in every block.
    """
    changes = stride != 1 or in_channels != out_channels
    if option == "C" or (option == "B" and changes):
        return nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
            nn.BatchNorm2d(out_channels),
        )
    if option == "A" and changes:
        return ZeroPadShortcut(in_channels, out_channels, stride)
    if option not in ("A", "B", "C"):
        raise ValueError(f"shortcut must be 'A', 'B' or 'C', got {option!r}")
    return None


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs (ResNet-18/34, CIFAR). ``residual=False`` gives the plain-net block (no shortcut at all).

    Shapes: ``[N, C_in, H, W] -> [N, planes, H / stride, W / stride]``.
    """

    expansion = 1

    def __init__(
        self,
        in_channels: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        residual: bool = True,
    ) -> None:
        super().__init__()
        # Registration order conv -> bn matters: fuse_conv_frozen_bn pairs siblings in this order.
        self.conv1 = conv3x3(in_channels, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.residual = residual
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.residual:
            out += x if self.downsample is None else self.downsample(x)
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4) (ResNet-50/101/152).

    The stride sits on the 3x3 (torchvision, ``stride_in_1x1=False``) or on the first 1x1 (MSRA Caffe models).
    Shapes: ``[N, C_in, H, W] -> [N, 4 * planes, H / stride, W / stride]``.
    """

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        residual: bool = True,
        stride_in_1x1: bool = False,
    ) -> None:
        super().__init__()
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = conv1x1(in_channels, planes, stride_1x1)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride_3x3)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.residual = residual
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.residual:
            out += x if self.downsample is None else self.downsample(x)
        return self.relu(out)


def init_he(model: nn.Module) -> None:
    """torchvision's initialisation: He normal (fan_out) for convs, BN weight 1 / bias 0, Linear left at default."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)


class ResNet(nn.Module):
    """ImageNet ResNet (Table 1). Build it with ``build_resnet``.

    Attributes: ``depth``, ``shortcut``, ``plain``, ``style``, ``base_width``, ``stage_channels`` (output channels
    of conv2_x..conv5_x), ``num_features`` (channels entering the classifier), ``input_spec``.
    Shapes: ``forward``: ``[N, 3, H, W] -> [N, num_classes]``; ``forward_features``: ``-> [N, num_features,
    H/32, W/32]`` (rounded up at each stride); ``forward_head``: ``[N, num_features, h, w] -> [N, num_classes]``.
    """

    def __init__(
        self,
        depth: int,
        *,
        num_classes: int = 1000,
        shortcut: Shortcut = "B",
        plain: bool = False,
        base_width: int = 64,
        style: Style = "torchvision",
    ) -> None:
        super().__init__()
        if depth not in STAGE_BLOCKS:
            raise ValueError(f"depth must be one of {sorted(STAGE_BLOCKS)}, got {depth}")
        if shortcut not in ("A", "B", "C"):
            raise ValueError(f"shortcut must be 'A', 'B' or 'C', got {shortcut!r}")
        if style not in ("torchvision", "msra"):
            raise ValueError(f"style must be 'torchvision' or 'msra', got {style!r}")
        if base_width < 1:
            raise ValueError(f"base_width must be positive, got {base_width}")
        self.depth = depth
        self.shortcut = shortcut
        self.plain = plain
        self.style = style
        self.base_width = base_width
        self.input_spec = MSRA_INPUT if style == "msra" else TORCHVISION_INPUT
        block: type[BasicBlock | Bottleneck] = BasicBlock if depth < 50 else Bottleneck
        self.block = block

        self.conv1 = nn.Conv2d(3, base_width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(base_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_channels = base_width
        stages = []
        for index, num_blocks in enumerate(STAGE_BLOCKS[depth]):
            planes = base_width * 2**index
            stride = 1 if index == 0 else 2  # conv3_1, conv4_1, conv5_1 down-sample
            stages.append(self._make_stage(block, in_channels, planes, num_blocks, stride))
            in_channels = planes * block.expansion
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.stage_channels = tuple(base_width * 2**i * block.expansion for i in range(4))
        self.num_features = in_channels
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(in_channels, num_classes)
        init_he(self)

    def _make_stage(
        self, block: type[BasicBlock | Bottleneck], in_channels: int, planes: int, num_blocks: int, stride: int
    ) -> nn.Sequential:
        blocks = []
        out_channels = planes * block.expansion
        for i in range(num_blocks):
            block_in, block_stride = (in_channels, stride) if i == 0 else (out_channels, 1)
            downsample = None if self.plain else make_shortcut(self.shortcut, block_in, out_channels, block_stride)
            extra = {"stride_in_1x1": self.style == "msra"} if block is Bottleneck else {}
            blocks.append(block(block_in, planes, block_stride, downsample, not self.plain, **extra))
        return nn.Sequential(*blocks)

    def forward_features(self, x: Tensor) -> Tensor:
        """``[N, 3, H, W] -> [N, num_features, H/32, W/32]``: everything before global pooling."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)

    def forward_head(self, features: Tensor) -> Tensor:
        """``[N, num_features, h, w] -> [N, num_classes]``: global average pool and the fc layer."""
        return self.fc(torch.flatten(self.avgpool(features), 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


def build_resnet(
    depth: int,
    *,
    num_classes: int = 1000,
    shortcut: Shortcut = "B",
    plain: bool = False,
    frozen_bn: bool = False,
    base_width: int = 64,
    style: Style = "torchvision",
) -> ResNet:
    """Build the paper's ImageNet ResNet-{18,34,50,101,152} (He-initialised).

    Args:
        depth: 18, 34, 50, 101 or 152.
        num_classes: size of the final fc layer.
        shortcut: paper option "A" (zero-pad identity), "B" (projection where dimensions change; torchvision) or
            "C" (projection everywhere). Ignored when ``plain``.
        plain: the plain counterpart (same stacks, no shortcuts at all).
        frozen_bn: replace every BatchNorm2d by ``FrozenBatchNorm2d`` (for detection fine-tuning).
        base_width: width of conv1 and conv2_x; later stages double it (64 gives Table 1; 16 is a small CPU net).
        style: "torchvision" (stride on the 3x3) or "msra" (stride on the first 1x1, BGR 0-255 mean-only input,
            see ``model.input_spec``); only bottleneck nets differ.

    Returns:
        ``ResNet`` mapping ``[N, 3, H, W]`` images, normalised with ``model.input_spec``, to ``[N, num_classes]``.
    """
    model = ResNet(depth, num_classes=num_classes, shortcut=shortcut, plain=plain, base_width=base_width, style=style)
    if frozen_bn:
        freeze_bn(model)
    return model
