"""The paper's detection tables in markdown: results JSON files (from tools/eval_*.py --json) as the paper's
comparison tables, with the paper's own rows beside ours (--paper), or Table 9's cumulative rows evaluated from
trained checkpoints (the table9 command).

More examples:
    python tools/tables.py voc07.json --names "baseline+++ (ours)" --paper table10   # VOC2007 test, Table 10
    python tools/tables.py voc12.json --paper table11                                # VOC2012, Table 11
    python tools/tables.py det_single.json det_ensemble.json --names "single model" ensemble --paper table12

COCO results become Table 9 rows (mAP@.5, mAP@[.5, .95]); VOC results (tools/eval_voc.py --json) Table 10/11
rows (mAP and the 20 classes); ImageNet DET results (tools/eval_imagenet.py det --json) one column per class, or
with --paper table12 Table 12's layout (mAP on val2; the test column is the evaluation server's); LOC results
their error columns.

Table 9 (baseline → +box refinement → +context → +multi-scale testing → +ensemble) on one split, ours beside the
paper's, with the time per image of each row (rows 1–2 need the baseline checkpoint, 3–4 a global-context
checkpoint, 5 further context checkpoints); `python tools/tables.py table9 --help` for its options:

    python tools/tables.py table9 --baseline base.pth --context ctx.pth --ensemble ctx2.pth ctx3.pth \\
        --dataset coco --data-root datasets/coco --split val2014 --output-dir output/table9 [key=value ...]

``--rows '+ensemble'`` evaluates only the rows named (the others' results stay where an earlier run wrote them).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from detection.engine.cli import add_json, add_output, tool_parser
from detection.evaluation.tables import (
    comparison_tables,
    load_results,
    paper_voc_rows,
    table9,
    table12,
)
from detection.files import ResultWriteError, write_json, write_text

TABLE9_EXAMPLE = """example:
    python tools/tables.py table9 --baseline out/base/model_final.pth --context out/ctx/model_final.pth \\
        --ensemble out/ctx2/model_final.pth out/ctx3/model_final.pth --dataset coco --data-root datasets/coco \\
        --split val2014 --output-dir output/table9 --json output/table9/rows.json

Each row is its checkpoint's stored config plus the row's switches (detection/engine/table9.py); without --split
the rows are tested on their config's test split (val2014 for configs/coco/faster_rcnn_r101_c4*.yaml)."""


EXAMPLE = "python tools/tables.py r50.json r101.json --names ResNet-50 ResNet-101"


def build_parser() -> argparse.ArgumentParser:
    """The comparison-table mode's parser (``table9`` has its own: ``main_table9``)."""
    parser = tool_parser(__doc__, EXAMPLE)
    parser.add_argument("results", type=Path, nargs="+", help="JSON files written by tools/eval_*.py --json")
    parser.add_argument("--names", nargs="+", help="row labels, one per file (default: the file names)")
    parser.add_argument("--paper", choices=["table10", "table11", "table12"],
                        help="add the paper's rows: VOC2007 test (Table 10), VOC2012 test (Table 11), ImageNet "
                             "DET (Table 12)")  # fmt: skip
    add_output(parser, "also write the markdown here", default=None)
    add_json(parser, "the rows as read, with their labels")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["table9"]:
        return main_table9(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        rows = load_results(args.results, args.names)
        if args.paper == "table12":
            text = table12(rows) + "\n\nTest mAP comes from the evaluation server (tools/test_det.py --split test " \
                                   "writes the submission file)."
        else:
            text = comparison_tables(rows + (paper_voc_rows(args.paper) if args.paper else []))
        if args.output:
            write_text(args.output, text + "\n")
        if args.json:
            write_json(args.json, [{"row": label, **result} for label, result in rows], indent=2)
    except (OSError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(text)
    return 0


def main_table9(argv: list[str]) -> int:
    from backbones.checkpoint import CheckpointError
    from backbones.runtime import setup_logging
    from detection.config import ConfigError
    from detection.data.errors import DatasetError
    from detection.engine.cli import add_run_arguments, run_options
    from detection.engine.table9 import PAPER_PYRAMID, run_table9, table9_rows

    p = argparse.ArgumentParser(prog="tables.py table9", description="Table 9's cumulative rows on one split",
                                epilog=TABLE9_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline", type=Path, required=True, help="checkpoint of the baseline (rows 1–2)")
    p.add_argument("--context", type=Path, help="checkpoint trained with global context (rows 3–4)")
    p.add_argument("--ensemble", type=Path, nargs="*", default=[], help="further context checkpoints (row 5)")
    p.add_argument("--pyramid", type=int, nargs="+", default=PAPER_PYRAMID,
                   help="shorter sides of the test pyramid (default: the paper's 200 … 1000)")  # fmt: skip
    p.add_argument("--rows", nargs="+", metavar="LABEL",
                   help="only these rows, e.g. '+ensemble' once its members are trained (default: all)")  # fmt: skip
    p.add_argument("--split", default="", help="default: the test split of each row's config, else the dataset's")
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
        results = run_table9(rows, run_options(args), args.split, args.overrides)
    except (ConfigError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    splits = " / ".join(dict.fromkeys(str(m.get("split", args.split)) for _, m in results))
    print(f"\nTable 9 on {args.dataset} {splits} (paper: ResNet-101 on COCO val; its ensemble row on test-dev)\n")
    print(table9(results))
    if args.json:
        try:
            write_json(args.json, [{"row": label, **m} for label, m in results])
        except ResultWriteError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
