"""Top-1/top-5 error of a classifier with the paper's testing protocols.

    python tools/eval_cls.py --arch resnet50 --weights torchvision --data-root data/imagenet --mode 10crop
    python tools/eval_cls.py --arch resnet50 --weights model_final.pth --data-root data/imagenet --mode fullconv
    python tools/eval_cls.py --arch cifar_resnet20 --weights output/cls/model_final.pth \\
        --dataset synthetic --data-root output/cls/data/synthetic_cifar --mode center

Modes: center (one crop), 10crop (4 corners + centre and flips of the 224 crop from shorter side 256, softmax
averaged), fullconv (whole image at shorter sides --scales and flipped, fc as a 1x1 conv, scores averaged).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from backbones.classify import MODES, evaluate_weights


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", required=True, help="resnet50, cifar_resnet110, …")
    p.add_argument("--weights", required=True, help='"torchvision", a torchvision state dict or a toolkit checkpoint')
    p.add_argument("--data-root", required=True, help="folder with val/<class>/, or the CIFAR batches folder")
    p.add_argument("--dataset", choices=("imagenet", "imagefolder", "cifar10", "synthetic"), default="imagenet")
    p.add_argument("--mode", choices=MODES, default="10crop")
    p.add_argument("--scales", type=int, nargs="+", default=None, help="fullconv shorter sides (224 256 384 480 640)")
    p.add_argument("--image-size", type=int, default=None, help="crop size (default: checkpoint's, else 224 / 32)")
    p.add_argument("--base-width", type=int, default=None, help="default: the checkpoint's, else 64")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default=None)
    p.add_argument("--amp", action="store_true")
    p.add_argument("--output", default=None, help="also write the result as JSON here")
    args = p.parse_args(argv)

    result = evaluate_weights(
        args.arch,
        args.weights,
        args.data_root,
        args.dataset,
        args.mode,
        image_size=args.image_size,
        scales=args.scales,
        base_width=args.base_width,
        batch_size=args.batch_size,
        workers=args.workers,
        device=args.device,
        amp=args.amp,
    )
    print(f"{args.mode}: top-1 error {result['top1_error']:.2f}%  top-5 error {result['top5_error']:.2f}%  "
          f"({result['num_images']} images)")  # fmt: skip
    if args.output:
        with open(args.output, "w") as f:
            json.dump({"mode": args.mode, "weights": args.weights, **result}, f, indent=2)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
