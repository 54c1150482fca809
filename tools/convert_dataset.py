#!/usr/bin/env python
"""Write one split of a YOLO, labelme, VOC or COCO dataset as a COCO instances JSON.

Categories are 1..K in the source's class order with its names; every image of the split is listed, with or without
objects; boxes are the source's own, as COCO [x, y, w, h] in pixel-edge coordinates (VOC's difficult objects become
iscrowd 1). file_name is relative to the data root (YOLO: data.yaml's path), so the result trains with
``--train-json OUT.json --train-images ROOT``. The JSON is written atomically. See docs/custom_data.md.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from detection.data import resolve_split
from detection.data.convert import CONVERTERS, convert_to_coco, write_json
from detection.data.errors import DatasetError
from detection.engine.cli import add_data_root, add_output, add_split, tool_parser
from detection.files import ResultWriteError

EXAMPLE = ("python tools/convert_dataset.py --from yolo --data-root datasets/shapes_yolo/data.yaml --split val "
           "--output datasets/shapes_yolo/val.json")


def build_parser() -> argparse.ArgumentParser:
    parser = tool_parser(__doc__, EXAMPLE)
    parser.add_argument("--from", dest="source", required=True, choices=sorted(CONVERTERS),
                        help="the source's format")
    add_data_root(parser, "yolo: data.yaml or its folder; labelme: the folder of JSONs; voc, coco: their layout, "
                          "or a COCO JSON itself", required=True)
    add_split(parser, "default: the training split (yolo: train; labelme: train/; voc: trainval; coco: train2017)")
    add_output(parser, "the COCO instances JSON", required=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        split = resolve_split(args.source, args.split, train=True, root=args.data_root)
        data = convert_to_coco(args.source, args.data_root, split)
        write_json(data, args.output)
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ResultWriteError as exc:  # names the file; nothing partial left under its name
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # its folder cannot be made
        print(f"error: cannot write {args.output}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"{args.source} {split}: {len(data['images'])} images, {len(data['annotations'])} objects, "
          f"{len(data['categories'])} classes → {Path(args.output)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
