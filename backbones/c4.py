"""The C4 split of a ResNet for Faster R-CNN (paper Appendix A).

The trunk (conv1 .. conv4_x, stride 16) runs once per image; RoI pooling follows; the head (conv5_x + global
average pool) runs once per RoI and plays the role of VGG's fc layers. Both parts share the classifier's modules,
so weights loaded into the classifier are the trunk's and head's.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn

__all__ = ["C4Head", "C4Trunk", "split_c4"]


class C4Trunk(nn.Sequential):
    """conv1, bn1, relu, maxpool, layer1, layer2, layer3: ``[N, 3, H, W] -> [N, out_channels, H/16, W/16]``.

    State-dict keys are the classifier's (``conv1.weight``, ``layer3.5.bn3.running_var`` ...).
    """

    stride = 16

    def __init__(self, modules: OrderedDict[str, nn.Module], out_channels: int) -> None:
        super().__init__(modules)
        self.out_channels = out_channels

    def freeze_at(self, stage: int) -> C4Trunk:
        """Stop gradients for stages 1..``stage`` (1 = conv1, 2 = conv1 + conv2_x, the paper's usual choice).

        Sets ``requires_grad=False`` on their parameters; BN is best frozen separately (``freeze_bn``).
        """
        stages = [("conv1", "bn1"), ("layer1",), ("layer2",), ("layer3",)]
        for names in stages[:stage]:
            for name in names:
                for p in getattr(self, name).parameters():
                    p.requires_grad_(False)
        return self


class C4Head(nn.Module):
    """layer4 (conv5_x) + global average pool + flatten: ``[R, C, h, w] -> [R, out_channels]``.

    Keys are the classifier's ``layer4.*``.
    """

    def __init__(self, layer4: nn.Module, out_channels: int) -> None:
        super().__init__()
        self.layer4 = layer4
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> Tensor:
        return self.layer4(x).mean(dim=(2, 3))


def split_c4(model: nn.Module) -> tuple[C4Trunk, C4Head]:
    """Split an ImageNet ``ResNet`` into its C4 trunk and conv5 head (modules shared, not copied).

    ``trunk.out_channels`` is 1024 for bottleneck nets and 256 for ResNet-18/34 (times ``base_width / 64``);
    ``head.out_channels`` is 2048 / 512. The classifier's ``fc`` is not part of either.
    """
    names = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
    missing = [n for n in names if not hasattr(model, n)]
    if missing:
        raise TypeError(f"split_c4 needs an ImageNet ResNet; {type(model).__name__} lacks {missing}")
    stage_channels = getattr(model, "stage_channels", None)
    if stage_channels is None:  # e.g. a torchvision ResNet: read the widths off the last conv of each stage
        stage_channels = tuple(
            [m for m in getattr(model, f"layer{i}").modules() if isinstance(m, nn.Conv2d)][-1].out_channels
            for i in (1, 2, 3, 4)
        )
    trunk = C4Trunk(OrderedDict((n, getattr(model, n)) for n in names[:-1]), out_channels=stage_channels[2])
    head = C4Head(model.layer4, out_channels=stage_channels[3])
    return trunk, head
