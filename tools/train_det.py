#!/usr/bin/env python
"""Train Faster R-CNN (ResNet C4) end to end, then evaluate on the dataset's test split.

    python tools/train_det.py --dataset coco --data-root datasets/coco --config configs/coco/faster_rcnn_r50_c4.yaml
    torchrun --nproc_per_node=8 tools/train_det.py --dataset voc --data-root datasets/VOCdevkit \
        --config configs/voc/faster_rcnn_r101_c4_0712.yaml --amp
    python tools/train_det.py --dataset shapes --config configs/quickstart.yaml solver.max_iter=100

Trailing ``key=value`` arguments override the config (e.g. ``solver.base_lr=0.01``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from torch.distributed.elastic.multiprocessing.errors import record  # noqa: E402

from backbones.checkpoint import CheckpointError  # noqa: E402
from backbones.weights import WeightsError  # noqa: E402
from detection.config import ConfigError, load_config  # noqa: E402
from detection.data import DATASETS, DatasetError  # noqa: E402
from detection.engine.run import RunOptions, train  # noqa: E402
from detection.engine.trainer import NonFiniteLossError  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, choices=sorted(DATASETS))
    p.add_argument("--data-root", type=Path, default=None,
                   help="dataset root in its standard layout (shapes: generated here if missing; "
                        "default datasets/<dataset>)")
    p.add_argument("--config", type=Path, default=None, help="YAML file overriding the defaults")
    p.add_argument("--output-dir", type=Path, default=Path("output/train"))
    p.add_argument("--resume", action="store_true", help="continue from the newest good checkpoint in --output-dir")
    p.add_argument("--amp", action="store_true", help="mixed precision (fp16 on CUDA, bf16 on CPU)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--strict", action="store_true", help="stop at the first unreadable image instead of skipping")
    p.add_argument("--skip-nonfinite", action="store_true", help="skip batches whose loss is NaN/inf")
    p.add_argument("--deterministic", action="store_true", help="deterministic kernels (exact resumption on CPU)")
    p.add_argument("--no-eval", action="store_true", help="do not evaluate after training")
    p.add_argument("--no-optimize", action="store_true",
                   help="train and test the model as built (default: frozen BNs folded into the convs, channels-last)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    p.add_argument("overrides", nargs="*", help="config overrides key=value")
    return p.parse_args(argv)


@record  # under torchrun, a failing worker's exception becomes the job's "Root Cause" summary
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    opts = RunOptions(
        dataset=args.dataset,
        data_root=args.data_root or Path("datasets") / args.dataset,
        output_dir=args.output_dir,
        device=args.device,
        amp=args.amp,
        strict=args.strict,
        progress=not args.no_progress,
        resume=args.resume,
        skip_nonfinite=args.skip_nonfinite,
        deterministic=args.deterministic,
        evaluate=not args.no_eval,
        optimize=not args.no_optimize,
    )
    try:
        train(cfg, opts)
    except (CheckpointError, WeightsError, DatasetError, NonFiniteLossError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
