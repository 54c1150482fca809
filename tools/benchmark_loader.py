"""Does the data pipeline keep up with training? Decode + augment (resize to shorter side 600, flip) + collate, with
0..N DataLoader workers, on a generated COCO-layout shapes set with COCO-sized images (default 480–640 px).

    python tools/benchmark_loader.py --workers 0 1 2 --images 64 --batch-size 2 --consumes 0.35

``--consumes`` (images/s the training step takes, e.g. from tools/benchmark.py) is printed next to each rate.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from detection.data import build_dataset
from detection.data.collate import collate
from detection.data.shapes import generate_shapes
from detection.data.transforms import build_transforms
from detection.engine.cli import add_data_root, add_flag, tool_parser


def loader_rate(root: Path, workers: int, batch: int, epochs: int, min_size: int, max_size: int) -> float:
    """Images per second over ``epochs`` passes, after the first batch (worker start-up excluded)."""
    transforms = build_transforms(train=True, min_sizes=(min_size,), max_size=max_size, flip_prob=0.5)
    dataset = build_dataset("shapes", root, "train", transforms, train=True)
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers, collate_fn=collate,
                        persistent_workers=workers > 0, drop_last=True)
    seen, start = 0, 0.0
    for epoch in range(epochs):
        for i, (images, _) in enumerate(loader):
            if epoch == 0 and i == 0:
                start = time.perf_counter()
                continue
            seen += len(images)
    return seen / (time.perf_counter() - start)


EXAMPLE = "python tools/benchmark_loader.py --workers 0 1 --images 16 --batch-size 2 --consumes 0.35"


def build_parser() -> argparse.ArgumentParser:
    p = tool_parser(__doc__, EXAMPLE)
    add_data_root(p, "shapes, generated when missing; default: a temp dir", old=("--root",), dest="root")
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--min-image", type=int, default=480, help="generated images' shorter side lower bound")
    p.add_argument("--max-image", type=int, default=640, help="generated images' longer side")
    p.add_argument("--min-size", type=int, default=600, help="training resize: shorter side")
    p.add_argument("--max-size", type=int, default=1000)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    add_flag(p, "--batch-size", old=("--batch",), dest="batch", type=int, default=2)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--consumes", type=float, default=0.0, help="images/s the training step consumes")
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.root or Path(tmp) / "shapes"
        if not (root / "annotations" / "instances_train.json").is_file():
            generate_shapes(root, num_train=args.images, num_val=1, min_size=args.min_image, max_size=args.max_image)
        lines = [f"### Data loader, {date.today().isoformat()}", "",
                 f"- command: `python tools/benchmark_loader.py {' '.join(argv or sys.argv[1:])}`",
                 f"- {args.images} generated JPEGs {args.min_image}–{args.max_image} px, resized to shorter side "
                 f"{args.min_size} (max {args.max_size}), flip 0.5, batch {args.batch}, {args.epochs} epochs; "
                 f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}", "",
                 "| workers | images/s | training consumes img/s | headroom |", "|---|---|---|---|"]
        for workers in args.workers:
            rate = loader_rate(root, workers, args.batch, args.epochs, args.min_size, args.max_size)
            headroom = f"{rate / args.consumes:.0f}×" if args.consumes else "-"
            lines.append(f"| {workers} | {rate:.1f} | {args.consumes or '-'} | {headroom} |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
