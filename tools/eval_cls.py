"""Top-1/top-5 error of a classifier with the paper's testing protocols.

    python tools/eval_cls.py --arch resnet50 --weights torchvision --data-root data/imagenet --mode 10crop
    python tools/eval_cls.py --arch resnet50 --weights model_final.pth --data-root data/imagenet --mode fullconv

Modes: center (one crop), 10crop (4 corners + centre and flips of the 224 crop from shorter side 256, softmax
averaged), fullconv (whole image at shorter sides --scales and flipped, fc as a 1x1 conv, scores averaged).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from backbones.classify import MODES, evaluate_weights
from backbones.files import ResultWriteError, write_json
from detection.engine.cli import (
    add_amp,
    add_data_root,
    add_device,
    add_json,
    add_no_progress,
    add_weights,
    tool_parser,
)

EXAMPLE = ("python tools/eval_cls.py --arch cifar_resnet20 --weights output/cls/model_final.pth --dataset synthetic "
           "--data-root output/cls/data/synthetic_cifar --mode center")


def build_parser() -> argparse.ArgumentParser:
    p = tool_parser(__doc__, EXAMPLE)
    p.add_argument("--arch", required=True, help="resnet50, cifar_resnet110, …")
    add_weights(p, '"torchvision", a torchvision state dict or a toolkit checkpoint', type=str, required=True)
    add_data_root(p, "folder with val/<class>/, or the CIFAR batches folder", required=True)
    p.add_argument("--dataset", choices=("imagenet", "imagefolder", "cifar10", "synthetic"), default="imagenet")
    p.add_argument("--mode", choices=MODES, default="10crop")
    p.add_argument("--scales", type=int, nargs="+", default=None, help="fullconv shorter sides (224 256 384 480 640)")
    p.add_argument("--image-size", type=int, default=None, help="crop size (default: checkpoint's, else 224 / 32)")
    p.add_argument("--base-width", type=int, default=None, help="default: the checkpoint's, else 64")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    add_device(p)
    add_amp(p)
    add_no_progress(p)
    add_json(p, '{"mode", "weights", "top1_error", "top5_error", "num_images"}', old=("--output",))
    return p


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    args = build_parser().parse_args(argv)

    result = evaluate_weights(
        args.arch,
        args.weights,
        str(args.data_root),
        args.dataset,
        args.mode,
        image_size=args.image_size,
        scales=args.scales,
        base_width=args.base_width,
        batch_size=args.batch_size,
        workers=args.workers,
        device=None if args.device == "auto" else args.device,
        amp=args.amp,
        progress=not args.no_progress,
    )
    print(f"{args.mode}: top-1 error {result['top1_error']:.2f}%  top-5 error {result['top5_error']:.2f}%  "
          f"({result['num_images']} images)")  # fmt: skip
    if args.json:
        write_json(args.json, {"mode": args.mode, "weights": args.weights, **result})
    return result


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except ResultWriteError as exc:  # --json on a full disk or in a read-only folder: one line, nothing partial
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
