"""Render evaluation JSON files (from tools/eval_*.py --json) as the paper's comparison tables in markdown, or
evaluate Table 9's cumulative rows from trained checkpoints.

COCO results become Table 9 rows (mAP@.5, mAP@[.5, .95]); VOC results Table 10 rows (mAP and the 20 classes);
ImageNet DET results one column per class; LOC results their error columns. Example::

    python tools/tables.py r50.json r101.json --names ResNet-50 ResNet-101
    python tools/tables.py voc07.json --names ours --paper table10    # the paper's Table 10 rows beneath ours

Table 9 (baseline → +box refinement → +context → +multi-scale testing → +ensemble) on one split, ours beside the
paper's, with the time per image of each row (rows 1–2 need the baseline checkpoint, 3–4 a global-context
checkpoint, 5 further context checkpoints)::

    python tools/tables.py table9 --baseline base.pth --context ctx.pth --ensemble ctx2.pth ctx3.pth \\
        --dataset coco --data-root datasets/coco --split val2017 --output-dir output/table9 [key=value ...]

``--rows '+ensemble'`` evaluates only the rows named (the others' results stay where an earlier run wrote them).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detection.evaluation.tables import comparison_tables, load_results, paper_voc_rows, table9  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["table9"]:
        return main_table9(argv[1:])
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("results", type=Path, nargs="+", help="JSON files written by tools/eval_*.py --json")
    parser.add_argument("--names", nargs="+", help="row labels, one per file (default: the file names)")
    parser.add_argument("--paper", choices=["table10", "table11"],
                        help="append the paper's VOC2007 (Table 10) or VOC2012 (Table 11) rows")  # fmt: skip
    args = parser.parse_args(argv)
    try:
        rows = load_results(args.results, args.names) + (paper_voc_rows(args.paper) if args.paper else [])
        print(comparison_tables(rows))
    except (OSError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def main_table9(argv: list[str]) -> int:
    from backbones.checkpoint import CheckpointError
    from backbones.runtime import setup_logging
    from detection.config import ConfigError
    from detection.data import resolve_split
    from detection.data.errors import DatasetError
    from detection.engine.cli import add_run_arguments, run_options
    from detection.engine.table9 import PAPER_PYRAMID, run_table9, table9_rows

    p = argparse.ArgumentParser(prog="tables.py table9", description="Table 9's cumulative rows on one split")
    p.add_argument("--baseline", type=Path, required=True, help="checkpoint of the baseline (rows 1–2)")
    p.add_argument("--context", type=Path, help="checkpoint trained with global context (rows 3–4)")
    p.add_argument("--ensemble", type=Path, nargs="*", default=[], help="further context checkpoints (row 5)")
    p.add_argument("--pyramid", type=int, nargs="+", default=PAPER_PYRAMID,
                   help="shorter sides of the test pyramid (default: the paper's 200 … 1000)")  # fmt: skip
    p.add_argument("--rows", nargs="+", metavar="LABEL",
                   help="only these rows, e.g. '+ensemble' once its members are trained (default: all)")  # fmt: skip
    p.add_argument("--split", default="", help="default: the dataset's test split")
    p.add_argument("--json", type=Path, help="also write the rows' metrics here")
    add_run_arguments(p, output_dir="output/table9")
    args = p.parse_args(argv)
    if args.ensemble and args.context is None:
        p.error("--ensemble needs --context (the ensemble row adds members to the context model)")
    rows = table9_rows(args.baseline, args.context, args.ensemble, args.pyramid)
    if args.rows:
        available = [row.label for row in rows]
        if missing := [label for label in args.rows if label not in available]:
            p.error(f"--rows {' '.join(missing)}: the checkpoints given allow only {', '.join(available)}")
        rows = [row for row in rows if row.label in args.rows]
    setup_logging(args.output_dir)
    try:
        split = resolve_split(args.dataset, args.split, train=False)
        results = run_table9(rows, run_options(args), split, args.overrides)
    except (ConfigError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"\nTable 9 on {args.dataset} {split} (paper: ResNet-101 on COCO val; its ensemble row on test-dev)\n")
    print(table9(results))
    if args.json:
        args.json.write_text(json.dumps([{"row": label, **m} for label, m in results], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
