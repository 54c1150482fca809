#!/usr/bin/env python
"""More examples:
  python tools/prepare_dataset.py coco --data-root datasets/coco    # COCO 2017 train/val (~19 GB)
  python tools/prepare_dataset.py coco2014 --data-root datasets/coco  # the paper's 2014 train/val + Detectron's minival
  python tools/prepare_dataset.py coco --data-root datasets/coco --check
  python tools/prepare_dataset.py imagenet --data-root datasets/imagenet --archives ~/Downloads/imagenet \\
      --parts cls,loc                                              # the ILSVRC2012 archives you downloaded
  python tools/prepare_dataset.py imagenet --data-root datasets/imagenet --base-url https://mirror.example/ilsvrc \\
      --header "Authorization: Bearer TOKEN"

Fetch a dataset's official archives into the layout the loaders read, or check an existing root. COCO and VOC
downloads resume where an interrupted run stopped, show a progress bar, and are verified against the published MD5
checksums before extraction (coco2014: the 2014 zips have none published and are not verified; Detectron's minival
annotations are). ImageNet is distributed after a login at image-net.org (or on Kaggle): download the
archives yourself and pass --archives DIR (or --files), or give a mirror with --base-url (same resumable
download; --header / --cookie for its authentication). Known ImageNet archives: ILSVRC2012_img_train.tar,
ILSVRC2012_img_val.tar, ILSVRC2012_devkit_t12.tar.gz (MD5s verified), ILSVRC2012_bbox_train_v2.tar.gz,
ILSVRC2012_bbox_val_v3.tgz, ILSVRC2017_DET.tar.gz, ILSVRC2017_devkit.tar.gz, Kaggle's
imagenet-object-localization-challenge.zip (no published MD5s); other names are recognised by their content.
Extraction is resumable too. ImageNet parts: cls (classification/train, val for tools/train_cls.py), loc (CLS-LOC
for tools/train_loc.py), det (ILSVRC DET for tools/train_det.py --dataset imagenet_det). --check exits 1 naming
every missing path. The quickstart (python tools/quickstart.py) needs none of this and runs offline.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from detection.data.errors import DatasetError
from detection.data.prepare import ARCHIVES, REQUIRED, check_layout, prepare
from detection.data.prepare_imagenet import PARTS, describe, missing_paths, prepare_imagenet
from detection.engine.cli import add_data_root, add_json, add_no_progress, tool_parser
from detection.files import write_json

LOADER = {"coco": "coco", "coco2014": "coco", "voc": "voc"}


EXAMPLE = "python tools/prepare_dataset.py voc --data-root datasets/voc   # VOC 2007 trainval+test, 2012 trainval"


def build_parser() -> argparse.ArgumentParser:
    p = tool_parser(__doc__, EXAMPLE)
    p.add_argument("dataset", choices=sorted([*ARCHIVES, "imagenet"]))
    add_data_root(p, "where the dataset goes; default datasets/<dataset>", old=("--root",))
    p.add_argument("--check", action="store_true", help="only verify the layout under --data-root; fetch nothing")
    p.add_argument("--keep-archives", action="store_true", help="keep downloaded archives after extraction")
    add_no_progress(p)
    add_json(p, "what is missing, per part")
    imagenet = p.add_argument_group("imagenet")
    imagenet.add_argument("--archives", type=Path, default=None, help="a folder holding the archives you downloaded")
    imagenet.add_argument("--files", nargs="+", default=None,
                          help="archive files (with --base-url: archive names to fetch from it)")
    imagenet.add_argument("--base-url", default=None, help="a mirror serving the archives by name")
    imagenet.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'",
                          help="an HTTP header for --base-url (repeatable), e.g. 'Authorization: Bearer TOKEN'")
    imagenet.add_argument("--cookie", default=None, help="a Cookie header value for --base-url")
    imagenet.add_argument("--parts", default=",".join(PARTS), help="which layouts to prepare/check: cls,loc,det")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def _headers(args: argparse.Namespace) -> dict[str, str]:
    headers = {}
    for line in args.header:
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise DatasetError(f"--header {line!r}: expected 'Name: value'")
        headers[name.strip()] = value.strip()
    if args.cookie:
        headers["Cookie"] = args.cookie
    return headers


def run_imagenet(args: argparse.Namespace, root: Path) -> dict[str, list[str]]:
    parts = tuple(p for p in args.parts.split(",") if p)
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise DatasetError(f"--parts: unknown {', '.join(unknown)} (choose from {', '.join(PARTS)})")
    if args.check:
        return missing_paths(root, parts)
    if args.base_url is None and args.archives is None and not args.files:
        raise DatasetError("imagenet: download the archives after logging in at https://image-net.org (or Kaggle's "
                           "imagenet-object-localization-challenge.zip) and pass --archives DIR or --files, or a "
                           "mirror with --base-url; see --help for the archive names")
    from_url = args.base_url is not None
    return prepare_imagenet(
        root, files=None if from_url else [Path(f) for f in args.files or []], archives_dir=args.archives,
        base_url=args.base_url, names=args.files if from_url else None, headers=_headers(args), parts=parts,
        keep_archives=args.keep_archives, progress=not args.no_progress)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    root = args.data_root or Path("datasets") / args.dataset
    try:
        if args.dataset == "imagenet":
            missing: dict[str, list[str]] | list[str] = run_imagenet(args, root)
        elif args.check:
            missing = check_layout(args.dataset, root)
        else:
            missing = prepare(args.dataset, root, keep_archives=args.keep_archives, progress=not args.no_progress)
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # the data root cannot be written: read-only, a file in the way, a name too long
        print(f"error: cannot write under {root}: {exc.strerror or exc}"
              + (f" ({exc.filename})" if getattr(exc, "filename", None) else ""), file=sys.stderr)
        return 1
    if args.json is not None:
        try:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            write_json(args.json, {"dataset": args.dataset, "data_root": str(root), "missing": missing,
                                   "complete": not missing})
        except OSError as exc:
            print(f"error: cannot write {args.json}: {exc.strerror or exc}", file=sys.stderr)
            return 1
    if isinstance(missing, dict):  # imagenet: one line per part
        parts = tuple(p for p in args.parts.split(",") if p)
        for line in describe(missing, root, parts):
            print(line, file=sys.stderr if line.split(":")[0] in missing else sys.stdout)
        return 1 if missing else 0
    if missing:
        print(f"error: {root} is missing {len(missing)} of the {len(REQUIRED[args.dataset])} paths "
              f"--dataset {LOADER[args.dataset]} reads: {', '.join(str(root / m) for m in missing)}", file=sys.stderr)
        return 1
    print(f"{root}: complete for --dataset {LOADER[args.dataset]} (--data-root {root})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
