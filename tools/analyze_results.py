"""Why a detector fails: TIDE's error breakdown, the COCO analyze curves per class and size, PR curves, a confusion
matrix, the worst images drawn, and (with ``--run-dir``) the training curves, in one self-contained
``OUTPUT_DIR/report.html`` (docs/evaluation.md, "Reading the analysis report").

Inputs: a COCO instances JSON (``--data-root``; or a COCO-layout root with ``--split``) and COCO results JSON
(``--results``, as ``tools/test_det.py`` writes them); or ``--dataset voc|imagenet_det`` with that dataset's root
and its own result files (VOC: the folder of ``comp4_det_<split>_<class>.txt``; ILSVRC DET: the submission file).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from detection.data.errors import DatasetError
from detection.deploy import visualize
from detection.engine.cli import add_data_root, add_json, add_no_progress, add_output_dir, add_split, tool_parser
from detection.errors import EvaluationInputError
from detection.evaluation.analysis.inputs import DATASETS, load_analysis_input
from detection.evaluation.analysis.plots import MissingPlotting
from detection.evaluation.analysis.report import analyze
from detection.evaluation.analysis.tide import MAIN_ERRORS, SPECIAL_ERRORS
from detection.files import ResultWriteError, write_json

# After tools/quickstart.py: the generated shapes set's held-out split and the detector's results on it.
EXAMPLE = ("python tools/analyze_results.py --data-root datasets/shapes/annotations/instances_val.json "
           "--results output/quickstart/detector/coco_results_val.json --output-dir output/quickstart/analysis")


def build_parser() -> argparse.ArgumentParser:
    p = tool_parser(__doc__, EXAMPLE)
    add_data_root(p, "a COCO instances JSON, or the root of --dataset's layout", required=True)
    p.add_argument("--results", type=Path, required=True,
                   help="COCO results JSON; voc: the folder of comp4_det_<split>_<class>.txt; imagenet_det: the "
                        "submission file")
    p.add_argument("--dataset", choices=DATASETS, help="read --data-root in this dataset's layout")
    add_split(p, "with --dataset or a COCO-layout root")
    add_output_dir(p, "output/analysis", "report.html, the figures as PNG, analysis.json")
    add_json(p, '{"ap50", "tide": {cls, loc, both, dupe, bkg, miss, false_pos, false_neg}, "coco_analysis", ...}')
    p.add_argument("--image-dir", type=Path,
                   help="images of a COCO JSON (file_name relative to it); default <root>/<split> of the layout")
    p.add_argument("--score-thresh", type=float, default=0.5,
                   help="detections drawn and counted in the confusion matrix (default 0.5)")
    p.add_argument("--run-dir", type=Path, nargs="+", default=[],
                   help="training output folders (metrics.jsonl): their curves go in the report")
    p.add_argument("--gallery", type=int, default=8, help="how many of the worst images to draw (default 8)")
    p.add_argument("--classes", help="voc: comma-separated class names (default: the 20 VOC classes)")
    add_no_progress(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        inp = load_analysis_input(args.data_root, args.results, dataset=args.dataset, split=args.split,
                                  image_dir=args.image_dir, classes=args.classes.split(",") if args.classes else None,
                                  progress=not args.no_progress)
        summary = analyze(inp, args.output_dir, drawer=visualize, score_thresh=args.score_thresh,
                          run_dirs=args.run_dir, gallery_count=args.gallery)
    except (EvaluationInputError, DatasetError, MissingPlotting) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ResultWriteError as exc:  # a report file on a full disk: named, nothing partial under its name
        print(f"error: {exc}", file=sys.stderr)
        return 1
    errors = "  ".join(f"{n} {summary['tide'][n]:.2f}" for n in (*MAIN_ERRORS, *SPECIAL_ERRORS))
    print(f"TIDE AP50 {summary['ap50']:.2f}; dAP: {errors}")
    print(f"report: {summary['report']}  ({summary['images']} images, {summary['detections']} detections, "
          f"{summary['seconds']:.1f} s)")
    if args.json:
        try:
            write_json(args.json, summary)
        except ResultWriteError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
