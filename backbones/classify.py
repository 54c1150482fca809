"""Classifier construction by name and the paper's testing protocols (Sec. 3.4).

- center: one central crop per image.
- 10crop: 4 corners + centre of the crop and their flips, from the image resized to shorter side 256;
  softmax probabilities averaged over the 10 views.
- fullconv: the whole image at shorter sides {224, 256, 384, 480, 640} (and flipped). The fc layer runs as a 1×1
  convolution over the conv5 map, the class-logit map is averaged spatially (identical to global average pooling
  then fc, both being linear), turned into softmax probabilities, and those are averaged across scales and flips.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from backbones import build_cifar_resnet, build_resnet, load_weights, runtime
from backbones.checkpoint import CheckpointError, load_checkpoint
from backbones.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Normalizer,
    build_eval_dataset,
    eval_view,
    pixel_mean_std,
    read_cifar_batches,
)

MODES = ("center", "10crop", "fullconv")
_ARCH = re.compile(r"^(cifar_)?(resnet|plain)(\d+)$")


def build_classifier(arch: str, *, num_classes: int, base_width: int = 64, shortcut: str | None = None) -> nn.Module:
    """`resnet{18,34,50,101,152}`, `plain{18,34,…}`, `cifar_resnet{20,32,44,56,110,…}`, `cifar_plain{…}`.

    `shortcut` defaults to the paper's choice: "B" for ImageNet nets, "A" for CIFAR nets.
    """
    m = _ARCH.match(arch)
    if m is None:
        raise ValueError(
            f"unknown arch {arch!r}: use resnet<depth>, plain<depth>, cifar_resnet<depth>, cifar_plain<depth>"
        )
    cifar, kind, depth = m.group(1) is not None, m.group(2), int(m.group(3))
    plain = kind == "plain"
    if cifar:
        return build_cifar_resnet(depth, num_classes=num_classes, shortcut=shortcut or "A", plain=plain)
    return build_resnet(depth, num_classes=num_classes, shortcut=shortcut or "B", plain=plain, base_width=base_width)


def is_cifar_arch(arch: str) -> bool:
    return arch.startswith("cifar_")


def arch_depth(arch: str) -> int:
    """The depth in an arch name: `cifar_resnet110` -> 110."""
    m = _ARCH.match(arch)
    if m is None:
        raise ValueError(f"unknown arch {arch!r}")
    return int(m.group(3))


def center_scores(model: nn.Module, x: Tensor) -> Tensor:
    """`[B, 3, H, W]` normalised -> softmax probabilities `[B, K]`."""
    return model(x).float().softmax(-1)


def tencrop_scores(model: nn.Module, crops: Tensor) -> Tensor:
    """`[B, 10, 3, c, c]` normalised crops -> softmax probabilities averaged over the 10 crops, `[B, K]`."""
    b, v = crops.shape[:2]
    logits = model(crops.flatten(0, 1)).float()
    return logits.softmax(-1).view(b, v, -1).mean(1)


def _classifier_fc(model: nn.Module) -> nn.Linear:
    fc = getattr(model, "fc", None)
    if not isinstance(fc, nn.Linear):
        raise TypeError("fullconv testing needs a model with an nn.Linear `fc` after global average pooling")
    return fc


def score_map(model: nn.Module, x: Tensor) -> Tensor:
    """Fully-convolutional logits: `[B, 3, H, W]` -> `[B, K, h, w]` (fc applied as a 1×1 conv on the last map)."""
    fc = _classifier_fc(model)
    features = model.forward_features(x)
    return F.conv2d(features, fc.weight[:, :, None, None], fc.bias)


def fullconv_scores(model: nn.Module, views: Iterable[Tensor]) -> Tensor:
    """Multi-scale fully-convolutional scores of one image.

    `views`: normalised `[1, 3, h_s, w_s]` tensors (each scale, and flips). Each view's logit map is averaged over
    space, turned into probabilities, and the probabilities are averaged over views: returns `[1, K]`.
    """
    by_size: dict[tuple[int, int], list[Tensor]] = {}
    for v in views:  # a scale and its flip have the same size: one forward pass for both
        by_size.setdefault(tuple(v.shape[-2:]), []).append(v)
    probs = [score_map(model, torch.cat(group)).float().mean((2, 3)).softmax(-1) for group in by_size.values()]
    return torch.cat(probs).mean(0, keepdim=True)


def topk_correct(scores: Tensor, targets: Tensor, ks: Sequence[int] = (1, 5)) -> list[int]:
    """Number of rows whose target is among the top-k scores, for each k (k capped at the number of classes)."""
    k_max = min(max(ks), scores.shape[1])
    top = scores.topk(k_max, dim=1).indices
    hits = top == targets[:, None]
    return [int(hits[:, : min(k, k_max)].any(1).sum()) for k in ks]


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    normalizer: nn.Module,
    mode: str = "center",
    *,
    device: torch.device | str = "cpu",
    amp: bool = False,
    progress: bool = False,
) -> dict[str, float]:
    """Top-1/top-5 error (%) of `model` over `loader` with the given testing `mode`.

    The loader's dataset must produce the matching view (`CenterView` / `TenCropView` / `MultiScaleView`, the last
    with batch size 1 and `collate_single`). Under torch.distributed each rank scores its own shard and the counts
    are summed, so the result is exact (no padded duplicates).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    device = torch.device(device)
    was_training = model.training
    model.eval()
    counts = torch.zeros(3, dtype=torch.float64)
    batches: Iterable = loader
    if progress:
        from tqdm import tqdm

        batches = tqdm(loader, desc=f"eval {mode}", dynamic_ncols=True)
    for views, targets in batches:
        targets = torch.as_tensor(targets).to(device)
        with runtime.autocast(device, amp):
            if mode == "fullconv":
                norm = [normalizer(v.to(device, non_blocking=True)[None]) for v in views]
                scores = fullconv_scores(model, norm)
                targets = targets.view(1)
            elif mode == "10crop":
                views = views.to(device, non_blocking=True)
                scores = tencrop_scores(model, normalizer(views.flatten(0, 1)).view(*views.shape))
            else:
                scores = center_scores(model, normalizer(views.to(device, non_blocking=True)))
        top1, top5 = topk_correct(scores, targets)
        counts += torch.tensor([top1, top5, len(targets)], dtype=torch.float64)
    if dist.is_available() and dist.is_initialized():
        counts = counts.to(device)
        dist.all_reduce(counts)
        counts = counts.cpu()
    model.train(was_training)
    n = max(counts[2].item(), 1.0)
    return {
        "top1_error": 100.0 * (1 - counts[0].item() / n),
        "top5_error": 100.0 * (1 - counts[1].item() / n),
        "num_images": int(counts[2].item()),
    }


def collate_single(batch: list) -> tuple:
    """Collate for batch size 1 with variable-size views: returns the single `(views, label)` unchanged."""
    (item,) = batch
    return item


def evaluate_weights(
    arch: str,
    weights: str,
    data_root: str,
    dataset: str = "imagenet",
    mode: str = "10crop",
    *,
    image_size: int | None = None,
    scales: Sequence[int] | None = None,
    base_width: int | None = None,
    batch_size: int = 32,
    workers: int = 2,
    device: str | None = None,
    amp: bool = False,
    progress: bool = True,
) -> dict[str, float]:
    """Build `arch`, load `weights` (`load_weights` sources) and return its top-1/top-5 error (%) on `dataset`'s
    validation images with testing protocol `mode`.

    Input normalisation and crop size come from a toolkit checkpoint's `config` when present; otherwise the
    torchvision convention (ImageNet mean/std) or, for CIFAR, the training batches' per-pixel mean.
    `scales` default to the paper's {224, 256, 384, 480, 640}, rescaled by `image_size / 224`.
    """
    config: dict = {}
    if not weights.startswith("torchvision"):
        try:
            config = load_checkpoint(weights).get("config") or {}
        except CheckpointError:
            pass  # a plain state dict (or a bad file, which load_weights reports)
    cifar = dataset in ("cifar10", "synthetic")
    size = image_size or config.get("image_size") or (32 if cifar else 224)
    base_width = base_width or config.get("base_width") or 64
    resize = size if cifar else round(size * 256 / 224)
    scales = scales or [round(s * size / 224) for s in (224, 256, 384, 480, 640)]
    data = build_eval_dataset(dataset, data_root, eval_view(mode, size, resize, scales), config.get("holdout", 0))

    if "normalizer" in config:
        normalizer = Normalizer(config["normalizer"]["mean"], config["normalizer"]["std"])
    elif cifar:
        normalizer = Normalizer(*pixel_mean_std(read_cifar_batches(data_root, train=True)[0]))
    else:
        normalizer = Normalizer(IMAGENET_MEAN, IMAGENET_STD)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = build_classifier(
        arch, num_classes=len(data.classes), base_width=base_width, shortcut=config.get("shortcut")
    )
    load_weights(model, weights)
    model.to(dev)
    loader = DataLoader(
        data,
        batch_size=1 if mode == "fullconv" else batch_size,
        num_workers=workers,
        collate_fn=collate_single if mode == "fullconv" else None,
        pin_memory=dev.type == "cuda",
    )
    return evaluate(model, loader, normalizer.to(dev), mode, device=dev, amp=amp, progress=progress)
