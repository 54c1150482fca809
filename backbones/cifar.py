"""The paper's CIFAR-10 ResNets (Sec. 4.2, Table 6): 6n+2 layers, 16/32/64 filters on 32/16/8 maps."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from backbones.resnet import BasicBlock, Shortcut, init_he, make_shortcut

__all__ = ["CifarResNet", "build_cifar_resnet"]

CIFAR_WIDTHS = (16, 32, 64)


class CifarResNet(nn.Module):
    """3x3 conv (16) -> three stages of n basic blocks -> global average pool -> fc. Build with
    ``build_cifar_resnet``.

    Shapes: ``forward``: ``[N, 3, 32, 32] -> [N, num_classes]``; ``forward_features``: ``-> [N, 64, 8, 8]``;
    ``forward_head``: ``[N, 64, h, w] -> [N, num_classes]``.
    """

    def __init__(self, depth: int, *, num_classes: int = 10, shortcut: Shortcut = "A", plain: bool = False) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 with n >= 1 (20, 32, 44, 56, 110, ...), got {depth}")
        if shortcut not in ("A", "B", "C"):
            raise ValueError(f"shortcut must be 'A', 'B' or 'C', got {shortcut!r}")
        self.depth = depth
        self.shortcut = shortcut
        self.plain = plain
        blocks_per_stage = (depth - 2) // 6

        self.conv1 = nn.Conv2d(3, CIFAR_WIDTHS[0], kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(CIFAR_WIDTHS[0])
        self.relu = nn.ReLU(inplace=True)
        in_channels = CIFAR_WIDTHS[0]
        stages = []
        for index, width in enumerate(CIFAR_WIDTHS):
            blocks = []
            for i in range(blocks_per_stage):
                stride = 2 if index > 0 and i == 0 else 1
                downsample = None if plain else make_shortcut(shortcut, in_channels, width, stride)
                blocks.append(BasicBlock(in_channels, width, stride, downsample, residual=not plain))
                in_channels = width
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.num_features = in_channels
        self.fc = nn.Linear(in_channels, num_classes)
        init_he(self)

    def forward_features(self, x: Tensor) -> Tensor:
        """``[N, 3, H, W] -> [N, 64, H/4, W/4]``: everything before global pooling."""
        x = self.relu(self.bn1(self.conv1(x)))
        return self.layer3(self.layer2(self.layer1(x)))

    def forward_head(self, features: Tensor) -> Tensor:
        """``[N, 64, h, w] -> [N, num_classes]``."""
        return self.fc(torch.flatten(features.mean(dim=(2, 3)), 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


def build_cifar_resnet(
    depth: int, *, num_classes: int = 10, shortcut: Shortcut = "A", plain: bool = False
) -> CifarResNet:
    """Build the CIFAR ResNet with ``depth = 6n + 2`` (20, 32, 44, 56, 110, 1202, ...), He-initialised.

    Option "A" (parameter-free shortcuts) is the paper's choice and gives Table 6's parameter counts; ``plain``
    removes the shortcuts. Input: ``[N, 3, 32, 32]`` per-pixel-mean-subtracted images; output ``[N, num_classes]``.
    """
    return CifarResNet(depth, num_classes=num_classes, shortcut=shortcut, plain=plain)
