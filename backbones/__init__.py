"""The paper's ResNets (ImageNet and CIFAR), frozen BatchNorm, the C4 trunk/head split and weight loading."""

from backbones.c4 import C4Head, C4Trunk, split_c4
from backbones.checkpoint import (
    CheckpointError,
    get_rng_state,
    latest_good_checkpoint,
    load_checkpoint,
    save_checkpoint,
    set_rng_state,
)
from backbones.cifar import CifarResNet, build_cifar_resnet
from backbones.frozen_bn import FrozenBatchNorm2d, freeze_bn, fuse_conv_frozen_bn
from backbones.resnet import MSRA_INPUT, TORCHVISION_INPUT, InputSpec, ResNet, build_resnet
from backbones.weights import LoadResult, WeightsError, load_weights

__all__ = [
    "MSRA_INPUT",
    "TORCHVISION_INPUT",
    "C4Head",
    "C4Trunk",
    "CheckpointError",
    "CifarResNet",
    "FrozenBatchNorm2d",
    "InputSpec",
    "LoadResult",
    "ResNet",
    "WeightsError",
    "build_cifar_resnet",
    "build_resnet",
    "freeze_bn",
    "fuse_conv_frozen_bn",
    "get_rng_state",
    "latest_good_checkpoint",
    "load_checkpoint",
    "load_weights",
    "save_checkpoint",
    "set_rng_state",
    "split_c4",
]
