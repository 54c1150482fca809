"""Loading pre-trained weights into the toolkit's ResNets.

Sources: ``"torchvision"`` (official ImageNet weights through torchvision's weights API, cached under
``torch.hub.get_dir()/checkpoints``), a torchvision-format state-dict file, a toolkit checkpoint (dict with
``"model"``), or an in-memory state dict. Every file is read with ``weights_only=True``.
"""

from __future__ import annotations

import logging
import os
import urllib.error
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import Tensor, nn

from backbones.checkpoint import safe_torch_load

__all__ = ["LoadResult", "WeightsError", "load_weights", "torchvision_weights", "torchvision_weights_file"]

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
    """Where torchvision caches ``resnet{depth}`` weights: ``$TORCH_HOME/hub/checkpoints/<file from the URL>``."""
    url = torchvision_weights(depth, variant).url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def _torchvision_state_dict(depth: int, variant: str) -> dict[str, Tensor]:
    cached = torchvision_weights_file(depth, variant)
    if cached.is_file():  # read the cache ourselves so that no network access is attempted at all
        return safe_torch_load(cached)
    weights = torchvision_weights(depth, variant)
    try:
        return weights.get_state_dict(progress=True, check_hash=True, weights_only=True)
    except (urllib.error.URLError, OSError, RuntimeError) as e:
        raise WeightsError(
            f"could not download torchvision weights ResNet{depth}_Weights.{variant} from {weights.url} "
            f"({type(e).__name__}: {e}). If this machine is offline, download that file elsewhere and put it at "
            f"{cached} (file {cached.name} in directory {cached.parent}; the directory is torch.hub.get_dir()/"
            "checkpoints, set TORCH_HOME to move it)."
        ) from e


def _state_dict_from(source: Any, depth: int | None) -> dict[str, Tensor]:
    if isinstance(source, str) and source.split(":")[0] == "torchvision":
        if depth is None:
            raise WeightsError("source 'torchvision' needs a model with a .depth attribute (e.g. from build_resnet)")
        variant = source.split(":", 1)[1] if ":" in source else "IMAGENET1K_V1"
        return _torchvision_state_dict(depth, variant)
    if isinstance(source, Mapping):
        loaded: Any = source
        origin = "the given mapping"
    else:
        loaded = safe_torch_load(source)
        origin = str(source)
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
    return state


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

    Shape mismatches always raise ``WeightsError``. A ``FrozenBatchNorm2d`` ignores ``num_batches_tracked``.

    Returns:
        ``LoadResult`` with the missing, unexpected and ignored keys.
    """
    state = _state_dict_from(source, getattr(model, "depth", None))
    prefixes = tuple(ignore)
    model_state = model.state_dict()

    def ignored(key: str) -> bool:
        return bool(prefixes) and key.startswith(prefixes)

    # Frozen BN has no num_batches_tracked; it is bookkeeping, never worth an error.
    def bookkeeping(key: str) -> bool:
        return key.endswith("num_batches_tracked") and key not in model_state

    result = LoadResult(ignored=sorted(k for k in set(state) | set(model_state) if ignored(k)))
    state = {k: v for k, v in state.items() if not ignored(k) and not bookkeeping(k)}
    result.missing = sorted(k for k in model_state if not ignored(k) and k not in state)
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
    if problems:
        name = source if isinstance(source, (str, os.PathLike)) else "the given state dict"
        raise WeightsError(f"weights from {name} do not match {type(model).__name__}:\n" + "\n".join(problems))
    if result.missing or result.unexpected:
        logger.warning("load_weights: missing keys %s, unexpected keys %s", result.missing, result.unexpected)
    model.load_state_dict({k: v for k, v in state.items() if k in model_state}, strict=False)
    return result
