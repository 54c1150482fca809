"""Speed-ups that leave the detector's outputs unchanged (up to float rounding), each a module swap.

A built model runs only its plain parts. The two functions here replace parts of it, in place, with modules that
compute the same outputs faster; every choice (device, inference or training, CPU instruction set) is made here,
once, and stored in the module tree, so ``repr(model)`` shows what runs. The swapped-in modules never pick a path
by device, grad mode or ``requires_grad`` (``BlockedNMS`` alone defers to torchvision's kernel while it is traced
for export; its docstring says why), add no hooks and change no process-wide state in a forward.

``optimize_for_inference``: eval mode; folds every frozen BN into the convolution before it
(``backbones.fuse_conv_frozen_bn``; the BN's separate multiply and add were about a fifth of CPU inference time);
no parameter needs a gradient; stores the weights channels-last (oneDNN / cuDNN run NHWC kernels without
reordering their inputs). Then:

- each RoIAlign box head with a bottleneck conv5 → ``CommutedRoIAlignBoxHead(in_place=True)``
  (``detection.fast.commuted_head``: conv5_1's affine 1×1 layers run on the stride-16 map before the pooling);
  any device;
- with the parameters on the CPU, each RoIPool box head → ``FactoredC4BoxHead`` with
  ``GatherRoIPool(windows='auto')`` (``detection.fast.factored_head``, ``detection.fast.gather_pool``; a basic
  block conv5 gets the ``GatherRoIPool`` only), and the RPN's ``NMS`` → ``BlockedNMS`` (``detection.fast.nms``).

``optimize_for_training`` does the fold for training without changing the parameters or the state-dict keys:
each convolution followed by a frozen BN becomes a ``ConvFrozenBN2d`` computing ``conv(x, w · s) + b`` with
``(s, b)`` read from the BN's buffers at every call, so gradients still reach ``w`` and checkpoints load into the
plain model and back. It makes the same box-head swaps with the choices autograd needs (``in_place=False``;
``windows='map'``, torchvision's gradient routing under ties), whose gradients equal the plain head's
(tests/detection/fast/test_optimize.py), and the ``BlockedNMS`` swap on the CPU. On CPUs without AVX-512 (asked
once, here) it swaps the trainable 3×3 convolutions outside the box heads (the trunk's and the RPN's) for
``NCHWConv2d`` / ``NCHWConvFrozenBN2d`` (:func:`keep_nchw`): there oneDNN's channels-last backward for them ran
1.2–1.7× slower than NCHW, while the box head's convolutions run faster channels-last (docs/benchmarks.md, "AVX2
machine").

Both work in place and return the model; wrap inference in ``torch.inference_mode()`` (and ``torch.autocast`` for
bf16) yourself.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from backbones.frozen_bn import FrozenBatchNorm2d, conv_bn_pairs, fuse_conv_frozen_bn
from detection.fast.commuted_head import CommutedRoIAlignBoxHead
from detection.fast.conv5_first_block import supports_first_block
from detection.fast.factored_head import FactoredC4BoxHead
from detection.fast.gather_pool import GatherRoIPool
from detection.fast.nms import BlockedNMS
from detection.modeling.box_head import C4BoxHead
from detection.modeling.boxes import NMS
from detection.modeling.pooling import RoIAlign, RoIPool

__all__ = [
    "ConvFrozenBN2d",
    "FoldedFrozenBatchNorm2d",
    "NCHWConv2d",
    "NCHWConvFrozenBN2d",
    "keep_nchw",
    "optimize_for_inference",
    "optimize_for_training",
    "swap_commuted_box_heads",
    "swap_gather_box_heads",
    "swap_nms",
]


def optimize_for_inference(model: nn.Module, *, channels_last: bool = True, fast_box_heads: bool = True) -> nn.Module:
    """Eval mode, frozen BNs folded into convs, no parameter needs a gradient, optionally channels-last weights,
    and the fast parts swapped in: RoIAlign → :func:`swap_commuted_box_heads` (finishing in place); with the
    parameters on the CPU, RoIPool → :func:`swap_gather_box_heads` (few wide windows gathered) and the RPN's NMS →
    :func:`swap_nms`.

    ``model`` is a ``FasterRCNN`` (or any module built from this toolkit's ResNet blocks). State-dict keys change
    (the BNs become ``Identity``, the convs gain a bias): load checkpoints and move the model to its device before
    calling this. ``fast_box_heads=False`` keeps the box heads as built (torchvision's RoI ops).
    """
    model.eval()
    fuse_conv_frozen_bn(model)
    model.requires_grad_(False)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    on_cpu = _on_cpu(model)
    if fast_box_heads:
        swap_commuted_box_heads(model, in_place=True)
    if fast_box_heads and on_cpu:
        swap_gather_box_heads(model, windows="auto")
    if on_cpu:
        swap_nms(model)
    return model


def swap_nms(model: nn.Module) -> nn.Module:
    """Replace, in place, each plain NMS part (``detection.modeling.boxes.NMS``: the RPN's) by
    ``detection.fast.nms.BlockedNMS``, the same indices faster on the CPU."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is NMS:
                setattr(parent, name, BlockedNMS())
    return model


def swap_commuted_box_heads(model: nn.Module, *, in_place: bool = False) -> nn.Module:
    """Replace, in place, each ``C4BoxHead`` with a RoIAlign pooler and a bottleneck conv5 by a
    ``CommutedRoIAlignBoxHead`` (same pooler and head modules, so the same parameters and state-dict keys).
    ``in_place`` only for inference: the head then adds its constants into the pooled maps in place."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is C4BoxHead and type(child.pooler) is RoIAlign and supports_first_block(child.head):
                setattr(parent, name, CommutedRoIAlignBoxHead(pooler=child.pooler, head=child.head, in_place=in_place))
    return model


def swap_gather_box_heads(model: nn.Module, *, windows: str = "map") -> nn.Module:
    """Replace, in place, each ``C4BoxHead`` with a RoIPool pooler by its fast path: a ``FactoredC4BoxHead`` when
    conv5_1 starts with per-position layers (bottleneck nets), else the same box head with ``GatherRoIPool``.
    Same parameters; with ``windows="map"`` gradients reach the features through the gather as through
    torchvision's RoIPool (the first maximum of each window, in the same scan order); ``"auto"`` (inference)
    gathers the few windows of wide bins instead of max-pooling the whole map for them
    (``detection.fast.gather_pool.roi_pool_factored``)."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is not C4BoxHead or type(child.pooler) is not RoIPool:
                continue
            pooler = GatherRoIPool.from_roi_pool(child.pooler, windows=windows)
            if supports_first_block(child.head):
                setattr(parent, name, FactoredC4BoxHead(pooler=pooler, head=child.head))
            else:
                child.pooler = pooler
    return model


def _on_cpu(model: nn.Module) -> bool:
    return all(p.device.type == "cpu" for p in model.parameters())


class FoldedFrozenBatchNorm2d(FrozenBatchNorm2d):
    """A frozen BN whose affine map the preceding :class:`ConvFrozenBN2d` applies: same buffers and state-dict
    keys as ``FrozenBatchNorm2d``, identity forward."""

    def forward(self, x: Tensor) -> Tensor:
        return x


class ConvFrozenBN2d(nn.Conv2d):
    """``bn(conv(x))`` as a single convolution with weight ``w · s`` and bias ``b (+ conv bias · s)``.

    Shares its ``weight`` (and ``bias``) Parameter with the convolution it replaces, and reads the BN's buffers at
    every call, so optimisers, checkpoints and ``load_state_dict`` see exactly the plain model's tensors. The BN is
    held outside the module tree (it stays registered, as a ``FoldedFrozenBatchNorm2d``, under its own name).
    """

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, bn: FoldedFrozenBatchNorm2d) -> ConvFrozenBN2d:
        fused = cls.__new__(cls)
        nn.Module.__init__(fused)
        for name in ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "transposed",
                     "output_padding", "groups", "padding_mode", "_reversed_padding_repeated_twice"):
            setattr(fused, name, getattr(conv, name))
        fused.weight = conv.weight
        fused.bias = conv.bias
        fused.__dict__["frozen_bn"] = bn  # not a submodule: its keys stay where they were
        fused.train(conv.training)
        return fused

    def forward(self, x: Tensor) -> Tensor:
        scale, shift = self.__dict__["frozen_bn"].scale_and_shift()
        weight = self.weight * scale.to(self.weight.dtype).view(-1, 1, 1, 1)
        bias = shift if self.bias is None else self.bias * scale + shift
        return self._conv_forward(x, weight, bias.to(self.weight.dtype))


def fold_frozen_bn_for_training(module: nn.Module) -> nn.Module:
    """Replace each (``nn.Conv2d``, ``FrozenBatchNorm2d``) sibling pair (``backbones.frozen_bn.conv_bn_pairs``) by
    (``ConvFrozenBN2d``, ``FoldedFrozenBatchNorm2d``). In place; returns ``module``."""
    for parent, conv_name, bn_name in conv_bn_pairs(module, exact=True):
        bn = getattr(parent, bn_name)
        folded = FoldedFrozenBatchNorm2d(bn.num_features, eps=bn.eps)
        for name, buffer in bn.named_buffers(recurse=False):
            setattr(folded, name, buffer)
        setattr(parent, bn_name, folded)
        setattr(parent, conv_name, ConvFrozenBN2d.from_conv(getattr(parent, conv_name), folded))
    return module


def optimize_for_training(
    model: nn.Module, *, channels_last: bool = True, fast_box_heads: bool = True, nchw_3x3: bool | None = None
) -> nn.Module:
    """Fold the frozen BNs into their convs for training (same parameters and state-dict keys), optionally store
    the weights channels-last, and swap in the fast box heads (:func:`swap_commuted_box_heads` for RoIAlign,
    :func:`swap_gather_box_heads` for RoIPool; both differentiable, on any device) and, with the parameters on the
    CPU, the RPN's blocked NMS (:func:`swap_nms`). Build the optimiser before or after: the Parameter objects do not
    change. ``fast_box_heads=False`` keeps the box heads as built.

    ``nchw_3x3``: run the trainable 3×3 convolutions outside the box heads in NCHW inside the channels-last model
    (:func:`keep_nchw`); ``None`` chooses it, here, on CPUs whose best instruction set is below AVX-512."""
    fold_frozen_bn_for_training(model)
    if channels_last:
        model.to(memory_format=torch.channels_last)
        if nchw_3x3 is None:
            nchw_3x3 = _below_avx512(model)
        if nchw_3x3:
            keep_nchw(model)
    if fast_box_heads:
        swap_commuted_box_heads(model, in_place=False)
        swap_gather_box_heads(model, windows="map")
    if _on_cpu(model):
        swap_nms(model)
    return model


def _below_avx512(model: nn.Module) -> bool:
    """Parameters on the CPU, and the CPU's best kernel set (``torch.backends.cpu``) below AVX-512."""
    return _on_cpu(model) and torch.backends.cpu.get_cpu_capability() in ("DEFAULT", "NO AVX", "AVX", "AVX2")


class NCHWConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` that runs in NCHW inside a channels-last model: contiguous input, its weight stored
    contiguous, output made channels-last again (the same numbers up to float rounding). Swapped in by
    :func:`keep_nchw`."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.contiguous()).contiguous(memory_format=torch.channels_last)


class NCHWConvFrozenBN2d(ConvFrozenBN2d):
    """:class:`ConvFrozenBN2d` run in NCHW inside a channels-last model, as :class:`NCHWConv2d`."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.contiguous()).contiguous(memory_format=torch.channels_last)


def keep_nchw(model: nn.Module) -> list[str]:
    """Swap each trainable 3×3 convolution outside the box heads for its NCHW form (:class:`NCHWConv2d`,
    :class:`NCHWConvFrozenBN2d`): the same Parameter objects, state-dict keys and numbers (up to float rounding),
    shown in ``repr(model)``. Returns the names of the convolutions swapped."""
    in_box_heads = {id(m) for head in model.modules() if isinstance(head, C4BoxHead) for m in head.modules()}
    changed = []
    for parent_name, parent in list(model.named_modules()):
        for name, conv in list(parent.named_children()):
            if not (isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3) and conv.weight.requires_grad
                    and id(conv) not in in_box_heads and not isinstance(conv, (NCHWConv2d, NCHWConvFrozenBN2d))):
                continue
            nchw_class = NCHWConvFrozenBN2d if isinstance(conv, ConvFrozenBN2d) else NCHWConv2d
            nchw = nchw_class.__new__(nchw_class)
            nchw.__dict__.update(conv.__dict__)  # the same parameters, buffers and settings
            nchw.weight.data = nchw.weight.data.contiguous()
            setattr(parent, name, nchw)
            changed.append(f"{parent_name}.{name}" if parent_name else name)
    return changed
