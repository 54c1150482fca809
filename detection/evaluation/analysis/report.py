"""Run every analysis on one set of results and write ``report.html`` (one self-contained file: the figures are
PNG data URIs; no script, no network), the figures as PNG files and ``analysis.json`` beside it, each atomically
(``detection.files``: a full disk is one ``ResultWriteError`` naming the file, nothing partial left).
"""

from __future__ import annotations

import base64
import html
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from detection.errors import EvaluationInputError
from detection.evaluation.analysis import plots
from detection.evaluation.analysis.coco_analysis import AREAS, CURVES, COCOAnalysis, coco_analysis
from detection.evaluation.analysis.confusion import ConfusionResult, confusion_matrix
from detection.evaluation.analysis.data import AnalysisData, analysis_data
from detection.evaluation.analysis.gallery import Drawer, GalleryImage, gallery
from detection.evaluation.analysis.inputs import AnalysisInput
from detection.evaluation.analysis.matching import Matcher
from detection.evaluation.analysis.tide import MAIN_ERRORS, SPECIAL_ERRORS, TideResult, tide
from detection.evaluation.analysis.training import TrainingLog, plot_training, read_training_log
from detection.files import write_bytes, write_json, write_text

REPORT = "report.html"
SUMMARY = "analysis.json"
PER_CLASS_FIGURE = 12  # classes drawn in the per-class analyze grid (the worst by C50)


def analyze(
    inp: AnalysisInput, output_dir: Path, *, drawer: Drawer | None = None, score_thresh: float = 0.5,
    run_dirs: Sequence[Path] = (), gallery_count: int = 8, title: str = "",
) -> dict[str, Any]:
    """Every analysis of ``inp`` into ``output_dir``; returns what ``analysis.json`` holds (``report``: its path).

    Raises :class:`EvaluationInputError` (one line) for results naming unknown images or categories, for ground
    truth without a single object, and for an unreadable training log."""
    plots.require_matplotlib()
    start = time.perf_counter()
    data = analysis_data(inp.coco_gt, inp.results, inp.source)
    if not (~data.gt_crowd).any():
        raise EvaluationInputError(f"the ground truth of {inp.source} has no objects ({data.num_images} images): "
                                   "nothing to find, nothing to analyse")
    logs = [read_training_log(Path(d)) for d in run_dirs]
    tide_result = tide(data)
    analysis = coco_analysis(data, Matcher(data))
    confusion = confusion_matrix(data, score_thresh=score_thresh)
    worst = gallery(data, confusion, inp.image_paths, drawer, gallery_count) if drawer is not None else []
    figures = {
        "tide.png": plots.tide_bars(tide_result),
        "coco_analysis.png": plots.analysis_overall(analysis),
        "coco_analysis_per_class.png": plots.analysis_per_class(analysis, _worst_classes(analysis)),
        "pr_curves.png": plots.pr_curves(analysis),
        "confusion_matrix.png": plots.confusion_heatmap(confusion),
    }
    if logs:
        figures["training_curves.png"] = plot_training(logs)
    output_dir.mkdir(parents=True, exist_ok=True)
    for name, png in figures.items():
        write_bytes(output_dir / name, png)
    summary = {**tide_result.to_dict(), "coco_analysis": analysis.to_dict(), "confusion": confusion.to_dict(),
               "images": data.num_images, "objects": int((~data.gt_crowd).sum()),
               "detections": len(data.det_score), "source": inp.source,
               "report": str(output_dir / REPORT), "seconds": round(time.perf_counter() - start, 2)}
    page = _html(title or inp.source, data, tide_result, analysis, confusion, worst, logs, figures,
                 drawn=drawer is not None)
    write_text(output_dir / REPORT, page)
    write_json(output_dir / SUMMARY, summary)
    return summary


def _worst_classes(analysis: COCOAnalysis) -> list[int]:
    keep = np.flatnonzero(analysis.has_gt[:, 0])
    c50 = analysis.ap()[CURVES.index("C50"), keep, 0]
    return [int(k) for k in keep[np.argsort(c50, kind="stable")][:PER_CLASS_FIGURE]] or [0]


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        return f"{v:.3f}" if isinstance(v, float) else html.escape(str(v))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


STYLE = """body{font-family:sans-serif;max-width:1200px;margin:1em auto;padding:0 1em;color:#222}
h2{border-bottom:1px solid #ccc;margin-top:1.6em} img{max-width:100%} .note{color:#555;font-size:0.92em}
table{border-collapse:collapse;font-size:0.85em;margin:0.5em 0} td,th{border:1px solid #ccc;padding:2px 6px;
text-align:right} th{background:#f2f2f2} .warn{background:#fff3cd;padding:0.5em;border:1px solid #e0c36a}
figure{display:inline-block;margin:0.4em} figcaption{font-size:0.85em;color:#444}"""


def _html(title: str, data: AnalysisData, t: TideResult, analysis: COCOAnalysis, confusion: ConfusionResult,
          worst: list[GalleryImage], logs: list[TrainingLog], figures: dict[str, bytes], drawn: bool) -> str:
    objects = int((~data.gt_crowd).sum())
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Detection analysis: {html.escape(title)}"
             f"</title><style>{STYLE}</style></head><body>",
             f"<h1>Detection analysis</h1><p>{html.escape(title)}: {data.num_images} images, {objects} objects, "
             f"{len(data.det_score)} detections, {data.num_classes} classes.</p>"]
    if not len(data.det_score):
        parts.append("<p class='warn'>The results hold no detections: every object is missed (AP 0).</p>")
    overall = analysis.overall().mean(axis=1)
    rows = [[area, *(float(overall[c, a]) for c in range(5))] for a, area in enumerate(AREAS)]
    parts += ["<h2>Metrics</h2>",
              f"<p>TIDE AP50 = <b>{t.ap50:.2f}</b> (AP points). COCO APs (0–1, COCOeval's matching) by object "
              "size:</p>", _table(["size", *CURVES[:5]], rows)]
    parts += ["<h2>TIDE: where the missing AP50 goes</h2>", _img(figures["tide.png"], "TIDE"),
              _table(["error", *MAIN_ERRORS, *SPECIAL_ERRORS],
                     [["dAP", *(t.errors[n] for n in (*MAIN_ERRORS, *SPECIAL_ERRORS))],
                      ["count", *(t.counts[n] for n in MAIN_ERRORS), "", ""]]),
              "<p class='note'>dAP: AP50 points gained if that error alone were fixed. cls: right place, wrong "
              "class; loc: right class, IoU 0.1–0.5; both: wrong class and badly placed; dupe: a second detection "
              "of a found object; bkg: on nothing (IoU ≤ 0.1); miss: objects nothing reached. false_pos / false_neg: "
              "all false positives / all missed objects gone.</p>"]
    ap = analysis.ap()
    class_rows = [[analysis.class_names[k], *(float(ap[c, k, 0]) for c in range(5))]
                  for k in np.flatnonzero(analysis.has_gt[:, 0])]
    parts += ["<h2>COCO analyze curves</h2>", _img(figures["coco_analysis.png"], "COCO analyze, all classes"),
              "<p class='note'>Each band is the AP gained by forgiving one more error: C75 → C50 (precise "
              "localisation), → Loc (IoU 0.1), → Sim (confusion within a supercategory), → Oth (any class "
              "confusion), → BG (false positives on background), → FN (missed objects).</p>",
              f"<h3>Per class (the {min(PER_CLASS_FIGURE, len(class_rows))} worst by C50)</h3>",
              _img(figures["coco_analysis_per_class.png"], "COCO analyze per class"),
              _table(["class", *CURVES[:5]], class_rows)]
    parts += ["<h2>Precision–recall per class</h2>", _img(figures["pr_curves.png"], "PR curves")]
    parts += ["<h2>Confusion matrix</h2>", _img(figures["confusion_matrix.png"], "confusion matrix"),
              f"<p class='note'>Rows: ground truth, columns: prediction (score ≥ {confusion.score_thresh}, IoU ≥ "
              f"{confusion.iou_thresh}, one to one). Last column: objects missed; last row: detections on "
              "nothing.</p>"]
    parts.append("<h2>Worst images</h2>")
    if not drawn:
        parts.append("<p class='note'>Not drawn (no drawing functions given).</p>")
    elif not worst:
        parts.append("<p>No image has a missed object or a wrong detection at this threshold.</p>")
    for g in worst:
        caption = f"image {g.image_id}: {g.missed} missed, {g.false_pos} wrong (left: truth, right: detections)"
        parts.append(f"<figure>{_img(g.png, caption)}<figcaption>{html.escape(caption)}</figcaption></figure>"
                     if g.png is not None else f"<p class='warn'>{html.escape(caption)}: cannot read {g.path}</p>")
    if logs:
        parts += ["<h2>Training</h2>", _img(figures["training_curves.png"], "training curves")]
        parts += [f"<p class='warn'>{html.escape(log.name)}: {log.skipped} unreadable lines skipped</p>"
                  for log in logs if log.skipped]
    parts.append("</body></html>")
    return "\n".join(parts)
