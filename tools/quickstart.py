#!/usr/bin/env python
"""The main job on a fresh machine: the paper's detection pipeline in miniature, on the generated ``shapes`` data.

1. generate ``shapes`` (COCO format) under ``--data-root`` if it is not there;
2. cut ground-truth crops into an ImageFolder tree and pre-train a small ResNet-18 (base width 16) classifier on
   them with ``tools/train_cls.py`` (the paper's ImageNet pre-training, in miniature);
3. fine-tune Faster R-CNN C4 from that backbone with every BN frozen (``tools/train_det.py --config
   configs/quickstart.yaml``), then evaluate on the held-out ``val`` split: VOC07 mAP@0.5 and the COCO numbers;
4. write the error analysis of the held-out images (``<output-dir>/analysis/report.html``: TIDE, PR curves, the
   confusion matrix, the worst images, the training curves).

``--format yolo`` trains step 3 on the same images written in the ultralytics YOLO layout (``<data-root>_yolo/``,
with background-only images, ``--dataset yolo --config configs/yolo_shapes.yaml``): what your own YOLO data runs
as (docs/custom_data.md); its headline is the COCO mAP@0.5.

Each stage is the real command-line tool, run as a subprocess; the commands are printed so they can be rerun.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from detection.data.shapes import ensure_shapes, generate_shapes_yolo, write_crop_dataset
from detection.deploy import visualize
from detection.engine.cli import (
    add_data_root,
    add_device,
    add_no_progress,
    add_output_dir,
    add_overrides,
    tool_parser,
)
from detection.engine.run_dir import RunDirError, prepare_output_dir, refuse_foreign_checkpoints
from detection.engine.stages import StageFailed, StageInterrupted, run_stage
from detection.evaluation.analysis.inputs import from_coco_files
from detection.evaluation.analysis.plots import MissingPlotting
from detection.evaluation.analysis.report import analyze
from detection.files import write_json

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = "python tools/quickstart.py --output-dir output/quickstart"


def run(cmd: list[str]) -> None:
    """Print and run one stage; SIGTERM / Ctrl-C are passed on to it and waited for (detection/engine/stages.py)."""
    run_stage(cmd)


def stage_errors(main: Callable[[list[str] | None], int]) -> Callable[[list[str] | None], int]:
    """``main`` with a failed stage as one ``error:`` line (its exit code) and a forwarded signal as one
    ``stopped:`` line (the shell's code for the signal, 143 / 130), never a traceback."""

    @functools.wraps(main)
    def wrapped(argv: list[str] | None = None) -> int:
        try:
            return main(argv)
        except StageFailed as exc:
            print(f"error: {exc}", file=sys.stderr)
            return exc.returncode if 0 < exc.returncode < 128 else 1
        except StageInterrupted as exc:
            print(f"stopped: {exc}", file=sys.stderr)
            return 128 + exc.signum

    return wrapped


def build_parser() -> argparse.ArgumentParser:
    p = tool_parser(__doc__, EXAMPLE)
    add_output_dir(p, "output/quickstart")
    add_data_root(p, "the shapes data, generated there if missing", default=Path("datasets/shapes"))
    p.add_argument("--num-train", type=int, default=600, help="generated training images")
    p.add_argument("--num-val", type=int, default=150, help="generated held-out images")
    p.add_argument("--cls-iters", type=int, default=1000, help="classifier pre-training iterations (batch 64)")
    p.add_argument("--det-iters", type=int, default=0, help="detector iterations (default: the config's)")
    p.add_argument("--format", choices=("coco", "yolo"), default="coco",
                   help="the detector's data: the COCO-layout shapes, or the same images in the YOLO layout")
    add_device(p)
    add_no_progress(p)
    add_overrides(p, "the detector's")
    return p


@stage_errors
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    start = time.perf_counter()
    out = args.output_dir
    try:  # tools/train_det.py would refuse at step 3; say it before the classifier's minutes are spent
        refuse_foreign_checkpoints(out / "detector")
    except RunDirError:
        print(f"error: {out} holds an earlier quickstart run; pass a new --output-dir or delete it", file=sys.stderr)
        return 2
    try:
        prepare_output_dir(out)
    except RunDirError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    py = sys.executable

    print(f"[1/3] shapes dataset at {args.data_root}", flush=True)
    ensure_shapes(args.data_root, num_train=args.num_train, num_val=args.num_val)
    yolo = args.data_root.with_name(args.data_root.name + "_yolo")
    if args.format == "yolo" and not (yolo / "data.yaml").is_file():
        print(f"      the same images in the YOLO layout at {yolo}", flush=True)
        generate_shapes_yolo(yolo, num_train=args.num_train, num_val=args.num_val, num_background=args.num_train // 10)
    crops = out / "crops"
    if not (crops / "val").is_dir():
        for split in ("train", "val"):
            write_crop_dataset(args.data_root, crops, split, size=64)

    print("[2/3] pre-training the backbone as a classifier on object crops", flush=True)
    classifier = out / "classifier"
    run([py, str(ROOT / "tools/train_cls.py"), "--dataset", "imagefolder", "--data-root", str(crops),
         "--arch", "resnet18", "--base-width", "16", "--image-size", "64", "--scale-range", "64", "80",
         "--lighting", "0", "--iters", str(args.cls_iters), "--batch-size", "64", "--lr", "0.05",
         "--lr-steps", str(int(args.cls_iters * 0.7)), str(int(args.cls_iters * 0.9)),
         "--eval-every", str(args.cls_iters), "--workers", "0", "--output-dir", str(classifier),
         "--device", args.device] + (["--no-progress"] if args.no_progress else []))

    print("[3/3] fine-tuning Faster R-CNN (ResNet-18 C4, frozen BN) and evaluating", flush=True)
    detector = out / "detector"
    overrides = [f"model.backbone.weights={classifier / 'model_final.pth'}"]
    if args.det_iters:
        steps = [int(args.det_iters * 0.75), int(args.det_iters * 0.92)]
        overrides += [f"solver.max_iter={args.det_iters}", f"solver.steps=[{steps[0]},{steps[1]}]"]
    config = ROOT / "configs/quickstart.yaml"
    data = ["--dataset", "shapes", "--data-root", str(args.data_root), "--config", str(config)]
    if args.format == "yolo":
        data = ["--dataset", "yolo", "--data-root", str(yolo / "data.yaml"), "--config",
                str(ROOT / "configs/yolo_shapes.yaml")]
    cmd = [py, str(ROOT / "tools/train_det.py"), *data, "--output-dir", str(detector), "--device", args.device]
    if args.no_progress:
        cmd.append("--no-progress")
    run(cmd + overrides + args.overrides)

    metrics = json.loads((detector / "metrics.json").read_text())
    minutes = (time.perf_counter() - start) / 60
    headline = "VOC07 mAP@0.5" if args.format == "coco" else "COCO mAP@0.5"
    summary = {headline: round(metrics["mAP50"], 4), "COCO AP": round(metrics["mAP"], 4),
               "minutes": round(minutes, 2), "weights": str(detector / "model_final.pth")}
    write_json(out / "summary.json", summary)
    print(f"\nquickstart: {headline} = {100 * metrics['mAP50']:.1f} on {metrics['images']} held-out images, "
          f"COCO AP = {100 * metrics['mAP']:.1f}, total {minutes:.1f} min")
    print(f"try: python tools/demo.py --weights {detector / 'model_final.pth'} --images {args.data_root / 'val'} "
          f"--output-dir {out / 'demo'}")
    if args.format == "coco":
        write_report(args.data_root, Path(metrics["results_file"]), detector, out / "analysis")
    else:  # the results name the YOLO set's images: analyse them with its own ground truth
        print(f"error analysis: python tools/convert_dataset.py --from yolo --data-root {yolo / 'data.yaml'} "
              f"--split val --output {out / 'yolo_val.json'} && python tools/analyze_results.py --data-root "
              f"{out / 'yolo_val.json'} --results {metrics['results_file']} --output-dir {out / 'analysis'}")
    return 0


def write_report(data_root: Path, results: Path, detector: Path, output_dir: Path) -> None:
    """The error analysis of the held-out images (tools/analyze_results.py's report, with the training curves)."""
    try:
        inp = from_coco_files(data_root / "annotations" / "instances_val.json", results, data_root / "val")
        runs = [detector] if (detector / "metrics.jsonl").is_file() else []
        report = analyze(inp, output_dir, drawer=visualize, run_dirs=runs)["report"]
    except MissingPlotting as exc:
        print(f"no analysis report: {exc}")
        return
    print(f"analysis report (open it in a browser): {report}")


if __name__ == "__main__":
    sys.exit(main())
