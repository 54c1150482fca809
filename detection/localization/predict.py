"""Testing the localiser on a split and scoring it with the official CLS-LOC metric (``tools/test_loc.py``).

For every image the classifier (``backbones/classify.py``: 10-crop or fully convolutional) gives the top-5 classes;
for each testing mode ("1crop", "dense") the per-class RPN gives one box per asked class, and with an R-CNN the
dense proposals of each class are rescored. Per system two challenge CSVs are written (``ImageId,PredictionString``,
``wnid xmin ymin xmax ymax`` 1-based, read back by the evaluator):

- ``<system>_top5.csv``: the top-5 predicted classes in order, one box each (top-1/top-5 LOC error);
- ``<system>_gt_class.csv``: the ground-truth class with its box (the "LOC error on GT class" oracle column).

Systems: ``rpn_1crop``, ``rpn_dense`` and, with an R-CNN, ``rpn_rcnn_dense``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from backbones import runtime
from backbones.checkpoint import load_checkpoint
from backbones.classify import build_classifier
from backbones.data import Normalizer
from backbones.sharding import PeerFailed, broadcast_from_first, gather_in_rank_order, shard_range
from detection.data.io import read_image
from detection.devkit import Box, to_devkit_boxes
from detection.evaluation.imagenet_loc import imagenet_loc_eval, read_loc_predictions, write_loc_predictions
from detection.files import write_json
from detection.localization.config import LocConfig
from detection.localization.data import read_cls_loc
from detection.localization.engine import load_normalizer, load_rcnn, load_rpn
from detection.localization.inference import (
    RPNOutputs,
    classifier_probabilities,
    dense_views,
    merge_candidates,
    one_crop_views,
    rcnn_rescore,
)
from detection.localization.model import PerClassRPN, RCNNLocalizer

__all__ = ["MODES", "Localizer", "load_classifier", "load_localizer", "localize_split"]

MODES = ("1crop", "dense")
logger = logging.getLogger(__name__)


def load_classifier(path: str, cfg: LocConfig, device: torch.device) -> tuple[nn.Module, Normalizer]:
    """The classification network that predicts the classes (a ``tools/train_cls.py`` checkpoint)."""
    ckpt = load_checkpoint(path)
    saved = ckpt.get("config") or {}
    net = build_classifier(saved.get("arch", cfg.net.arch), num_classes=cfg.num_classes,
                           base_width=saved.get("base_width", cfg.net.base_width))  # fmt: skip
    net.load_state_dict(ckpt["model"])
    return net.to(device).eval(), load_normalizer(path).to(device)


def _devkit_box(box: torch.Tensor) -> Box:
    x1, y1, x2, y2 = (float(v) for v in to_devkit_boxes(box.reshape(1, 4))[0])
    return (x1, y1, x2, y2)


@dataclass
class Localizer:
    """The trained parts of the localiser, for one image at a time (``with torch.no_grad()``)."""

    cfg: LocConfig
    rpn: PerClassRPN
    rpn_normalizer: nn.Module
    classifier: nn.Module
    classifier_normalizer: nn.Module
    rcnn: RCNNLocalizer | None = None
    rcnn_normalizer: nn.Module | None = None

    def top5(self, image: np.ndarray) -> list[int]:
        """The classifier's five best classes (best first) for an HWC uint8 image."""
        c = self.cfg.input
        probs = classifier_probabilities(self.classifier, image, self.classifier_normalizer,
                                         self.cfg.test.classifier_mode, c.crop, c.resize, c.dense_scales)  # fmt: skip
        return probs.topk(min(5, len(probs))).indices.tolist()

    def boxes(self, image: np.ndarray, mode: str, classes: Sequence[int]) -> dict[str, dict[int, Box]]:
        """``{system: {class: devkit box}}`` for each of ``classes``: ``rpn_<mode>`` and, for "dense" with an R-CNN,
        ``rpn_rcnn_dense``."""
        c = self.cfg.input
        views = one_crop_views(image, c.crop, c.resize) if mode == "1crop" else dense_views(
            image, c.dense_scales, c.dense_flip)
        outputs = RPNOutputs(self.rpn, views, self.rpn_normalizer, image.shape[:2])
        out: dict[str, dict[int, Box]] = {f"rpn_{mode}": {}}
        rescore = mode == "dense" and self.rcnn is not None
        if rescore:
            out["rpn_rcnn_dense"] = {}
            pixels = torch.from_numpy(image.transpose(2, 0, 1).copy())
        for k in classes:
            candidates, scores = outputs.candidates(k)
            box, _ = merge_candidates(candidates, scores, self.cfg.test.vote_top)
            out[f"rpn_{mode}"][k] = _devkit_box(box)
            if rescore:
                proposals = candidates[scores.topk(min(self.cfg.rcnn.proposals, len(scores))).indices]
                new_boxes, new_scores = rcnn_rescore(self.rcnn, pixels, proposals, k, self.rcnn_normalizer,
                                                     self.cfg.rcnn.warp_size, self.cfg.rcnn.context_pad)  # fmt: skip
                box, _ = merge_candidates(new_boxes, new_scores, self.cfg.test.vote_top)
                out["rpn_rcnn_dense"][k] = _devkit_box(box)
        return out


def load_localizer(rpn_weights: Path, classifier_weights: str, rcnn_weights: Path | None = None,
                   device: str = "auto") -> Localizer:  # fmt: skip
    dev = runtime.pick_device(device)
    rpn, cfg, rpn_norm = load_rpn(rpn_weights, dev)
    classifier, cls_norm = load_classifier(classifier_weights, cfg, dev)
    rcnn, rcnn_norm = load_rcnn(rcnn_weights, dev) if rcnn_weights else (None, None)
    return Localizer(cfg, rpn, rpn_norm, classifier, cls_norm, rcnn, rcnn_norm)


@torch.no_grad()
def localize_split(rpn_weights: Path, classifier_weights: str, data_root: Path, out: Path, *,
                   rcnn_weights: Path | None = None, modes: Sequence[str] = MODES, split: str = "val",
                   limit: int = 0, progress: bool = True, device: str = "auto",
                   sharded: bool = False) -> dict[str, Any]:  # fmt: skip
    """Write the CSVs of every system under ``out`` and return their errors (fractions) as
    ``{system: {"top5_loc_error", "top1_loc_error", "top5_cls_error", ..., "gt_class_loc_error"}}`` (also in
    ``out/metrics.json``). ``limit`` > 0 tests only the first ``limit`` images.

    ``sharded``: call on every rank of a torchrun process group; each rank localises a block of the images, rank 0
    writes the CSVs and ``metrics.json`` (each system with ``world_size`` and ``images_per_rank``), every rank returns
    them."""
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise ValueError(f"unknown testing modes {unknown}; use {MODES}")
    rank = runtime.get_rank() if sharded else 0
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    localizer = load_localizer(rpn_weights, classifier_weights, rcnn_weights, device)
    data = read_cls_loc(data_root, split)
    records = data.records[:limit] if limit else data.records
    mine = shard_range(len(records), rank, runtime.get_world_size() if sharded else 1)
    local = _localize(localizer, [records[i] for i in mine], data.wnids, modes, f"test {split}", progress and rank == 0)
    parts = gather_in_rank_order((len(mine), local)) if sharded else [(len(mine), local)]
    if rank != 0:
        metrics = broadcast_from_first(None)
        if metrics is None:
            raise PeerFailed("rank 0 could not write the results (its error is above)")
        return metrics
    try:
        top5 = _merge(part[1][0] for part in parts)
        gt_class = _merge(part[1][1] for part in parts)
        sharding = {"world_size": len(parts), "images_per_rank": [part[0] for part in parts]}
        metrics = {system: {**numbers, **sharding} for system, numbers in _score(top5, gt_class, records, out).items()}
        write_json(out / "metrics.json", metrics)
    except BaseException:
        if sharded:
            broadcast_from_first(None)
        raise
    return broadcast_from_first(metrics) if sharded else metrics


Systems = dict[str, dict[str, list]]


def _localize(localizer: Localizer, records: Sequence[Any], wnids: Sequence[str], modes: Sequence[str], desc: str,
              progress: bool) -> tuple[Systems, Systems]:  # fmt: skip
    """``(top5, gt_class)``: ``{system: {image id: [(wnid, devkit box)]}}`` for ``records``, in their order."""
    top5: Systems = {}
    gt_class: Systems = {}
    for record in tqdm(records, desc=desc, disable=not progress):
        image, _ = read_image(record.path)
        predicted = localizer.top5(image)
        asked = [record.label] + [k for k in predicted if k != record.label]
        for mode in modes:
            for system, per_class in localizer.boxes(image, mode, asked).items():
                top5.setdefault(system, {})[record.image_id] = [(wnids[k], per_class[k]) for k in predicted]
                gt_box = per_class[record.label]
                gt_class.setdefault(system, {})[record.image_id] = [(wnids[record.label], gt_box)]
    return top5, gt_class


def _merge(parts: Iterable[Systems]) -> Systems:
    """The ranks' blocks joined in rank order (= the records' order)."""
    merged: Systems = {}
    for part in parts:
        for system, per_image in part.items():
            merged.setdefault(system, {}).update(per_image)
    return merged


def _score(top5: Systems, gt_class: Systems, records: Sequence[Any], out: Path) -> dict[str, Any]:
    # Scored from the files just written, as tools/eval_imagenet.py loc would (the ground truth of the tested
    # images only, so that `limit` does not count the others as missed).
    truth = {r.image_id: list(r.boxes) for r in records}
    metrics: dict[str, Any] = {}
    for system in top5:
        write_loc_predictions(out / f"{system}_top5.csv", top5[system])
        write_loc_predictions(out / f"{system}_gt_class.csv", gt_class[system])
        numbers = imagenet_loc_eval(read_loc_predictions(out / f"{system}_top5.csv", truth), truth).to_dict()
        oracle = imagenet_loc_eval(read_loc_predictions(out / f"{system}_gt_class.csv", truth), truth, gt_class=True)
        metrics[system] = {**numbers, "gt_class_loc_error": oracle.gt_class_loc_error, "images": oracle.num_images}
    return metrics
