#!/usr/bin/env python
"""Draw the ground-truth boxes of a dataset split, to check annotations before training on them.

    python tools/browse_dataset.py --dataset coco --train-json my/train.json --train-images my/images \
        --config configs/quickstart.yaml --transforms --output-dir output/browse_train

Writes OUTPUT_DIR/<image>.png with each object's box and class name (crowd or difficult objects thin, marked
``*``) and prints the number of images and objects per class. ``--transforms`` shows what training sees: the
training split in training mode (crowd/difficult objects and images left empty dropped) after the configured
resize and flip (``--config`` and ``key=value`` overrides, e.g. ``input.train_min_sizes=[480]``).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

from detection.config import ConfigError, load_config
from detection.data import DATASETS, resolve_split
from detection.data.errors import DatasetError
from detection.deploy.visualize import draw_ground_truth
from detection.engine.cli import (
    add_config,
    add_data_root,
    add_output_dir,
    add_overrides,
    add_split,
    tool_parser,
)
from detection.engine.own_data import add_own_data_arguments, own_data_overrides, own_split_name
from detection.engine.run import RunOptions, make_dataset
from detection.engine.run_dir import RunDirError, prepare_output_dir
from detection.files import ResultWriteError, atomic_open

EXAMPLE = ("python tools/browse_dataset.py --dataset shapes --data-root datasets/shapes --split val --num 8 "
           "--output-dir output/browse")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    args.overrides += own_data_overrides(args)
    return args


def build_parser() -> argparse.ArgumentParser:
    p = tool_parser(__doc__, EXAMPLE)
    p.add_argument("--dataset", required=True, choices=sorted(DATASETS))
    add_data_root(p, "default datasets/<dataset>")
    add_split(p, "default: the test split, or the training split with --transforms")
    add_config(p, "the transforms, own-data paths")
    p.add_argument("--transforms", action="store_true", help="the training split after the training transforms")
    p.add_argument("--num", type=int, default=20, help="how many images to draw (0: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random training transforms")
    add_output_dir(p, "output/browse")
    add_own_data_arguments(p)
    add_overrides(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    train = args.transforms
    try:
        cfg = load_config(args.config, args.overrides)
        data_split = cfg.data.train_split if train else cfg.data.test_split
        opts = RunOptions(dataset=args.dataset, data_root=args.data_root or Path("datasets") / args.dataset,
                          output_dir=args.output_dir)  # fmt: skip
        split = resolve_split(args.dataset, args.split, data_split, train=train, root=opts.data_root)
        dataset = make_dataset(opts, cfg, split, train=train)
        prepare_output_dir(args.output_dir)
    except (ConfigError, DatasetError, RunDirError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if train and dataset.transforms is not None:
        dataset.transforms.set_random_seed(args.seed)
    count = len(dataset) if args.num <= 0 else min(args.num, len(dataset))
    objects: Counter[str] = Counter()
    drawn = 0
    for index in range(count):
        sample = dataset[index]
        if sample is None:  # unreadable: the dataset logged a warning naming the file
            continue
        image, target = sample
        rgb = (image.permute(1, 2, 0).numpy() * 255).round().clip(0, 255).astype(np.uint8)
        ignored = target.get("iscrowd", target.get("difficult"))
        picture = draw_ground_truth(rgb, target["boxes"], target["labels"], dataset.classes, ignored)
        name = Path(dataset.image_info(index)["file_name"]).stem
        try:
            with atomic_open(args.output_dir / f"{name}.png", "wb") as f:
                f.write(cv2.imencode(".png", cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))[1].tobytes())
        except ResultWriteError as exc:  # a full disk, a name too long: imwrite returned False and went on
            print(f"error: {exc}", file=sys.stderr)
            return 1
        objects.update(dataset.classes[int(k) - 1] for k in target["labels"])
        drawn += 1
    label = own_split_name(opts.dataset, cfg.data, train=train) or split
    print(f"{args.dataset} {label}{' (training transforms)' if train else ''}: drew {drawn} of {len(dataset)} "
          f"images to {args.output_dir}")
    print("objects per class: " + ", ".join(f"{c} {objects[c]}" for c in dataset.classes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
