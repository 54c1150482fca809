"""COCO bbox evaluation with pycocotools ``COCOeval`` (not re-implemented), plus per-class AP / AP50.

Results are pycocotools' result dicts ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``:
boxes 0-based continuous without +1 (internal xyxy → ``[x1, y1, x2 - x1, y2 - y1]``), ``category_id`` the
dataset's own ids (COCO's are 1…90 with gaps), never contiguous training labels. Mapping labels to ids is the
dataset's job; this module checks that every ``image_id`` and ``category_id`` exists in the ground truth.

The 12 ``stats`` are exactly ``COCOeval.stats``
(AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl).
Per-class numbers come from ``COCOeval.eval["precision"]`` (area "all", maxDets 100); −1 where a category has
no ground truth, as pycocotools does. An empty result list gives 0 (−1 without ground truth), not a crash.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detection.devkit import read_coco_instances
from detection.errors import EvaluationInputError
from detection.files import read_json, short_repr

__all__ = [
    "COCOResult",
    "load_coco",
    "load_coco_results",
    "validate_coco_results",
    "count_inverted_results",
    "coco_eval",
    "coco_eval_files",
    "xyxy_to_coco_results",
]


@dataclass
class COCOResult:
    """The 12 summary numbers and per-category ``{"AP", "AP50"}`` keyed by category name."""

    stats: list[float]
    per_class: dict[str, dict[str, float]]
    coco_eval: COCOeval | None = None

    @property
    def ap(self) -> float:
        """mAP@[.5, .95] (the paper's COCO column)."""
        return self.stats[0]

    @property
    def ap50(self) -> float:
        """mAP@.5."""
        return self.stats[1]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form ``{"stats": [12 numbers], "per_class": {name: {"AP", "AP50"}}}``."""
        return {"stats": list(self.stats), "per_class": self.per_class}


@contextlib.contextmanager
def _quiet(verbose: bool) -> Iterator[None]:
    """Swallow pycocotools' progress prints unless ``verbose``."""
    if verbose:
        yield
        return
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def load_coco(annotations: COCO | str | Path, verbose: bool = False) -> COCO:
    """A ``COCO`` object from an ``instances_<split>.json`` path (or the object itself)."""
    if isinstance(annotations, COCO):
        return annotations
    path = Path(annotations)
    if not path.is_file():
        raise EvaluationInputError(f"{path}: annotation file not found")
    # Validated like the training loader's (NaN boxes, string iscrowd, ...); missing area / iscrowd are filled in.
    coco = COCO()
    coco.dataset = read_coco_instances(path, image_files=False)
    with _quiet(verbose):
        coco.createIndex()
    return coco


def load_coco_results(path: str | Path) -> list[dict[str, Any]]:
    """Read a results JSON file (a list of result dicts)."""
    path = Path(path)
    if not path.exists():
        raise EvaluationInputError(f"{path}: results file not found")
    results = read_json(path, EvaluationInputError, what="results file")
    if not isinstance(results, list):
        raise EvaluationInputError(
            f"{path}: expected a JSON list of result objects, got {type(results).__name__}"
        )
    return results


def validate_coco_results(
    coco_gt: COCO, results: Sequence[Mapping[str, Any]], source: str = "results"
) -> None:
    """Check keys, box shape, finite numbers and that image / category ids exist in ``coco_gt``.

    Raises :class:`EvaluationInputError` naming ``source`` and the index of the first bad entry.
    """
    image_ids = set(coco_gt.getImgIds())
    category_ids = set(coco_gt.getCatIds())
    for i, r in enumerate(results):
        where = f"{source}: result #{i}"
        if not isinstance(r, Mapping):
            raise EvaluationInputError(f"{where}: expected an object, got {type(r).__name__}")
        missing = [k for k in ("image_id", "category_id", "bbox", "score") if k not in r]
        if missing:
            raise EvaluationInputError(f"{where}: missing key(s) {missing}")
        bbox = r["bbox"]
        if not isinstance(bbox, Sequence | np.ndarray) or len(bbox) != 4:
            raise EvaluationInputError(f"{where}: bbox must be [x, y, w, h], got {short_repr(bbox)}")
        numbers = [*bbox, r["score"]]
        if not all(isinstance(v, int | float | np.number) and not isinstance(v, bool) and math.isfinite(v)
                   for v in numbers):
            raise EvaluationInputError(f"{where}: bbox and score must be finite numbers, got {short_repr(numbers)}")
        for key in ("image_id", "category_id"):
            if not isinstance(r[key], int) or isinstance(r[key], bool):
                raise EvaluationInputError(f"{where}: {key} must be an integer, got {short_repr(r[key])}")
        if r["image_id"] not in image_ids:
            raise EvaluationInputError(f"{where}: image_id {short_repr(r['image_id'])} is not in the annotations")
        if r["category_id"] not in category_ids:
            raise EvaluationInputError(
                f"{where}: category_id {short_repr(r['category_id'])} is not one of the dataset's category ids "
                f"{sorted(category_ids)[:10]}… (map training labels to the dataset's ids)"
            )


def count_inverted_results(results: Sequence[Mapping[str, Any]]) -> int:
    """How many (validated) results have a negative width or height: they overlap nothing and so score as false
    positives, which otherwise shows only as a mysteriously low AP (boxes written as xyxy instead of xywh...)."""
    return sum(1 for r in results if r["bbox"][2] < 0 or r["bbox"][3] < 0)


def _empty_results(coco_gt: COCO) -> COCO:
    """A result ``COCO`` with no detections; ``loadRes`` cannot build one from an empty list."""
    coco_dt = COCO()
    coco_dt.dataset = {
        "images": list(coco_gt.dataset["images"]),
        "categories": list(coco_gt.dataset.get("categories", [])),
        "annotations": [],
    }
    with _quiet(False):
        coco_dt.createIndex()
    return coco_dt


def _per_class(ev: COCOeval, coco_gt: COCO) -> dict[str, dict[str, float]]:
    """AP and AP50 per category from ``precision[T, R, K, A, M]`` at area "all" and the largest maxDets."""
    precision = ev.eval["precision"]
    area = ev.params.areaRngLbl.index("all")
    iou50 = int(np.where(np.isclose(ev.params.iouThrs, 0.5))[0][0])

    def mean(p: np.ndarray) -> float:
        valid = p[p > -1]
        return float(np.mean(valid)) if valid.size else -1.0

    out = {}
    for k, cat_id in enumerate(ev.params.catIds):
        name = coco_gt.cats[cat_id]["name"]
        out[name] = {"AP": mean(precision[:, :, k, area, -1]), "AP50": mean(precision[iou50, :, k, area, -1])}
    return out


def coco_eval(
    annotations: COCO | str | Path,
    results: Sequence[Mapping[str, Any]],
    *,
    verbose: bool = False,
    keep_eval: bool = False,
    source: str = "results",
) -> COCOResult:
    """Run ``COCOeval(iouType="bbox")``: evaluate, accumulate, summarize.

    ``annotations`` is a ``COCO`` object or the path of ``instances_<split>.json``; ``results`` a list of
    result dicts (not modified). ``keep_eval`` keeps the ``COCOeval`` object on the result.
    """
    coco_gt = load_coco(annotations, verbose)
    validate_coco_results(coco_gt, results, source)
    with _quiet(verbose):
        # loadRes adds keys to the dicts it is given; give it copies.
        coco_dt = coco_gt.loadRes([dict(r) for r in results]) if results else _empty_results(coco_gt)
        ev = COCOeval(coco_gt, coco_dt, iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return COCOResult(
        stats=[float(s) for s in ev.stats],
        per_class=_per_class(ev, coco_gt),
        coco_eval=ev if keep_eval else None,
    )


def coco_eval_files(annotations: str | Path, results: str | Path, *, verbose: bool = False) -> COCOResult:
    """:func:`coco_eval` on an annotation file and a results JSON file (errors name the results file)."""
    return coco_eval(annotations, load_coco_results(results), verbose=verbose, source=str(results))


def xyxy_to_coco_results(
    image_id: int, boxes: Any, scores: Any, category_ids: Sequence[int]
) -> list[dict[str, Any]]:
    """One image's internal xyxy boxes ``[N, 4]`` (tensor or array, original-image pixels), scores ``[N]`` and
    the dataset's ``category_ids`` (length N) → result dicts with ``[x, y, w, h]`` boxes."""
    b = boxes.detach().cpu().numpy() if hasattr(boxes, "detach") else np.asarray(boxes)
    s = scores.detach().cpu().numpy() if hasattr(scores, "detach") else np.asarray(scores)
    return [
        {
            "image_id": int(image_id),
            "category_id": int(c),
            "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
            "score": float(sc),
        }
        for (x1, y1, x2, y2), sc, c in zip(b.reshape(-1, 4), s.reshape(-1), category_ids)
    ]
