"""Render evaluation JSON files (from tools/eval_*.py --json) as the paper's comparison tables in markdown.

COCO results become Table 9 rows (mAP@.5, mAP@[.5, .95]); VOC results Table 10 rows (mAP and the 20 classes);
ImageNet DET results one column per class; LOC results their error columns. Example::

    python tools/tables.py r50.json r101.json --names ResNet-50 ResNet-101
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from detection.evaluation.tables import comparison_tables, load_results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("results", type=Path, nargs="+", help="JSON files written by tools/eval_*.py --json")
    parser.add_argument("--names", nargs="+", help="row labels, one per file (default: the file names)")
    args = parser.parse_args(argv)
    try:
        print(comparison_tables(load_results(args.results, args.names)))
    except (OSError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
