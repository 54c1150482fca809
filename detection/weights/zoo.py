"""Detector weights by URL or by model-zoo name: anything ``--weights`` / ``model.weights`` accepts besides a path.

Spellings (docs/model_zoo.md):

- ``https://…`` / ``http://…``: a toolkit checkpoint (``.pth``) or a detectron2 model-zoo checkpoint (``.pkl``);
- ``detectron2://COCO-Detection/faster_rcnn_R_50_C4_3x/137849393/model_final_f97cb7.pkl``: detectron2's own
  spelling, a path under its model-zoo URL;
- ``detectron2:R50-C4-3x``: a short name for one of the C4 detectors in :data:`MODELS` (``detectron2:R50-C4-1x``,
  ``detectron2:R101-C4-3x``, ``detectron2:R50-C4-VOC``).

``model.backbone.weights`` takes the same spellings for a ``.pkl`` (:func:`fetch_backbone_weights`): the MSRA
ImageNet ResNets detectron2 trains from (``detectron2://ImageNetPretrained/MSRA/R-50.pkl``, caffe2 names,
:mod:`detection.weights.msra`) or a detectron2 C4 detector, whose ResNet is taken; converted once into
``<name>.backbone.pth`` beside the download.

The zoo's base URL is ``https://dl.fbaipublicfiles.com/detectron2/``; ``$RESDET_ZOO_URL`` replaces it (a mirror, or
a test server). Files are downloaded once into the cache of :mod:`backbones.hub`. A detectron2 ``.pkl`` is then
converted, with the restricted unpickler and the conversion of ``tools/convert_weights.py``
(:mod:`detection.weights.detectron2`) and the matching config of ``configs/detectron2/``, into a toolkit checkpoint
cached beside it; its name carries the config's name and a hash of its text, so an edited config converts again.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from backbones import hub
from backbones.checkpoint import CheckpointError, save_checkpoint
from detection.config import ConfigError
from detection.weights.detectron2 import (
    CONFIGS,
    convert_detectron2_file,
    detectron2_architecture,
    detectron2_config_file,
    read_detectron2_weights,
)
from detection.weights.msra import is_caffe2_msra, msra_checkpoint, read_msra_arrays

__all__ = ["CONFIGS", "MODELS", "ZOO_URL", "RemoteWeightsError", "ZooModel", "detectron2_checkpoint",
           "fetch_backbone_weights", "fetch_weights", "is_remote", "resolve"]

ZOO_URL = "https://dl.fbaipublicfiles.com/detectron2/"
_SCHEME = "detectron2:"


class RemoteWeightsError(CheckpointError):
    """Weights given by URL or zoo name that cannot be had; the message is one line naming the URL (and, for a
    failed download, the cache path where the file can be placed by hand)."""

    def __init__(self, source: str, reason: str) -> None:
        RuntimeError.__init__(self, reason)
        self.path, self.reason = Path(source), reason


@dataclass(frozen=True)
class ZooModel:
    """A detectron2 C4 detector: its path under the zoo's URL and the ``configs/detectron2/`` file that runs it."""

    path: str
    config: str


MODELS = {
    "R50-C4-1x": ZooModel("COCO-Detection/faster_rcnn_R_50_C4_1x/137257644/model_final_721ade.pkl",
                          "faster_rcnn_R_50_C4_1x.yaml"),
    "R50-C4-3x": ZooModel("COCO-Detection/faster_rcnn_R_50_C4_3x/137849393/model_final_f97cb7.pkl",
                          "faster_rcnn_R_50_C4_3x.yaml"),
    "R101-C4-3x": ZooModel("COCO-Detection/faster_rcnn_R_101_C4_3x/138204752/model_final_298dad.pkl",
                           "faster_rcnn_R_101_C4_3x.yaml"),
    "R50-C4-VOC": ZooModel("PascalVOC-Detection/faster_rcnn_R_50_C4/142202221/model_final_b1acc2.pkl",
                           "faster_rcnn_R_50_C4_voc.yaml"),
}  # fmt: skip


def _unmangle(source: str | os.PathLike[str]) -> str:
    # ``Path("https://host/x")`` prints as ``https:/host/x``: argparse's ``type=Path`` does that to URLs.
    return re.sub(r"^(https?|detectron2):/(?!/)", r"\1://", str(source))


def is_remote(source: str | os.PathLike[str]) -> bool:
    """A URL or a model-zoo name (rather than a local path)."""
    text = _unmangle(source)
    return hub.is_url(text) or text.startswith(_SCHEME)


def zoo_base_url() -> str:
    base = os.environ.get("RESDET_ZOO_URL") or ZOO_URL
    return base if base.endswith("/") else base + "/"


def resolve(source: str | os.PathLike[str]) -> tuple[str, Path | None]:
    """``(URL, configs/detectron2 file or None)`` of a URL or zoo name. The config is the zoo model's (known
    paths, also inside a full URL or under ``$RESDET_ZOO_URL``); None leaves the choice to the checkpoint's shapes."""
    text = _unmangle(source)
    if text.startswith(_SCHEME + "//"):
        path = text[len(_SCHEME) + 2:]
    elif text.startswith(_SCHEME):
        name = text[len(_SCHEME):]
        if name not in MODELS:
            raise ValueError(f"unknown model-zoo name {text!r}; known: "
                             + ", ".join(f"{_SCHEME}{n}" for n in MODELS))
        path = MODELS[name].path
    elif hub.is_url(text):
        known = next((m for m in MODELS.values() if text.endswith("/" + m.path)), None)
        return text, CONFIGS / known.config if known else None
    else:
        raise ValueError(f"{text!r} is neither a URL nor a model-zoo name")
    known = next((m for m in MODELS.values() if m.path == path), None)
    return zoo_base_url() + path, CONFIGS / known.config if known else None


def detectron2_checkpoint(path: Path, config: Path | None = None, overrides: Sequence[str] = (), *,
                          sizes_from_checkpoint: bool | None = None) -> dict:  # fmt: skip
    """A toolkit detector checkpoint (``model``, ``config``, ``classes``, ``source``) from a detectron2 C4 ``.pkl``
    / ``.pth`` (tools/convert_weights.py and :func:`fetch_weights`). ``config`` defaults to the
    ``configs/detectron2`` file of the checkpoint's depth and classes; ``sizes_from_checkpoint`` (default: when
    ``config`` is None) sets the config's width and class count to the checkpoint's before ``overrides``.
    Raises ``CheckpointError`` (unreadable, not C4) or ``ValueError`` / ``ConfigError`` (config mismatch)."""
    try:
        converted = convert_detectron2_file(path, config, overrides, sizes_from_checkpoint=sizes_from_checkpoint)
    except ValueError as e:
        if isinstance(e, ConfigError):
            raise
        raise CheckpointError(path, str(e)) from None
    return converted.detector_checkpoint()


def fetch_weights(source: str | os.PathLike[str], *, progress: bool = True) -> Path:
    """A local toolkit checkpoint for ``source``: a local path as it is; a URL or zoo name downloaded once into the
    cache, and a detectron2 ``.pkl`` converted once (cached beside it). Raises ``CheckpointError`` with one line
    naming the URL and the cache path when the download fails."""
    if not is_remote(source):
        return Path(source)
    try:
        url, config = resolve(source)
    except ValueError as e:
        raise RemoteWeightsError(str(source), str(e)) from None
    try:
        path = hub.download(url, progress=progress)
    except hub.DownloadError as e:
        raise RemoteWeightsError(url, str(e)) from None
    if path.suffix != ".pkl":
        return path
    chosen = config
    if chosen is None:  # not a known zoo model: the file the conversion picks by the checkpoint's shapes
        try:
            arch = detectron2_architecture(read_detectron2_weights(path))
        except ValueError as e:
            raise CheckpointError(path, str(e)) from None
        chosen = detectron2_config_file(arch)
    tag = hashlib.sha256(chosen.read_bytes() if chosen.is_file() else b"").hexdigest()[:8]
    converted = path.with_name(f"{path.stem}.{chosen.stem}-{tag}.pth")
    with hub.file_lock(converted.with_name(converted.name + ".lock")):  # the ranks of a torchrun job take turns
        if not converted.is_file():
            try:
                save_checkpoint(converted, detectron2_checkpoint(path, config, sizes_from_checkpoint=True))
            except (ValueError, ConfigError) as e:
                raise CheckpointError(path, f"cannot convert it with {chosen}: {e}") from None
    return converted


def fetch_backbone_weights(source: str, *, progress: bool = True) -> str:
    """``model.backbone.weights`` as ``load_weights`` reads it: a ``.pkl`` given by URL or ``detectron2://`` path is
    downloaded once (:mod:`backbones.hub`: cached, offline a one-line error naming where to put the file) and
    converted once into a backbone checkpoint cached beside it, whose path is returned; a later run touches no
    network. Anything else comes back as it is (``torchvision``, paths, ``.pth`` URLs: ``load_weights`` reads them).

    The ``.pkl`` is read without running pickled code: MSRA ImageNet weights in caffe2 names (detectron2's
    ``ImageNetPretrained/MSRA/R-50.pkl``) or a detectron2 C4 detector (its ResNet). Raises ``CheckpointError``."""
    if not is_remote(source):
        return source
    try:
        url, _ = resolve(source)
    except ValueError as e:
        raise RemoteWeightsError(str(source), str(e)) from None
    if not url.lower().endswith(".pkl"):
        return url
    try:
        path = hub.download(url, progress=progress)
    except hub.DownloadError as e:
        raise RemoteWeightsError(url, str(e)) from None
    converted = path.with_name(f"{path.stem}.backbone.pth")
    with hub.file_lock(converted.with_name(converted.name + ".lock")):  # the ranks of a torchrun job take turns
        if not converted.is_file():
            save_checkpoint(converted, _backbone_checkpoint(path))
    return str(converted)


def _backbone_checkpoint(path: Path) -> dict:
    arrays = read_msra_arrays(path)
    try:
        if is_caffe2_msra(arrays):
            return msra_checkpoint(path, arrays=arrays)
        if isinstance(arrays.get("model"), dict):  # a detectron2 detector: its conv1…conv5_x
            return convert_detectron2_file(path, sizes_from_checkpoint=True).backbone_checkpoint()
    except (ValueError, RuntimeError) as e:  # WeightsError, ConfigError: missing layers, shapes, NaN
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(path, f"cannot convert it into backbone weights: {e}") from None
    raise CheckpointError(path, "neither MSRA ImageNet weights in caffe2 names (conv1_w, res2_0_branch2a_w, …) nor a "
                                "detectron2 detector ({'model': …}): not backbone weights")
