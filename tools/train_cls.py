"""Train a paper ResNet classifier (ImageNet / CIFAR-10 / any ImageFolder tree / the embedded synthetic default).

    python tools/train_cls.py --dataset cifar10 --data-root data/cifar-10-batches-py --arch cifar_resnet110
    torchrun --nproc_per_node 8 tools/train_cls.py --dataset imagenet --data-root data/imagenet --arch resnet50 --amp
    python tools/train_cls.py --dataset imagefolder --data-root data/shapes_cls --arch resnet18 --base-width 16 \\
        --image-size 64 --iters 300 --batch-size 64

Defaults are the paper's recipes (see docs/classification.md); every flag left out keeps the recipe value. SIGTERM /
Ctrl-C save a checkpoint at the current iteration and stop (exit 143 / 130); --resume continues exactly.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from backbones.checkpoint import CheckpointError
from backbones.files import ResultWriteError
from backbones.loop_guard import RunDirError, TrainingInterrupted
from backbones.train import DATASETS, TrainConfig, train
from detection.engine.cli import add_amp, add_data_root, add_device, add_no_progress, add_output_dir, tool_parser

EXAMPLE = "python tools/train_cls.py --output-dir output/cls   # synthetic shapes in CIFAR layout, minutes on a CPU"


def build_parser() -> argparse.ArgumentParser:
    p = tool_parser(__doc__, EXAMPLE)
    p.add_argument(
        "--dataset",
        choices=DATASETS,
        default=None,
        help="default: cifar10-style 'synthetic' when --data-root is absent, else imagenet",
    )
    add_data_root(p, "CIFAR batches folder, or a folder with train/ and val/", type=str)
    p.add_argument("--arch", default=None, help="resnet18..152, plain18.., cifar_resnet20..1202, cifar_plain..")
    p.add_argument("--base-width", type=int, default=64, help="conv1/conv2_x width of ImageNet nets (paper: 64)")
    p.add_argument("--shortcut", choices=("A", "B", "C"), default=None, help="default: B (ImageNet), A (CIFAR)")
    p.add_argument("--image-size", type=int, default=None, help="training crop (224 ImageNet, 32 CIFAR)")
    p.add_argument(
        "--scale-range",
        type=int,
        nargs=2,
        default=None,
        metavar=("MIN", "MAX"),
        help="random shorter side before cropping (default image_size*[256,480]/224)",
    )
    p.add_argument("--lighting", type=float, default=0.1, help="PCA colour noise std (0 disables)")
    p.add_argument("--holdout", type=int, default=0, help="CIFAR: validate on this many held-out train images")
    p.add_argument("--iters", type=int, default=None, help="training iterations (64k CIFAR, 600k ImageNet)")
    p.add_argument("--batch-size", type=int, default=None, help="global batch over all ranks (128 / 256)")
    p.add_argument("--lr", type=float, default=None, help="base learning rate (0.1)")
    p.add_argument(
        "--lr-steps",
        type=int,
        nargs="*",
        default=None,
        help="iterations where lr is divided by 10 (default: the recipe's fractions of --iters)",
    )
    p.add_argument("--lr-schedule", choices=("step", "plateau"), default="step")
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument(
        "--warmup",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="lr/10 until train error < --warmup-error (default: on for CIFAR depth >= 110)",
    )
    p.add_argument("--warmup-error", type=float, default=80.0)
    p.add_argument("--eval-every", type=int, default=None)
    p.add_argument("--ckpt-every", type=int, default=None)
    p.add_argument("--keep-checkpoints", type=int, default=3)
    add_output_dir(p, "output/cls", type=str)
    p.add_argument("--resume", action="store_true", help="continue from the latest good checkpoint in --output-dir")
    add_amp(p)
    p.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm across ranks (paper: per-GPU BN)")
    p.add_argument("--workers", type=int, default=2, help="data-loading processes per rank")
    p.add_argument("--seed", type=int, default=0)
    add_no_progress(p)
    add_device(p)
    return p


def parse_args(argv: Sequence[str] | None = None) -> TrainConfig:
    fields: dict[str, Any] = vars(build_parser().parse_args(argv))
    fields["progress"] = not fields.pop("no_progress")
    if fields["dataset"] is None:
        fields["dataset"] = "synthetic" if fields["data_root"] is None else "imagenet"
    if fields["scale_range"] is not None:
        fields["scale_range"] = tuple(fields["scale_range"])
    return TrainConfig(**fields)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    metrics = train(parse_args(argv))
    final = metrics["final"]
    if int(os.environ.get("RANK", "0")) == 0 and final.get("top1_error") is not None:
        print(f"final top-1 error {final['top1_error']:.2f}%  top-5 error {final['top5_error']:.2f}%")
    return metrics


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except TrainingInterrupted as exc:  # SIGTERM / Ctrl-C: a checkpoint at the current iteration (--resume)
        print(f"stopped: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except (RunDirError, CheckpointError, ResultWriteError) as exc:  # a checkpoint --resume cannot use, a full disk
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
