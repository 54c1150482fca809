"""The paper's ResNets (ImageNet and CIFAR), frozen BatchNorm, the C4 trunk/head split and weight loading.

Checkpoint files are `backbones.checkpoint`; the training plumbing both trainers share is `backbones.runtime`.
"""

from backbones.c4 import split_c4
from backbones.cifar import build_cifar_resnet
from backbones.frozen_bn import FrozenBatchNorm2d, freeze_bn, fuse_conv_frozen_bn
from backbones.resnet import MSRA_INPUT, TORCHVISION_INPUT, build_resnet
from backbones.weights import WeightsError, load_weights

__all__ = [
    "MSRA_INPUT",
    "TORCHVISION_INPUT",
    "FrozenBatchNorm2d",
    "WeightsError",
    "build_cifar_resnet",
    "build_resnet",
    "freeze_bn",
    "fuse_conv_frozen_bn",
    "load_weights",
    "split_c4",
]
