#!/usr/bin/env python
"""Download a dataset's official archives into the layout the loaders read, or check an existing root.

    python tools/prepare_dataset.py voc --root datasets/voc          # VOC 2007 trainval+test, 2012 trainval
    python tools/prepare_dataset.py coco --root datasets/coco        # COCO 2017 train/val (~19 GB)
    python tools/prepare_dataset.py coco --root datasets/coco --check

Downloads resume where an interrupted run stopped, show a progress bar, and are verified against the published
MD5 checksums before extraction. ``imagenet`` (ILSVRC DET) needs a login at image-net.org: the tool says which
files to place where, and ``--check`` verifies the result. ``--check`` exits 1 naming every missing path.
Train afterwards with e.g. ``python tools/train_det.py --dataset voc --data-root datasets/voc ...``; the
quickstart (``python tools/quickstart.py``) needs none of this and runs offline.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detection.data.errors import DatasetError  # noqa: E402
from detection.data.prepare import ARCHIVES, REQUIRED, check_layout, prepare  # noqa: E402

LOADER = {"coco": "coco", "voc": "voc", "imagenet": "imagenet_det"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", choices=sorted(ARCHIVES))
    p.add_argument("--root", "--data-root", dest="root", type=Path, default=None,
                   help="where the dataset goes: the --data-root of the other tools (default datasets/<dataset>)")
    p.add_argument("--check", action="store_true", help="only verify the layout under --root; download nothing")
    p.add_argument("--keep-archives", action="store_true", help="keep the downloaded archives after extraction")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    root = args.root or Path("datasets") / args.dataset
    if args.check:
        missing = check_layout(args.dataset, root)
    else:
        try:
            missing = prepare(args.dataset, root, keep_archives=args.keep_archives, progress=not args.no_progress)
        except DatasetError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    if missing:
        print(f"error: {root} is missing {len(missing)} of the {len(REQUIRED[args.dataset])} paths "
              f"--dataset {LOADER[args.dataset]} reads: {', '.join(str(root / m) for m in missing)}", file=sys.stderr)
        return 1
    print(f"{root}: complete for --dataset {LOADER[args.dataset]} (--data-root {root})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
