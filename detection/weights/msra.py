"""The paper's MSRA ImageNet ResNets, as published, → checkpoints for ``build_resnet(depth, style="msra")``.

Two namings of the same networks are read:

- **caffe2** (Detectron's and detectron2's ``ImageNetPretrained/MSRA/R-50.pkl`` / ``R-101.pkl``: a pickled dict of
  numpy arrays, possibly under ``"blobs"``): ``conv1_w``, ``res_conv1_bn_s`` / ``_b``, ``res2_0_branch2a_w``,
  ``res2_0_branch2a_bn_s`` / ``_b``, ``res2_0_branch1_w`` …, ``fc1000_w`` / ``_b``. Each BN is already folded into an
  affine channel (``y = x * s + b``): it becomes a BN with ``weight = s``, ``bias = b``, ``running_mean = 0``,
  ``running_var = 1 - eps``, which computes exactly ``x * s + b`` (detectron2's ``FrozenBatchNorm2d`` starts from
  the same ``1 - eps``). The depth is read off the number of ``res4`` blocks and the width off ``conv1_w``.
- **Caffe** (KaimingHe/deep-residual-networks, dumped with pycaffe to ``.npz`` / ``.pkl``): BN statistics and
  Scale layers, converted by ``backbones.weights.convert_msra_caffe``; the depth must be given.

Files are read without running pickled code (``backbones.checkpoint.load_array_pickle``, ``np.load`` without
pickles). Every conversion is proved by loading it strictly into the target ResNet, which also refuses NaN / inf.
Used by ``tools/convert_weights.py --from msra`` and, for ``model.backbone.weights`` given by URL or
``detectron2://ImageNetPretrained/MSRA/R-50.pkl``, by :func:`detection.weights.zoo.fetch_backbone_weights`.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from backbones import WeightsError, build_resnet, load_weights
from backbones.checkpoint import CheckpointError, load_array_pickle
from backbones.resnet import STAGE_BLOCKS
from backbones.weights import convert_msra_caffe

__all__ = ["caffe2_msra_names", "convert_caffe2_msra", "is_caffe2_msra", "msra_checkpoint", "read_msra_arrays"]

BN_EPS = 1e-5  # nn.BatchNorm2d's and FrozenBatchNorm2d's default, which the toolkit's ResNets use
_DEPTH_BY_RES4_BLOCKS = {STAGE_BLOCKS[d][2]: d for d in (50, 101, 152)}
_RES4_BLOCK = re.compile(r"^res4_(\d+)_branch2a_w$")


def read_msra_arrays(path: str | Path) -> dict[str, Any]:
    """Numpy arrays keyed by layer name from a ``.npz`` or a ``.pkl`` (a ``{"blobs": {...}}`` wrapper is opened),
    never running pickled code. Raises ``CheckpointError`` naming the file."""
    path = Path(path)
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as data:
                return {key: data[key] for key in data.files}
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:  # object arrays, truncated, not a zip
            raise CheckpointError(path, f"cannot read the .npz: {e}") from e
    arrays = load_array_pickle(path)
    if isinstance(arrays, dict) and isinstance(arrays.get("blobs"), dict):
        arrays = arrays["blobs"]
    if not isinstance(arrays, dict):
        raise CheckpointError(path, "expected a dict of numpy arrays keyed by layer name")
    return arrays


def is_caffe2_msra(arrays: Mapping[str, Any]) -> bool:
    """Whether ``arrays`` use the caffe2 naming (``conv1_w``, ``res_conv1_bn_s``, …) rather than Caffe's."""
    return "conv1_w" in arrays and "res_conv1_bn_s" in arrays


def caffe2_msra_names(depth: int) -> dict[str, str]:
    """Toolkit module → caffe2 blob prefix: ``"conv1" → "conv1"``, ``"bn1" → "res_conv1_bn"``,
    ``"layer1.0.conv1" → "res2_0_branch2a"``, ``"layer1.0.bn1" → "res2_0_branch2a_bn"``,
    ``"layer1.0.downsample.0" → "res2_0_branch1"``, ``"fc" → "fc1000"``. Bottleneck depths (50/101/152) only."""
    if depth not in _DEPTH_BY_RES4_BLOCKS.values():
        raise ValueError(f"the MSRA ImageNet models are ResNet-50/101/152, got depth {depth}")
    names = {"conv1": "conv1", "bn1": "res_conv1_bn", "fc": "fc1000"}
    for index, num_blocks in enumerate(STAGE_BLOCKS[depth]):
        for block in range(num_blocks):
            prefix, caffe2 = f"layer{index + 1}.{block}", f"res{index + 2}_{block}"
            for i, branch in enumerate(("branch2a", "branch2b", "branch2c"), start=1):
                names[f"{prefix}.conv{i}"] = f"{caffe2}_{branch}"
                names[f"{prefix}.bn{i}"] = f"{caffe2}_{branch}_bn"
            if block == 0:
                names[f"{prefix}.downsample.0"] = f"{caffe2}_branch1"
                names[f"{prefix}.downsample.1"] = f"{caffe2}_branch1_bn"
    return names


def caffe2_depth(arrays: Mapping[str, Any]) -> int:
    """The ResNet depth of caffe2-named ``arrays`` (by the number of ``res4`` blocks: 6, 23, 36)."""
    blocks = {int(m.group(1)) for key in arrays if (m := _RES4_BLOCK.match(str(key)))}
    if len(blocks) not in _DEPTH_BY_RES4_BLOCKS:
        raise WeightsError(f"{len(blocks)} res4 blocks: not one of the MSRA ResNets (6, 23 or 36 for 50/101/152)")
    return _DEPTH_BY_RES4_BLOCKS[len(blocks)]


def convert_caffe2_msra(arrays: Mapping[str, Any], depth: int) -> dict[str, Tensor]:
    """caffe2-named arrays → a state dict for ``build_resnet(depth, style="msra")``; each affine channel becomes a BN
    computing the same ``x * s + b`` (module docstring). ``fc`` only when the file has ``fc1000_w``."""
    statistics = [str(k) for k in arrays if str(k).endswith(("_bn_rm", "_bn_riv"))]
    if statistics:  # a BN with running statistics, not an affine channel: reading only _s / _b would be wrong
        raise WeightsError(f"BN running statistics ({statistics[0]}, …) in caffe2 names: only affine-channel "
                           "weights (_bn_s, _bn_b: Detectron's ImageNetPretrained/MSRA files) are read")
    missing = []

    def blob(name: str) -> Tensor:
        if name not in arrays:
            missing.append(name)
            return torch.zeros(0)
        return torch.as_tensor(np.asarray(arrays[name])).float()

    state: dict[str, Tensor] = {}
    for module, name in caffe2_msra_names(depth).items():
        if module == "fc":
            if "fc1000_w" in arrays:
                weight = blob("fc1000_w")
                state["fc.weight"], state["fc.bias"] = weight.reshape(weight.shape[0], -1), blob("fc1000_b")
        elif name.endswith("_bn"):
            scale = blob(f"{name}_s")
            state.update({f"{module}.weight": scale, f"{module}.bias": blob(f"{name}_b"),
                          f"{module}.running_mean": torch.zeros_like(scale),
                          f"{module}.running_var": torch.full_like(scale, 1.0 - BN_EPS)})  # fmt: skip
        else:
            state[f"{module}.weight"] = blob(f"{name}_w")
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise WeightsError(f"MSRA weights (caffe2 names) of a ResNet-{depth} lack {shown}")
    return state


def msra_checkpoint(path: str | Path, depth: int | None = None, *,
                    arrays: Mapping[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """A backbone checkpoint (``model``: the state dict; ``config``: ``arch``, ``style="msra"``, ``base_width``,
    ``source``) from an MSRA file in either naming (``arrays``: its content, when already read). ``depth``:
    required for Caffe names; for caffe2 names it is read off the file (and must agree when given). Proved by a
    strict load into the ResNet it is for. Raises ``CheckpointError`` (unreadable) or ``WeightsError`` /
    ``ValueError`` (missing layers, shapes, NaN)."""
    path = Path(path)
    arrays = read_msra_arrays(path) if arrays is None else arrays
    if is_caffe2_msra(arrays):
        found = caffe2_depth(arrays)
        if depth is not None and depth != found:
            raise WeightsError(f"the file holds a ResNet-{found}, not a ResNet-{depth}")
        depth, state = found, convert_caffe2_msra(arrays, found)
    elif depth is None:
        raise WeightsError("give the depth (50, 101 or 152) of Caffe-named MSRA weights")
    else:
        state = convert_msra_caffe(arrays, depth)
    width = int(state["conv1.weight"].shape[0])
    classes = int(state["fc.weight"].shape[0]) if "fc.weight" in state else 1000
    # Loading strictly into the target architecture proves every key and shape (and finiteness) before any write.
    load_weights(build_resnet(depth, num_classes=classes, base_width=width, style="msra"), state,
                 ignore=() if "fc.weight" in state else ("fc.",))  # fmt: skip
    config = {"arch": f"resnet{depth}", "style": "msra", "base_width": width, "source": str(path)}
    return {"model": state, "config": config}
