"""Markdown tables in the paper's layouts. Numbers are percentages with one decimal, as in the paper.

- VOC (Tables 10/11): ``| method | mAP | aero | bike | … | tv |`` — :func:`voc_table`.
- COCO (Tables 8/9): ``| method | mAP@.5 | mAP@[.5, .95] |`` — :func:`coco_table`.
- The paper's Tables 10/11 rows beside ours (:func:`paper_voc_rows`, ``tools/tables.py --paper table10``).
- Table 12 (ImageNet DET mAP on val2 and test), ours above the paper's rows — :func:`table12`
  (``tools/tables.py --paper table12``).
- Table 9's cumulative rows with the paper's numbers beside ours and the time per image — :func:`table9`.
- Per-class tables and the 12 COCO numbers — :func:`ap_table`, :func:`per_class_table`,
  :func:`coco_stats_table`.

Inputs are the JSON dicts the ``tools/eval_*.py`` scripts write (``VOCResult.to_dict()`` etc.). A value
below 0 (pycocotools' −1 for "no ground truth") prints as ``n/a``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from detection.files import read_json

__all__ = [
    "VOC_SHORT_NAMES",
    "COCO_STAT_NAMES",
    "short_name",
    "markdown_table",
    "voc_table",
    "coco_table",
    "coco_stats_table",
    "per_class_table",
    "ap_table",
    "result_kind",
    "comparison_tables",
    "load_results",
    "PAPER_TABLE9",
    "PAPER_TABLE10",
    "PAPER_TABLE11",
    "PAPER_TABLE12",
    "paper_voc_rows",
    "table9",
    "table12",
]

VOC_SHORT_NAMES: dict[str, str] = {
    "aeroplane": "aero", "bicycle": "bike", "bird": "bird", "boat": "boat", "bottle": "bottle", "bus": "bus",
    "car": "car", "cat": "cat", "chair": "chair", "cow": "cow", "diningtable": "table", "dog": "dog",
    "horse": "horse", "motorbike": "mbike", "person": "person", "pottedplant": "plant", "sheep": "sheep",
    "sofa": "sofa", "train": "train", "tvmonitor": "tv",
}  # fmt: skip

COCO_STAT_NAMES: tuple[str, ...] = (
    "AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
)  # fmt: skip


def short_name(name: str) -> str:
    """The paper's column name for a VOC class; other names are returned unchanged."""
    return VOC_SHORT_NAMES.get(name, name)


def pct(value: float | None) -> str:
    """``0.7642 → "76.4"``; negative or missing → ``"n/a"``."""
    if value is None or value < 0:
        return "n/a"
    return f"{100.0 * value:.1f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub markdown table; the first column left-aligned, the others right-aligned."""
    align = [":---"] + ["---:"] * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def voc_table(rows: Sequence[tuple[str, Mapping[str, Any]]], classes: Sequence[str] | None = None) -> str:
    """Table 10/11 rows: ``(label, {"mAP": …, "ap": {class: …}})``.

    ``classes`` (column order) default to the first row's order.
    """
    if classes is None:
        classes = list(rows[0][1]["ap"]) if rows else []
    header = ["method", "mAP"] + [short_name(c) for c in classes]
    body = [[label, pct(r["mAP"])] + [pct(r["ap"].get(c)) for c in classes] for label, r in rows]
    return markdown_table(header, body)


def coco_table(rows: Sequence[tuple[str, Mapping[str, Any]]]) -> str:
    """Table 8/9 rows: ``(label, {"stats": [12 numbers]})`` → mAP@.5 (``stats[1]``), mAP@[.5, .95]
    (``stats[0]``)."""
    return markdown_table(
        ["method", "mAP@.5", "mAP@[.5, .95]"],
        [[label, pct(r["stats"][1]), pct(r["stats"][0])] for label, r in rows],
    )


def coco_stats_table(stats: Sequence[float]) -> str:
    """The 12 COCOeval summary numbers as one row."""
    return markdown_table(list(COCO_STAT_NAMES), [[pct(s) for s in stats]])


def per_class_table(
    per_class: Mapping[str, Mapping[str, float]], columns: Sequence[str] = ("AP", "AP50")
) -> str:
    """One row per class: ``{name: {"AP": …, "AP50": …}}``."""
    return markdown_table(
        ["class", *columns], [[name, *(pct(v.get(c)) for c in columns)] for name, v in per_class.items()]
    )


def ap_table(ap: Mapping[str, float], mean_ap: float, names: Mapping[str, str] | None = None) -> str:
    """One row per class plus a final ``mAP`` row; ``names`` maps keys (e.g. wnids) to display names."""
    names = names or {}
    rows = [[names.get(k, short_name(k)), pct(v)] for k, v in ap.items()]
    return markdown_table(["class", "AP"], rows + [["**mAP**", pct(mean_ap)]])


def _is_number(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def check_result_shape(result: Any, path: str | Path) -> None:
    """``ValueError`` naming ``path`` unless ``result`` is an evaluation result of a known kind with the types the
    tables print: COCO ``stats`` 12 numbers; VOC / DET ``mAP`` a number and ``ap`` an object of numbers (``metric``
    a string); LOC ``*_loc_error`` numbers (null allowed where a number is missing)."""
    if not isinstance(result, dict):
        raise ValueError(f"{path}: expected a JSON object of metrics (the --json of tools/eval_coco.py, eval_voc.py "
                         f"or eval_imagenet.py), got a {type(result).__name__}")
    try:
        kind = result_kind(result)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    wrong = ""
    if kind == "coco" and not (isinstance(result["stats"], list) and len(result["stats"]) == 12
                               and all(_is_number(v) for v in result["stats"])):
        wrong = "'stats' must be pycocotools' 12 numbers"
    elif kind in ("voc", "det"):
        if not _is_number(result["mAP"]):
            wrong = "'mAP' must be a number"
        elif not (isinstance(result["ap"], dict) and all(_is_number(v) for v in result["ap"].values())):
            wrong = "'ap' must be an object of class → number"
        elif kind == "voc" and not isinstance(result["metric"], str):
            wrong = "'metric' must be a string"
    elif kind == "loc" and not all(_is_number(v) for k, v in result.items() if k.endswith("_loc_error")):
        wrong = "every '*_loc_error' must be a number"
    for key in ("mAP50", "seconds_per_image"):
        if not wrong and key in result and not _is_number(result[key]):
            wrong = f"{key!r} must be a number"
    if wrong:
        raise ValueError(f"{path}: not a {kind} result of the shape the tables read: {wrong}")


def result_kind(result: Mapping[str, Any]) -> str:
    """``"coco"`` (has ``stats``), ``"voc"`` (``mAP``, ``ap``, ``metric``), ``"det"`` (``mAP``, ``ap``)
    or ``"loc"`` (``*_loc_error``)."""
    if "stats" in result:
        return "coco"
    if "mAP" in result and "ap" in result:
        return "voc" if "metric" in result else "det"
    if any(k.endswith("_loc_error") for k in result):
        return "loc"
    raise ValueError(f"not an evaluation result (keys: {sorted(result)})")


def comparison_tables(rows: Sequence[tuple[str, Mapping[str, Any]]]) -> str:
    """Group results by kind and render each group as the paper's comparison table."""
    groups: dict[str, list[tuple[str, Mapping[str, Any]]]] = {}
    for label, result in rows:
        groups.setdefault(result_kind(result), []).append((label, result))
    parts = []
    for kind, group in groups.items():
        if kind == "coco":
            parts.append(coco_table(group))
        elif kind in ("voc", "det"):
            parts.append(voc_table(group))
        else:
            keys = [k for k in group[0][1] if k.endswith("_error")]
            parts.append(
                markdown_table(["method", *keys], [[lb, *(pct(r.get(k)) for k in keys)] for lb, r in group])
            )
    return "\n\n".join(parts)


def load_results(
    paths: Sequence[Path], names: Sequence[str] | None = None
) -> list[tuple[str, dict[str, Any]]]:
    """Read JSON results; row labels are ``names`` or the file stems."""
    if names is not None and len(names) != len(paths):
        raise ValueError(f"{len(names)} names for {len(paths)} result files")
    rows = []
    for i, path in enumerate(paths):
        result = read_json(path, ValueError, what="results file")
        check_result_shape(result, path)
        rows.append((names[i] if names else Path(path).stem, result))
    return rows


# Table 9 (ResNet-101, Faster R-CNN): (mAP@.5, mAP@[.5, .95]) in percent. Rows 1–4: trained on COCO train (80k),
# evaluated on val; the ensemble row: trained on trainval, evaluated on test-dev (its single model: 55.7 / 34.9).
PAPER_TABLE9: dict[str, tuple[float, float]] = {
    "baseline": (48.4, 27.2),
    "+box refinement": (49.9, 29.9),
    "+context": (51.1, 30.0),
    "+multi-scale testing": (53.8, 32.5),
    "+ensemble": (59.0, 37.4),
}


def table9(rows: Sequence[tuple[str, Mapping[str, Any]]]) -> str:
    """Table 9's layout, ours beside the paper's: ``(label, metrics)`` from ``detection.engine.run.test``.

    Ours: COCO mAP@.5 and mAP@[.5, .95] (``coco_stats``) when the split has them, else the split's headline
    mAP@.5 (``mAP50``, VOC / ILSVRC) and ``n/a``; seconds per image of the whole row (``seconds_per_image``)."""
    body = []
    for label, m in rows:
        stats = m.get("coco_stats")
        ours = (stats[1], stats[0]) if stats else (m.get("mAP50"), None)
        seconds = m.get("seconds_per_image")
        paper = PAPER_TABLE9.get(label)
        body.append([label, pct(ours[0]), pct(ours[1]), "n/a" if seconds is None else f"{seconds:.3f}",
                     *((f"{paper[0]:.1f}", f"{paper[1]:.1f}") if paper else ("", ""))])  # fmt: skip
    header = ["method", "mAP@.5", "mAP@[.5, .95]", "s / image", "paper mAP@.5", "paper mAP@[.5, .95]"]
    return markdown_table(header, body)

# Tables 10 (VOC2007 test) and 11 (VOC2012 test, from the evaluation server): mAP and the 20 APs in percent, in
# VOC_CLASSES order, as published.
PAPER_TABLE10: dict[str, tuple[float, tuple[float, ...]]] = {
    "baseline VGG-16 07+12": (73.2, (
        76.5, 79.0, 70.9, 65.5, 52.1, 83.1, 84.7, 86.4, 52.0, 81.9,
        65.7, 84.8, 84.6, 77.5, 76.7, 38.8, 73.6, 73.9, 83.0, 72.6,
    )),
    "baseline ResNet-101 07+12": (76.4, (
        79.8, 80.7, 76.2, 68.3, 55.9, 85.1, 85.3, 89.8, 56.7, 87.8,
        69.4, 88.3, 88.9, 80.9, 78.4, 41.7, 78.6, 79.8, 85.3, 72.0,
    )),
    "baseline+++ ResNet-101 COCO+07+12": (85.6, (
        90.0, 89.6, 87.8, 80.8, 76.1, 89.9, 89.9, 89.6, 75.5, 90.0,
        80.7, 89.6, 90.3, 89.1, 88.7, 65.4, 88.1, 85.6, 89.0, 86.8,
    )),
}
PAPER_TABLE11: dict[str, tuple[float, tuple[float, ...]]] = {
    "baseline VGG-16 07++12": (70.4, (
        84.9, 79.8, 74.3, 53.9, 49.8, 77.5, 75.9, 88.5, 45.6, 77.1,
        55.3, 86.9, 81.7, 80.9, 79.6, 40.1, 72.6, 60.9, 81.2, 61.5,
    )),
    "baseline ResNet-101 07++12": (73.8, (
        86.5, 81.6, 77.2, 58.0, 51.0, 78.6, 76.6, 93.2, 48.6, 80.4,
        59.0, 92.1, 85.3, 84.8, 80.7, 48.1, 77.3, 66.5, 84.7, 65.6,
    )),
    "baseline+++ ResNet-101 COCO+07++12": (83.8, (
        92.1, 88.4, 84.8, 75.9, 71.4, 86.3, 87.8, 94.2, 66.8, 89.4,
        69.2, 93.9, 91.9, 90.9, 89.6, 67.9, 88.2, 76.8, 90.3, 80.0,
    )),
}
PAPER_VOC_TABLES = {"table10": PAPER_TABLE10, "table11": PAPER_TABLE11}


def paper_voc_rows(table: str) -> list[tuple[str, dict[str, Any]]]:
    """The paper's rows of ``table`` ("table10" or "table11") as :func:`voc_table` rows, labelled ``paper: …``."""
    from detection.devkit import VOC_CLASSES

    if table not in PAPER_VOC_TABLES:
        raise ValueError(f"no paper table {table!r}; known: {', '.join(PAPER_VOC_TABLES)}")
    return [
        (f"paper: {label}", {"mAP": m / 100, "ap": {c: a / 100 for c, a in zip(VOC_CLASSES, ap)}, "metric": table})
        for label, (m, ap) in PAPER_VOC_TABLES[table].items()
    ]


# Table 12 (ImageNet DET, ResNet-101 Faster R-CNN with Table 9's improvements, "the same as that for MS COCO"):
# mAP@.5 in percent on val2 (R-CNN's half of val; trained on train + val1) and on test (the evaluation server);
# None where the paper gives no number.
PAPER_TABLE12: dict[str, tuple[float | None, float | None]] = {
    "GoogLeNet (ILSVRC'14)": (None, 43.9),
    "our single model (ILSVRC'15)": (60.5, 58.8),
    "our ensemble (ILSVRC'15)": (63.6, 62.1),
}


def table12(rows: Sequence[tuple[str, Mapping[str, Any]]]) -> str:
    """Table 12's layout, ours above the paper's rows (labelled ``paper: …``): ``(label, {"mAP": …, "ap": …})``
    from ``tools/eval_imagenet.py det --json``, scored on val2, so ours fill the val2 column (a result that
    records another ``split``, e.g. val, says so in its label); test numbers come only from the server."""
    body = []
    for label, result in rows:
        if result_kind(result) != "det":
            raise ValueError(f"Table 12 takes ImageNet DET results (tools/eval_imagenet.py det --json); {label!r} "
                             f"is a {result_kind(result)} result")
        split = result.get("split", "val2")
        body.append([label if split == "val2" else f"{label} (on {split})", pct(result["mAP"]), "n/a"])
    for label, (val2, test) in PAPER_TABLE12.items():
        body.append([f"paper: {label}", *(f"{v:.1f}" if v is not None else "-" for v in (val2, test))])
    return markdown_table(["method", "val2", "test"], body)
