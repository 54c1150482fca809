"""Loading pre-trained weights into the toolkit's ResNets.

Sources: ``"torchvision"`` (official ImageNet weights named by torchvision's weights API, downloaded once into the
resdet cache by ``backbones.hub``; a copy torchvision cached under ``torch.hub.get_dir()/checkpoints`` is used too),
a torchvision-format state-dict file or a toolkit checkpoint (dict with ``"model"``), either as a path or as an
http(s) URL (downloaded once into the same cache), or an in-memory state dict. Every file is read with
``weights_only=True``.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import Tensor, nn

from backbones import hub
from backbones.checkpoint import nonfinite_tensors, safe_torch_load

__all__ = [
    "LoadResult",
    "WeightsError",
    "checkpoint_style",
    "convert_msra_caffe",
    "load_weights",
    "msra_caffe_names",
    "torchvision_weights",
    "torchvision_weights_file",
]

logger = logging.getLogger(__name__)

# Checkpoint-in-a-dict layouts seen in the wild, tried in this order.
_NESTED_KEYS = ("model", "state_dict", "model_state_dict")


class WeightsError(RuntimeError):
    """Weights that cannot be loaded: unavailable offline, or not matching the model (keys listed)."""


@dataclass
class LoadResult:
    """What ``load_weights`` did: keys the model kept at their initial values, keys of the source not used."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)


def torchvision_weights(depth: int, variant: str = "IMAGENET1K_V1") -> torchvision.models.WeightsEnum:
    """The torchvision weights enum member for ``resnet{depth}`` (``IMAGENET1K_V1`` is the paper-like recipe)."""
    enum = torchvision.models.get_model_weights(f"resnet{depth}")
    try:
        return enum[variant]
    except KeyError:
        available = list(enum.__members__)
        raise WeightsError(f"resnet{depth} has no torchvision weights {variant!r}; available: {available}") from None


def torchvision_weights_file(depth: int, variant: str = "IMAGENET1K_V1") -> Path:
    """Where ``resnet{depth}`` weights are cached: the resdet cache (``backbones.hub``:
    ``$RESDET_CACHE/download.pytorch.org/models/<file from the URL>``)."""
    return hub.cached_file(torchvision_weights(depth, variant).url)


def _torchvision_state_dict(depth: int, variant: str) -> dict[str, Tensor]:
    url = torchvision_weights(depth, variant).url
    # A copy torchvision itself downloaded earlier is used as it is: no network access at all.
    torch_hub_copy = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
    if torch_hub_copy.is_file():
        return safe_torch_load(torch_hub_copy)
    digits = re.search(r"-([a-f0-9]{6,})\.", os.path.basename(url))  # torchvision names carry a SHA-256 prefix
    try:
        path = hub.download(url, sha256_prefix=digits.group(1) if digits else None)
    except hub.DownloadError as e:
        raise WeightsError(f"torchvision weights ResNet{depth}_Weights.{variant}: {e}") from None
    return safe_torch_load(path)


def checkpoint_style(checkpoint: Any) -> str | None:
    """The backbone style a checkpoint records: ``config["style"]`` (tools/convert_weights.py) or
    ``config["model"]["backbone"]["style"]`` (a detector's config); ``None`` when it records none."""
    config = checkpoint.get("config") if isinstance(checkpoint, Mapping) else None
    if not isinstance(config, Mapping):
        return None
    if isinstance(config.get("style"), str):
        return config["style"]
    backbone = config.get("model", {}).get("backbone", {}) if isinstance(config.get("model"), Mapping) else {}
    return backbone.get("style") if isinstance(backbone, Mapping) else None


def _check_style(source: Any, style: str | None, model: nn.Module) -> None:
    model_style = getattr(model, "style", None)
    if style is not None and model_style is not None and style != model_style:
        name = source if isinstance(source, (str, os.PathLike)) else "the given checkpoint"
        raise WeightsError(
            f"weights from {name} are {style}-style but the model is {model_style}-style (the stride's place and the "
            f"input pixels differ): build it with style={style!r} (detector config: model.backbone.style={style})"
        )


def _state_dict_from(source: Any, depth: int | None) -> tuple[dict[str, Tensor], str | None]:
    """``(state dict, the style its checkpoint records or None)``."""
    if isinstance(source, str) and source.split(":")[0] == "torchvision":
        if depth is None:
            raise WeightsError("source 'torchvision' needs a model with a .depth attribute (e.g. from build_resnet)")
        variant = source.split(":", 1)[1] if ":" in source else "IMAGENET1K_V1"
        return _torchvision_state_dict(depth, variant), "torchvision"
    if isinstance(source, Mapping):
        loaded: Any = source
        origin = "the given mapping"
    else:
        try:
            path = hub.download(source) if hub.is_url(source) else source
        except hub.DownloadError as e:
            raise WeightsError(str(e)) from None
        loaded = safe_torch_load(path)
        origin = str(source)
    style = checkpoint_style(loaded)
    for key in _NESTED_KEYS:
        if isinstance(loaded, Mapping) and isinstance(loaded.get(key), Mapping):
            loaded = loaded[key]
            break
    if not isinstance(loaded, Mapping) or not all(isinstance(v, Tensor) for v in loaded.values()):
        raise WeightsError(f"{origin} is neither a state dict nor a checkpoint with a 'model' state dict")
    state = dict(loaded)
    # Checkpoints written from a DistributedDataParallel wrapper prefix every key with "module.".
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state, style


def load_weights(
    model: nn.Module,
    source: str | os.PathLike[str] | Mapping[str, Tensor],
    *,
    strict: bool = True,
    ignore: Sequence[str] = (),
) -> LoadResult:
    """Load weights from ``source`` into ``model`` in place.

    Args:
        model: a toolkit ResNet (or any module; "torchvision" needs ``model.depth``).
        source: ``"torchvision"`` / ``"torchvision:IMAGENET1K_V2"`` (official weights, downloaded and cached
            when online; offline a ``WeightsError`` says which file to put in which directory), a path to a
            torchvision-format state dict or to a toolkit checkpoint, or a state-dict mapping.
        strict: with True, any missing or unexpected key (not covered by ``ignore``) raises ``WeightsError``
            listing them. With False they are only reported in the result and logged.
        ignore: key prefixes skipped on both sides, e.g. ``("fc.",)`` to take an ImageNet classifier's trunk
            for a detector or a classifier with another number of classes; those model keys keep their values.

    Shape mismatches always raise ``WeightsError``, and so do weights whose checkpoint records a backbone style
    (``"msra"``: stride in the first 1×1, BGR 0–255 input; or torchvision's) other than ``model.style``: the keys
    and shapes of the two styles agree, so only this check stops a silently wrong network. A
    ``FrozenBatchNorm2d`` ignores ``num_batches_tracked``.

    Returns:
        ``LoadResult`` with the missing, unexpected and ignored keys.
    """
    if isinstance(source, str) and source.split(":")[0] == "torchvision":
        _check_style(source, "torchvision", model)  # before any download
    state, style = _state_dict_from(source, getattr(model, "depth", None))
    _check_style(source, style, model)
    prefixes = tuple(ignore)
    model_state = model.state_dict()

    def ignored(key: str) -> bool:
        return bool(prefixes) and key.startswith(prefixes)

    # num_batches_tracked is bookkeeping (frozen BN and converted weights have none): never worth an error.
    def bookkeeping(key: str) -> bool:
        return key.endswith("num_batches_tracked")

    result = LoadResult(ignored=sorted(k for k in set(state) | set(model_state) if ignored(k)))
    state = {k: v for k, v in state.items() if not ignored(k) and not (bookkeeping(k) and k not in model_state)}
    result.missing = sorted(k for k in model_state if not ignored(k) and not bookkeeping(k) and k not in state)
    result.unexpected = sorted(k for k in state if k not in model_state)
    mismatched = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(model_state[k].shape)}"
        for k, v in state.items()
        if k in model_state and v.shape != model_state[k].shape
    ]
    problems = []
    if mismatched:
        problems.append("shape mismatch:\n  " + "\n  ".join(mismatched))
    if strict and result.missing:
        problems.append("missing in source:\n  " + "\n  ".join(result.missing))
    if strict and result.unexpected:
        problems.append("unexpected in source (not in model):\n  " + "\n  ".join(result.unexpected))
    nonfinite = nonfinite_tensors(state)
    if nonfinite:
        problems.append(nonfinite)
    if problems:
        name = source if isinstance(source, (str, os.PathLike)) else "the given state dict"
        raise WeightsError(f"weights from {name} do not match {type(model).__name__}:\n" + "\n".join(problems))
    if result.missing or result.unexpected:
        logger.warning("load_weights: missing keys %s, unexpected keys %s", result.missing, result.unexpected)
    model.load_state_dict({k: v for k, v in state.items() if k in model_state}, strict=False)
    return result


# --- The paper's original MSRA Caffe models (KaimingHe/deep-residual-networks) --------------------------------
# Caffe blobs per layer: Convolution [weight, (bias)], BatchNorm [mean * f, var * f, f] (f = moving-average
# factor), Scale [gamma, beta], InnerProduct [weight, bias]. The target is build_resnet(depth, style="msra").


def _msra_block_suffixes(depth: int, stage: int, num_blocks: int) -> list[str]:
    # ResNet-101/152 name the long stages res3a, res3b1, res3b2, ...; everything else uses letters a, b, c, ...
    if depth >= 101 and stage in (3, 4):
        return ["a"] + [f"b{i}" for i in range(1, num_blocks)]
    return [chr(ord("a") + i) for i in range(num_blocks)]


def msra_caffe_names(depth: int) -> dict[str, str]:
    """Toolkit module prefix -> MSRA Caffe layer name of its conv (``"layer1.0.conv1" -> "res2a_branch2a"``).

    The BatchNorm / Scale layers of conv ``res2a_branch2a`` are ``bn2a_branch2a`` / ``scale2a_branch2a``; the
    stem's are ``bn_conv1`` / ``scale_conv1``; the classifier is ``fc1000``. Bottleneck depths (50/101/152) only,
    the depths MSRA released.
    """
    from backbones.resnet import STAGE_BLOCKS  # local: keeps weights.py importable without the model code

    if depth not in (50, 101, 152):
        raise ValueError(f"MSRA released ResNet-50/101/152 only, got depth {depth}")
    names = {"conv1": "conv1", "fc": "fc1000"}
    for index, num_blocks in enumerate(STAGE_BLOCKS[depth]):
        stage = index + 2
        for block, suffix in enumerate(_msra_block_suffixes(depth, stage, num_blocks)):
            prefix, caffe = f"layer{index + 1}.{block}", f"res{stage}{suffix}"
            for conv, branch in (("conv1", "branch2a"), ("conv2", "branch2b"), ("conv3", "branch2c")):
                names[f"{prefix}.{conv}"] = f"{caffe}_{branch}"
            if block == 0:
                names[f"{prefix}.downsample.0"] = f"{caffe}_branch1"
    return names


def _blobs(arrays: Mapping[str, Any], layer: str) -> list[Tensor]:
    # Accept {layer: [blob0, blob1, ...]} (pickle) and flat {"layer/0": blob0, ...} (npz cannot hold lists).
    if layer in arrays:
        return [torch.as_tensor(b).float() for b in arrays[layer]]
    blobs = []
    while f"{layer}/{len(blobs)}" in arrays:
        blobs.append(torch.as_tensor(arrays[f"{layer}/{len(blobs)}"]).float())
    if not blobs:
        raise WeightsError(f"MSRA weights lack layer {layer!r}")
    return blobs


def _msra_affine_name(kind: str, conv_layer: str) -> str:
    """``("bn", "res2a_branch2a") -> "bn2a_branch2a"``; the stem's are ``bn_conv1`` / ``scale_conv1``."""
    return f"{kind}_conv1" if conv_layer == "conv1" else kind + conv_layer[len("res") :]


def convert_msra_caffe(arrays: Mapping[str, Any], depth: int) -> dict[str, Tensor]:
    """Turn MSRA Caffe blobs (numpy arrays keyed by Caffe layer name) into a state dict for
    ``build_resnet(depth, style="msra")`` (which also expects BGR 0-255 mean-subtracted input, ``MSRA_INPUT``).

    A conv bias (conv1 of the release has one) is folded into the following BN's mean, since the toolkit's convs
    have none: ``bn(x + c)`` equals ``bn'(x)`` with ``running_mean' = running_mean - c``.
    """
    state: dict[str, Tensor] = {}
    for prefix, layer in msra_caffe_names(depth).items():
        blobs = _blobs(arrays, layer)
        if prefix == "fc":
            state["fc.weight"], state["fc.bias"] = blobs[0].reshape(blobs[0].shape[0], -1), blobs[1]
            continue
        state[f"{prefix}.weight"] = blobs[0]
        bn_prefix = prefix.replace("downsample.0", "downsample.1").replace("conv", "bn")
        mean, var, factor = _blobs(arrays, _msra_affine_name("bn", layer))[:3]
        factor = factor.reshape(-1)[0] if factor.numel() else torch.tensor(1.0)
        norm = 1.0 / factor if factor != 0 else 0.0  # Caffe's own rule for the moving-average factor
        mean, var = mean * norm, var * norm
        if len(blobs) > 1:
            mean = mean - blobs[1]
        gamma, beta = _blobs(arrays, _msra_affine_name("scale", layer))[:2]
        state.update(
            {
                f"{bn_prefix}.weight": gamma,
                f"{bn_prefix}.bias": beta,
                f"{bn_prefix}.running_mean": mean,
                f"{bn_prefix}.running_var": var,
            }
        )
    return state
