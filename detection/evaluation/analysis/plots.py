"""The report's figures, drawn with matplotlib (Agg) and returned as PNG bytes.

matplotlib is the ``plot`` extra: without it :func:`require_matplotlib` raises :class:`MissingPlotting`, whose
message is the one line to print (``pip install resdet[plot]``).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np

from detection.evaluation.analysis.coco_analysis import AREAS, CURVES, COCOAnalysis
from detection.evaluation.analysis.confusion import ConfusionResult
from detection.evaluation.analysis.tide import MAIN_ERRORS, SPECIAL_ERRORS, TideResult

# The COCO analyze colours, from the most to the least demanding curve.
CURVE_COLOURS = ("#27408b", "#4f86c6", "#4fbfbf", "#7fbf3f", "#e5e533", "#f2994c", "#e55a5a")
TIDE_COLOURS = {"cls": "#f5a623", "loc": "#7ed321", "both": "#4a90e2", "dupe": "#bd10e0", "bkg": "#d0021b",
                "miss": "#50e3c2", "false_pos": "#9b9b9b", "false_neg": "#4a4a4a"}


class MissingPlotting(ImportError):
    """matplotlib is not installed."""


def require_matplotlib() -> Any:
    """``matplotlib.pyplot`` on the Agg backend, or :class:`MissingPlotting` saying how to install it."""
    try:
        import matplotlib
    except ImportError:
        raise MissingPlotting("the analysis report draws with matplotlib: pip install resdet[plot]") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def to_png(fig: Any, dpi: int = 80) -> bytes:
    plt = require_matplotlib()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def tide_bars(result: TideResult) -> bytes:
    """dAP of the six main errors and the two special ones, as horizontal bars (AP points)."""
    plt = require_matplotlib()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3), gridspec_kw={"width_ratios": [3, 2]})
    for ax, names, title in ((axes[0], MAIN_ERRORS, "main errors"), (axes[1], SPECIAL_ERRORS, "special errors")):
        values = [result.errors[n] for n in names]
        ax.barh(names, values, color=[TIDE_COLOURS[n] for n in names])
        ax.invert_yaxis()
        ax.set_xlabel("dAP (AP50 points gained by fixing it)")
        ax.set_title(f"TIDE {title}" + (f": AP50 {result.ap50:.2f}" if names == MAIN_ERRORS else ""))
        for y, v in enumerate(values):
            ax.text(v, y, f" {v:.2f}", va="center", fontsize=8)
        ax.set_xlim(0, max([*values, 1.0]) * 1.2)
    return to_png(fig)


def _analysis_panel(ax: Any, recall: np.ndarray, precision: np.ndarray, title: str, legend: bool = True) -> None:
    """The seven curves of ``precision`` ``[7, R]`` as nested filled areas, their APs in the legend."""
    aps = precision.mean(axis=1)
    for c in range(len(CURVES) - 1, -1, -1):
        ax.fill_between(recall, precision[c], 0, color=CURVE_COLOURS[c], linewidth=0.4, edgecolor="black",
                        label=f"[{aps[c]:.3f}] {CURVES[c]}")
    if legend:
        handles, labels = ax.get_legend_handles_labels()
        ax.legend(handles[::-1], labels[::-1], loc="lower left", fontsize=7)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="recall", ylabel="precision", title=title)


def analysis_overall(analysis: COCOAnalysis) -> bytes:
    """The COCO analyze curves averaged over the classes, one panel per object size."""
    plt = require_matplotlib()
    overall = analysis.overall()
    fig, axes = plt.subplots(1, len(AREAS), figsize=(4 * len(AREAS), 4))
    for a, area in enumerate(AREAS):
        _analysis_panel(axes[a], analysis.recall, overall[:, :, a], f"all classes, {area} objects")
        if not analysis.has_gt[:, a].any():
            axes[a].text(0.5, 0.5, f"no {area} objects", ha="center", va="center", fontsize=12)
    return to_png(fig)


def analysis_per_class(analysis: COCOAnalysis, classes: Sequence[int]) -> bytes:
    """The COCO analyze curves of the given classes (all sizes), small panels titled with their C50 and C75 (the
    colours as in :func:`analysis_overall`)."""
    plt = require_matplotlib()
    cols = min(6, len(classes))
    rows = -(-len(classes) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.5 * rows), squeeze=False)
    fig.subplots_adjust(hspace=0.45, wspace=0.3)
    for ax in axes.ravel()[len(classes):]:
        ax.axis("off")
    aps = analysis.ap()
    for ax, k in zip(axes.ravel(), classes):
        title = f"{analysis.class_names[k]}\nC50 {aps[1, k, 0]:.2f}  C75 {aps[0, k, 0]:.2f}"
        _analysis_panel(ax, analysis.recall, analysis.precision[:, :, k, 0], title, legend=False)
        ax.set(xlabel="", ylabel="", xticks=[0, 0.5, 1], yticks=[0, 0.5, 1])
        ax.title.set_fontsize(8)
        ax.tick_params(labelsize=7)
    return to_png(fig)


def pr_curves(analysis: COCOAnalysis, max_legend: int = 20) -> bytes:
    """Per-class precision–recall at IoU 0.5 and 0.75 (all sizes) with their mean in black."""
    plt = require_matplotlib()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    keep = np.flatnonzero(analysis.has_gt[:, 0])
    cmap = plt.get_cmap("tab10" if len(keep) <= 10 else "tab20")
    for ax, c, iou in ((axes[0], CURVES.index("C50"), "0.5"), (axes[1], CURVES.index("C75"), "0.75")):
        for i, k in enumerate(keep):
            p = analysis.precision[c, :, k, 0]
            ax.plot(analysis.recall, p, linewidth=1, color=cmap(i % cmap.N),
                    label=f"{analysis.class_names[k]} {p.mean():.3f}")
        if len(keep):
            mean = analysis.precision[c, :, keep, 0].mean(axis=0)
            ax.plot(analysis.recall, mean, color="black", linewidth=2.5, label=f"mean {mean.mean():.3f}")
        ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision", title=f"PR at IoU {iou}")
        if len(keep) <= max_legend:
            ax.legend(fontsize=7, loc="lower left")
    return to_png(fig)


def confusion_heatmap(result: ConfusionResult) -> bytes:
    """Counts and row-normalised confusion matrices side by side."""
    plt = require_matplotlib()
    labels = [*result.class_names, "background"]
    n = len(labels)
    side = min(max(4.0, 0.35 * n + 2), 14.0)
    size = 9 if n <= 21 else 7 if n <= 41 else 5
    fig, axes = plt.subplots(1, 2, figsize=(2 * side + 1, side))
    # Room between the panels for the right one's class names (tight_layout measures every label: slow at 80).
    fig.subplots_adjust(wspace=0.15 + 0.04 * max(len(label) for label in labels) * size / side)
    for ax, matrix, title in ((axes[0], result.counts, "counts"), (axes[1], result.normalized(), "row-normalised")):
        shown = np.log1p(matrix) if title == "counts" else matrix
        ax.imshow(shown, cmap="Blues", vmin=0)
        ax.set_xticks(range(n), labels, rotation=90, fontsize=size)
        ax.set_yticks(range(n), labels, fontsize=size)
        ax.set(xlabel="predicted", ylabel="ground truth",
               title=f"{title} (IoU {result.iou_thresh}, score ≥ {result.score_thresh})")
        if n <= 21:
            top = shown.max() if shown.size else 0
            for (r, c), v in np.ndenumerate(matrix):
                if v:
                    ax.text(c, r, f"{v:.2f}" if title != "counts" else str(v), ha="center", va="center",
                            fontsize=7, color="white" if shown[r, c] > 0.6 * top else "black")
    return to_png(fig)
