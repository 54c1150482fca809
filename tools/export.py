#!/usr/bin/env python
"""More examples:
  python tools/export.py --weights output/quickstart/detector/model_final.pth --format torch-export \\
      --size 480 640 --output output/export/detector.pt2 --json output/export/check.json
  python tools/export.py --weights output/quickstart/detector/model_final.pth --format torch-export --dynamic

Export a trained detector for deployment: ONNX (run with onnxruntime) or a torch.export program (.pt2, loaded with
torch.export.load). The file takes one float RGB image [3, H, W] in [0, 1] of exactly --size (H W; default: the
config's test_min_size x test_max_size; with --dynamic, torch-export only: any H and W from 32 to 4096) and
returns boxes [D, 4] (xyxy, pixels of that image), scores [D] and labels [D] (1..K; class names in
OUTPUT.classes.txt). Unless --no-check, the written file is run (onnxruntime on the CPU, or torch.export.load) on
--check-images generated images (with --dynamic: of several sizes) and compared with the eager model (same
detections within 0.01 px / 1e-4 score). Limits: docs/deployment.md. Trailing key=value arguments override the
config stored in the checkpoint.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np

from backbones.checkpoint import CheckpointError
from backbones.runtime import setup_logging
from detection.build import load_detector
from detection.config import Config, ConfigError
from detection.data.shapes import render_image
from detection.data.transforms import to_tensor
from detection.deploy.export import (
    DYNAMIC_SIDES,
    ExportError,
    check_onnx,
    check_program,
    export_onnx,
    export_program,
)
from detection.engine.cli import (
    add_flag,
    add_json,
    add_output,
    add_overrides,
    add_weights,
    tool_parser,
)
from detection.files import ResultWriteError, output_file_problem, write_json, write_text

# --format → (writer, checker, default file name, what runs the check)
FORMATS = {
    "onnx": (export_onnx, check_onnx, "detector.onnx", "onnxruntime"),
    "torch-export": (export_program, check_program, "detector.pt2", "torch.export.load"),
}


EXAMPLE = ("python tools/export.py --weights output/quickstart/detector/model_final.pth --format onnx "
           "--size 480 640")


def build_parser() -> argparse.ArgumentParser:
    p = tool_parser(__doc__, EXAMPLE)
    add_weights(p, "a checkpoint written by tools/train_det.py", required=True)
    add_flag(p, "--format", choices=sorted(FORMATS), default="onnx", help="onnx or torch-export (.pt2)")
    add_output(p, "default output/export/detector.onnx or .pt2", default=None)
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), default=None,
                   help="the input images' height and width (default: test_min_size test_max_size)")
    p.add_argument("--dynamic", action="store_true",
                   help="torch-export: any image height and width (--size is then the traced example)")
    p.add_argument("--check-images", type=int, default=3, help="generated images compared with the eager model")
    p.add_argument("--no-check", action="store_true", help="skip the comparison with the eager model")
    add_json(p, "the file's path, size and check result")
    add_overrides(p, "applied to the config stored in the checkpoint")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(None)
    write, check, default_name, checker = FORMATS[args.format]
    output = args.output or Path("output/export") / default_name
    if args.dynamic and args.format != "torch-export":
        print("error: --dynamic is for --format torch-export (an ONNX file is for one input size)", file=sys.stderr)
        return 2
    try:
        model, cfg, classes = load_detector(args.weights, overrides=args.overrides)
    except (ConfigError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    refusal = export_refusal(args, cfg, output)
    if refusal:
        print(f"error: {refusal}", file=sys.stderr)
        return 2
    height, width = args.size or (cfg.input.test_min_size, cfg.input.test_max_size)
    model = model.eval()
    shape = f"[3, H, W], H and W in {list(DYNAMIC_SIDES)}" if args.dynamic else f"[3, {height}, {width}]"
    result: dict[str, object] = {"format": args.format, "path": str(output), "input_size": [height, width],
                                 "dynamic": args.dynamic}
    try:
        path = write(model, output, height, width, **({"dynamic": True} if args.dynamic else {}))
        names = output.with_suffix(".classes.txt")
        write_text(names, "".join(f"{name}\n" for name in classes))
        print(f"wrote {path} (input {shape}) and {names}")
        if not args.no_check:
            rng = np.random.default_rng(0)  # generated shapes scenes: objects for a trained model to find
            # A dynamic program is checked at the example size, its transpose and smaller/larger ones.
            sizes = [(height, width), (width, height), (height * 3 // 4, width), (height, width * 5 // 4)]
            sizes = sizes if args.dynamic else [(height, width)]
            images = [to_tensor(render_image(rng, *sizes[i % len(sizes)])[0]) for i in range(args.check_images)]
            result["check"] = check(model, path, images)
            print(f"{checker} vs eager: " + json.dumps(result["check"]))
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # the output: a name too long, a folder not writable, a full disk
        print(f"error: cannot write {getattr(exc, 'filename', None) or output}: {exc.strerror or exc}",
              file=sys.stderr)
        return 1
    if args.json is not None:
        try:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            write_json(args.json, result)
        except (ResultWriteError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    return 0


def export_refusal(args: argparse.Namespace, cfg: Config, output: Path) -> str | None:
    """Why this export cannot be done as asked (one line), before any work; None when it can."""
    if args.size is not None and min(args.size) < 1:
        return f"--size H W must be positive pixel counts, got {args.size[0]} {args.size[1]}"
    problem = output_file_problem(output)
    if problem:
        return f"--output {problem}"
    if args.format == "onnx" and not all(importlib.util.find_spec(m) for m in ("onnx", "onnxruntime")):
        return "--format onnx needs the onnx and onnxruntime packages: pip install 'resdet[export]'"
    dropped = [f"test.pyramid_min_sizes={cfg.test.pyramid_min_sizes}" for _ in [0] if cfg.test.pyramid_min_sizes]
    dropped += ["test.flip=true"] if cfg.test.flip else []
    if dropped:
        return (f"the exported file runs the single-scale model only; the config sets {', '.join(dropped)}, which it "
                "would silently drop: override it (test.pyramid_min_sizes=[] test.flip=false) to export anyway")
    return None


if __name__ == "__main__":
    sys.exit(main())
