#!/usr/bin/env python
"""Train the paper's ImageNet localiser (Appendix C): stage ``rpn`` (the per-class RPN), then stage ``rcnn``.

    python tools/train_loc.py rpn --data-root datasets/imagenet_loc --config configs/imagenet_loc/rpn_rcnn_r101.yaml \
        --output-dir output/loc/rpn net.weights=output/cls_r101/model_final.pth
    python tools/train_loc.py rcnn --data-root datasets/imagenet_loc --config configs/imagenet_loc/rpn_rcnn_r101.yaml \
        --weights output/loc/rpn/model_final.pth --output-dir output/loc/rcnn net.weights=...
    torchrun --nproc_per_node=8 tools/train_loc.py rpn ...

``--data-root`` holds ``ILSVRC/`` and ``LOC_synset_mapping.txt`` / ``LOC_*_solution.csv`` (docs/localization.md).
Stage ``rcnn`` loads the trained per-class RPN (``--weights``) for its proposals. Trailing ``key=value`` arguments
override the config. ``--amp`` trains in mixed precision. SIGTERM / Ctrl-C save a checkpoint at the current iteration
and stop (exit code 143 / 130); ``--resume`` continues from the newest good checkpoint, exactly.
"""

from __future__ import annotations

import argparse
import sys

from torch.distributed.elastic.multiprocessing.errors import record

from backbones.checkpoint import CheckpointError, CheckpointWriteError
from backbones.loop_guard import RunDirError, TrainingInterrupted
from backbones.weights import WeightsError
from detection.config import ConfigError
from detection.engine.cli import (
    add_amp,
    add_config,
    add_data_root,
    add_device,
    add_no_progress,
    add_output_dir,
    add_overrides,
    add_weights,
    tool_parser,
)
from detection.errors import DatasetError
from detection.localization.config import load_loc_config
from detection.localization.engine import train_rcnn, train_rpn

# The generated data and classifier of tools/quickstart_loc.py; docs/localization.md has the paper's ImageNet run.
EXAMPLE = ("python tools/train_loc.py rpn --data-root datasets/imagenet_loc_gen --config "
           "configs/imagenet_loc/quickstart.yaml --output-dir output/loc_rpn "
           "net.weights=output/quickstart_loc/classifier/model_final.pth")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_intermixed_args(argv)  # the stage, options and key=value overrides in any order


def build_parser() -> argparse.ArgumentParser:
    p = tool_parser(__doc__, EXAMPLE)
    p.add_argument("stage", choices=("rpn", "rcnn"))
    add_data_root(p, "CLS-LOC layout: ILSVRC/ and the LOC_* files", required=True)
    add_config(p)
    add_output_dir(p, "output/loc")
    add_weights(p, "stage rcnn: the trained per-class RPN, stage rpn's model_final.pth", old=("--rpn-weights",))
    p.add_argument("--resume", action="store_true", help="continue from the newest good checkpoint in --output-dir")
    add_amp(p)
    add_device(p)
    add_no_progress(p)
    add_overrides(p)
    return p


@record
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.stage == "rcnn" and args.weights is None:
        print("error: stage rcnn needs --weights (the trained per-class RPN)", file=sys.stderr)
        return 2
    try:
        cfg = load_loc_config(args.config, args.overrides)
        common = dict(resume=args.resume, progress=not args.no_progress, device_name=args.device, amp=args.amp)
        if args.stage == "rpn":
            final = train_rpn(cfg, args.data_root, args.output_dir, **common)
        else:
            final = train_rcnn(cfg, args.data_root, args.weights, args.output_dir, **common)
    except TrainingInterrupted as exc:
        print(f"stopped: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:  # before training started (reading data, proposals): nothing to save
        print("stopped: interrupted before training started; nothing was saved", file=sys.stderr)
        return 130
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (RunDirError, CheckpointWriteError, CheckpointError, WeightsError, DatasetError, FloatingPointError,
            ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{args.stage}: weights in {final}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
