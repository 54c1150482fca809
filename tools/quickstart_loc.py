#!/usr/bin/env python
"""The paper's ImageNet localisation pipeline (Appendix C, Table 13) in miniature, on any CLS-LOC-layout root.

1. generate a small CLS-LOC root at ``--data-root`` when it does not exist (10 classes, 400 training and 100
   held-out images);
2. pre-train the classification network (ResNet-18, base width 16, 96 px crops) on the training images with
   ``tools/train_cls.py``;
3. fine-tune it as the per-class RPN (``tools/train_loc.py rpn``), then train the R-CNN stage on the RPN's
   proposals (``tools/train_loc.py rcnn``);
4. test 1-crop and dense, with the ground-truth class and with the classifier's top-5 classes, and the R-CNN
   stage (``tools/test_loc.py``); print the Table 13 layout, write ``OUT/summary.json`` and
   ``OUT/loc_predictions.csv`` (the final system's predictions, scored by ``tools/eval_imagenet.py loc``).

Each stage is the real command-line tool, run as a subprocess; the commands are printed so they can be rerun.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from detection.config import ConfigError
from detection.data.errors import DatasetError
from detection.engine.cli import (
    add_config,
    add_data_root,
    add_device,
    add_no_progress,
    add_output_dir,
    add_overrides,
    tool_parser,
)
from detection.engine.run_dir import RunDirError, prepare_output_dir
from detection.evaluation.tables import markdown_table, pct
from detection.files import write_json
from detection.localization.config import load_loc_config
from detection.localization.data import generate_cls_loc, read_cls_loc, write_imagefolder_view
from tools.quickstart import run, stage_errors  # prints each stage's command, then runs it

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = "python tools/quickstart_loc.py --data-root datasets/imagenet_loc_gen --output-dir output/quickstart_loc"


def table13(metrics: dict, net: str) -> str:
    """The paper's Table 13 rows, with this run's numbers (errors in %)."""
    rows = [
        ["RPN", net, "1-crop", pct(metrics["rpn_1crop"]["gt_class_loc_error"]), "", ""],
        ["RPN", net, "dense", pct(metrics["rpn_dense"]["gt_class_loc_error"]), "", ""],
        ["RPN", net, "dense", "", net, pct(metrics["rpn_dense"]["top5_loc_error"])],
        ["RPN+RCNN", net, "dense", "", net, pct(metrics["rpn_rcnn_dense"]["top5_loc_error"])],
    ]
    header = ["LOC method", "LOC network", "testing", "LOC error on GT CLS", "classification network",
              "top-5 LOC error on predicted CLS"]  # fmt: skip
    return markdown_table(header, rows)


def build_parser() -> argparse.ArgumentParser:
    p = tool_parser(__doc__, EXAMPLE)
    add_data_root(p, "CLS-LOC layout, generated there if missing", default=Path("datasets/imagenet_loc_gen"))
    add_output_dir(p, "output/quickstart_loc")
    add_config(p, "the localiser's; default configs/imagenet_loc/quickstart.yaml",
               default=ROOT / "configs/imagenet_loc/quickstart.yaml")
    p.add_argument("--cls-iters", type=int, default=400, help="classifier pre-training iterations (batch 32)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch/OpenMP threads per stage (0: torch's default). The nets are small: on a shared 2-core "
                        "machine two threads ran 25x slower than one (an OpenMP barrier per op)")
    add_device(p)
    add_no_progress(p)
    add_overrides(p, "the localiser's, both stages")
    return p


def argument_problem(args: argparse.Namespace) -> str | None:
    """Why the arguments cannot work (one line), found before any minute is spent; None when they can."""
    if args.threads < 0:
        return f"--threads must be 0 (torch's default) or more, got {args.threads}"
    if args.cls_iters < 1:
        return f"--cls-iters must be at least 1, got {args.cls_iters}"
    try:
        load_loc_config(args.config, ["num_classes=1", *args.overrides])  # the stages' config, as they will read it
        if args.data_root.exists():
            read_cls_loc(args.data_root, "train")
        prepare_output_dir(args.output_dir)
    except (ConfigError, RunDirError) as exc:
        return str(exc)
    except (DatasetError, OSError) as exc:
        return f"--data-root {args.data_root} is not a CLS-LOC root (ILSVRC/…/CLS-LOC, LOC_*.csv): {exc}"
    return None


@stage_errors
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    problem = argument_problem(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    out, py = args.output_dir, sys.executable
    stage_flags = ["--device", args.device] + (["--no-progress"] if args.no_progress else [])
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # read by torch in each stage's subprocess

    if not args.data_root.exists():
        print(f"[1/4] generating a CLS-LOC root at {args.data_root}", flush=True)
        generate_cls_loc(args.data_root)
    num_classes = len(read_cls_loc(args.data_root, "train").wnids)
    view = write_imagefolder_view(args.data_root, out / "cls_view")

    print(f"[2/4] pre-training the classification network on the {num_classes}-class training images", flush=True)
    classifier = out / "classifier"
    steps = [str(int(args.cls_iters * 0.7)), str(int(args.cls_iters * 0.9))]
    run([py, str(ROOT / "tools/train_cls.py"), "--dataset", "imagefolder", "--data-root", str(view),
         "--arch", "resnet18", "--base-width", "16", "--image-size", "96", "--scale-range", "104", "128",
         "--lighting", "0", "--iters", str(args.cls_iters), "--batch-size", "32", "--lr", "0.02",
         "--lr-steps", *steps, "--eval-every", str(args.cls_iters), "--workers", "0",
         "--output-dir", str(classifier)] + stage_flags)  # fmt: skip
    cls_weights = classifier / "model_final.pth"

    print("[3/4] per-class RPN, then the R-CNN stage on its proposals", flush=True)
    overrides = [f"num_classes={num_classes}", f"net.weights={cls_weights}", *args.overrides]
    common = ["--data-root", str(args.data_root), "--config", str(args.config)] + stage_flags
    run([py, str(ROOT / "tools/train_loc.py"), "rpn", *common, "--output-dir", str(out / "rpn"), *overrides])
    rpn_weights = out / "rpn" / "model_final.pth"
    run([py, str(ROOT / "tools/train_loc.py"), "rcnn", *common, "--weights", str(rpn_weights),
         "--output-dir", str(out / "rcnn"), *overrides])  # fmt: skip

    print("[4/4] testing on the held-out images: 1-crop and dense, GT class and top-5 classes", flush=True)
    run([py, str(ROOT / "tools/test_loc.py"), "--data-root", str(args.data_root), "--weights", str(rpn_weights),
         "--cls-weights", str(cls_weights), "--rcnn-weights", str(out / "rcnn" / "model_final.pth"),
         "--output-dir", str(out / "test")] + stage_flags)  # fmt: skip

    metrics = json.loads((out / "test" / "metrics.json").read_text())
    shutil.copyfile(out / "test" / "rpn_rcnn_dense_top5.csv", out / "loc_predictions.csv")
    minutes = (time.perf_counter() - start) / 60
    summary = {
        "RPN 1-crop, LOC error on GT class": metrics["rpn_1crop"]["gt_class_loc_error"],
        "RPN dense, LOC error on GT class": metrics["rpn_dense"]["gt_class_loc_error"],
        "RPN dense, top-5 LOC error": metrics["rpn_dense"]["top5_loc_error"],
        "RPN+RCNN dense, top-5 LOC error": metrics["rpn_rcnn_dense"]["top5_loc_error"],
        "classifier top-5 error": metrics["rpn_rcnn_dense"]["top5_cls_error"],
        "held-out images": metrics["rpn_rcnn_dense"]["images"],
        "minutes": round(minutes, 2),
        "all": metrics,
    }
    write_json(out / "summary.json", summary)
    net = "ResNet-18/16"
    print("\nTable 13 layout (errors in %, held-out generated images):\n")
    print(table13(metrics, net))
    print(f"\nclassifier ({net}, 10-crop) top-5 error: {pct(summary['classifier top-5 error'])}%; "
          f"RPN+RCNN dense LOC error on GT class: {pct(metrics['rpn_rcnn_dense']['gt_class_loc_error'])}%")
    print(f"quickstart_loc: final top-5 LOC error = {pct(summary['RPN+RCNN dense, top-5 LOC error'])}% on "
          f"{summary['held-out images']} held-out images, total {minutes:.1f} min")
    print(f"score the CSV: python tools/eval_imagenet.py loc --data-root {args.data_root / 'ILSVRC'} "
          f"--results {out / 'loc_predictions.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
