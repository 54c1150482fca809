"""The paper's Table 9 as a command: the cumulative rows baseline → +box refinement → +context → +multi-scale
testing → +ensemble, each evaluated on one split with trained checkpoints, with its time per image.

Only two trainings are needed (box refinement, voting and multi-scale testing are test-time switches): a baseline
checkpoint (rows 1–2) and a global-context checkpoint (rows 3–5); the ensemble row adds further context
checkpoints. Each row is the checkpoint's stored config plus :data:`ROW_OVERRIDES` (the same switches the
``configs/coco/faster_rcnn_r101_c4_*.yaml`` files set, tests/detection/engine/test_table9.py checks they agree).
``tools/tables.py table9`` is the command; ``detection.evaluation.tables.table9`` renders the rows.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from detection.build import load_detector, load_ensemble_members
from detection.data import resolve_split
from detection.engine.run import RunOptions, test

__all__ = ["PAPER_PYRAMID", "ROW_OVERRIDES", "Table9Row", "run_table9", "table9_rows"]

logger = logging.getLogger(__name__)

PAPER_PYRAMID = [200, 400, 600, 800, 1000]  # shorter sides, Appendix B
REFINEMENT = ["model.roi_heads.box_refinement=true", "model.roi_heads.box_voting=true"]
ROW_OVERRIDES: dict[str, list[str]] = {
    "baseline": [],
    "+box refinement": REFINEMENT,
    "+context": REFINEMENT,  # on the checkpoint trained with model.roi_heads.global_context=true
    "+multi-scale testing": REFINEMENT,  # + test.pyramid_min_sizes (the pyramid of the command line)
    "+ensemble": REFINEMENT,
}


@dataclass
class Table9Row:
    """One row: its label, the checkpoints (several: an ensemble) and the ``key=value`` overrides."""

    label: str
    weights: list[Path]
    overrides: list[str]


def table9_rows(
    baseline: Path,
    context: Path | None = None,
    ensemble: Sequence[Path] = (),
    pyramid: Sequence[int] = PAPER_PYRAMID,
) -> list[Table9Row]:
    """The cumulative rows that the given checkpoints allow: rows 1–2 from ``baseline``; rows 3–4 need the
    ``context`` checkpoint, row 5 further ``ensemble`` members (evaluated with ``context``)."""
    pyramid_override = f"test.pyramid_min_sizes=[{','.join(str(s) for s in pyramid)}]"
    rows = [Table9Row(label, [baseline], list(ROW_OVERRIDES[label])) for label in ("baseline", "+box refinement")]
    if context is not None:
        rows.append(Table9Row("+context", [context], list(ROW_OVERRIDES["+context"])))
        multi = [*ROW_OVERRIDES["+multi-scale testing"], pyramid_override]
        rows.append(Table9Row("+multi-scale testing", [context], multi))
        if ensemble:
            rows.append(Table9Row("+ensemble", [context, *ensemble], [*ROW_OVERRIDES["+ensemble"], pyramid_override]))
    return rows


def run_table9(
    rows: Sequence[Table9Row], opts: RunOptions, split: str, overrides: Sequence[str] = ()
) -> list[tuple[str, dict[str, Any]]]:
    """Evaluate each row on ``split`` (``""``: the test split of the row's stored config, e.g. val2014 for the
    shipped Table 9 configs, else the dataset's default; its files and metrics under ``opts.output_dir/<row>``);
    ``overrides`` apply to every row first. Returns ``[(label, metrics)]`` with ``seconds_per_image`` and
    ``split`` in each metrics dict."""
    results = []
    for row in rows:
        row_overrides = [*overrides, *row.overrides]
        model, cfg, classes = load_detector(row.weights[0], None, row_overrides)
        models = [model, *load_ensemble_members(row.weights[1:], cfg, classes, None, row_overrides)]
        row_opts = dataclasses.replace(opts, output_dir=opts.output_dir / _slug(row.label), weights=list(row.weights))
        logger.info("Table 9 row %r: %s %s", row.label, " ".join(str(w) for w in row.weights), " ".join(row_overrides))
        row_split = resolve_split(opts.dataset, split, cfg.data.test_split, train=False, root=opts.data_root)
        results.append((row.label, test(cfg, row_opts, models, row_split)))
    return results


def _slug(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")
