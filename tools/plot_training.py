"""Draw training curves (each loss, the learning rate, seconds per iteration, each periodic evaluation metric) from
the ``metrics.jsonl`` a training run writes in its output folder; several runs are overlaid."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from detection.engine.cli import add_output, tool_parser
from detection.errors import EvaluationInputError
from detection.evaluation.analysis.plots import MissingPlotting
from detection.evaluation.analysis.training import plot_training, read_training_log
from detection.files import ResultWriteError, write_bytes

EXAMPLE = "python tools/plot_training.py output/quickstart/detector --output training.png"


def build_parser() -> argparse.ArgumentParser:
    p = tool_parser(__doc__, EXAMPLE)
    p.add_argument("run_dirs", type=Path, nargs="+", metavar="OUT_DIR", help="training output folders (or their "
                   "metrics.jsonl files)")
    add_output(p, "PNG; default OUT_DIR/training_curves.png of the first run", default=None)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    output = args.output or (args.run_dirs[0] if args.run_dirs[0].is_dir() else args.run_dirs[0].parent) / \
        "training_curves.png"  # fmt: skip
    try:
        logs = [read_training_log(d) for d in args.run_dirs]
        png = plot_training(logs)
    except (EvaluationInputError, MissingPlotting) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for log in logs:
        if log.skipped:
            print(f"warning: {log.name}: {log.skipped} unreadable lines skipped", file=sys.stderr)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        write_bytes(output, png)
    except ResultWriteError as exc:  # a full disk, a read-only folder: one line naming the file, nothing partial
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # its folder cannot be made
        print(f"error: cannot write {output}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"training curves: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
