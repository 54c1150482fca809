"""Time the analysis (tools/analyze_results.py's work: TIDE, the COCO analyze curves, the confusion matrix, the
figures and report.html) on generated COCO-val-sized data, and the authors' tidecv (TIDE alone) on the same data.

The data: ``--images`` images with 1–8 objects each over ``--classes`` classes and ``--dets`` detections per image
(flawed copies of the objects plus background; detection/evaluation/analysis/synthetic.py). Generation is not
timed. docs/benchmarks.md has the numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path

from detection.engine.cli import add_json, tool_parser
from detection.evaluation.analysis.data import analysis_data
from detection.evaluation.analysis.inputs import AnalysisInput
from detection.evaluation.analysis.report import analyze
from detection.evaluation.analysis.synthetic import synthetic_coco
from detection.evaluation.analysis.tide import tide
from detection.evaluation.coco import load_coco
from detection.files import ResultWriteError, write_json

EXAMPLE = "python tools/benchmark_analysis.py --images 5000 --dets 100 --classes 80 --json analysis_speed.json"


def build_parser() -> argparse.ArgumentParser:
    p = tool_parser(__doc__, EXAMPLE)
    p.add_argument("--images", type=int, default=5000, help="generated images (default 5000, COCO val's size)")
    p.add_argument("--dets", type=int, default=100, help="detections per image (default 100)")
    p.add_argument("--classes", type=int, default=80, help="classes (default 80)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-tidecv", action="store_true", help="do not time tidecv (pip install tidecv)")
    add_json(p, '{"seconds": {"analysis", "tide", "tidecv"} (wall), "cpu_seconds": {...}, "tide", "tidecv_tide"}')
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except ResultWriteError as exc:  # the report or --json on a full disk: one line naming the file
        print(f"error: {exc}", file=sys.stderr)
        return 1


def run(args: argparse.Namespace) -> int:
    print(f"generating {args.images} images x {args.dets} detections, {args.classes} classes ...", flush=True)
    instances, results = synthetic_coco(args.images, args.classes, args.dets, seed=args.seed)
    report: dict = {"images": args.images, "detections": len(results), "classes": args.classes, "seconds": {}}
    with tempfile.TemporaryDirectory() as tmp:
        gt_path, det_path = Path(tmp) / "gt.json", Path(tmp) / "dets.json"
        gt_path.write_text(json.dumps(instances))
        det_path.write_text(json.dumps(results))

        start, cpu = time.perf_counter(), time.process_time()
        summary = analyze(AnalysisInput(load_coco(gt_path), results, str(det_path)), Path(tmp) / "report")
        report["seconds"]["analysis"] = time.perf_counter() - start
        report["cpu_seconds"] = {"analysis": time.process_time() - cpu}
        start, cpu = time.perf_counter(), time.process_time()
        report["tide"] = tide(analysis_data(load_coco(gt_path), results)).errors
        report["seconds"]["tide"] = time.perf_counter() - start
        report["cpu_seconds"]["tide"] = time.process_time() - cpu
        report["ap50"] = summary["ap50"]
        print(f"ours: whole analysis {report['seconds']['analysis']:.1f} s ({report['cpu_seconds']['analysis']:.1f} "
              f"s CPU), TIDE alone (with loading) {report['seconds']['tide']:.1f} s "
              f"({report['cpu_seconds']['tide']:.1f} s CPU)", flush=True)
        if not args.no_tidecv:
            try:
                import tidecv
            except ImportError:
                print("tidecv is not installed (pip install tidecv): not timed", file=sys.stderr)
            else:
                start, cpu = time.perf_counter(), time.process_time()
                with contextlib.redirect_stdout(io.StringIO()):
                    run = tidecv.TIDE()
                    run.evaluate(tidecv.datasets.COCO(str(gt_path)), tidecv.datasets.COCOResult(str(det_path)),
                                 mode=tidecv.TIDE.BOX, name="run")
                    errors = run.get_all_errors()
                report["seconds"]["tidecv"] = time.perf_counter() - start
                report["cpu_seconds"]["tidecv"] = time.process_time() - cpu
                report["tidecv_tide"] = {**errors["main"]["run"], **errors["special"]["run"]}
                print(f"tidecv: {report['seconds']['tidecv']:.1f} s ({report['cpu_seconds']['tidecv']:.1f} s CPU)",
                      flush=True)
    print(json.dumps(report, indent=2))
    if args.json:
        write_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
