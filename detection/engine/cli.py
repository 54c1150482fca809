"""The command-line options ``tools/train_det.py`` and ``tools/test_det.py`` share, and the ``RunOptions`` they
become. Each tool adds its own options (``--resume``, ``--weights``, …) and passes the matching fields to
``run_options``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from detection.data import DATASETS
from detection.engine.run import RunOptions


def add_run_arguments(parser: argparse.ArgumentParser, *, output_dir: str) -> None:
    """The options ``tools/train_det.py`` and ``tools/test_det.py`` share; ``run_options`` reads them back."""
    parser.add_argument("--dataset", required=True, choices=sorted(DATASETS))
    parser.add_argument("--data-root", type=Path, default=None,
                        help="dataset root in its standard layout (default datasets/<dataset>; shapes: generated "
                             "there if missing)")  # fmt: skip
    parser.add_argument("--output-dir", type=Path, default=Path(output_dir))
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--amp", action="store_true", help="mixed precision (fp16 on CUDA, bf16 on CPU)")
    parser.add_argument("--strict", action="store_true", help="stop at the first unreadable image instead of skipping")
    parser.add_argument("--no-optimize", action="store_true",
                        help="run the model as built (default: frozen BNs folded into the convs, channels-last)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    parser.add_argument("overrides", nargs="*", help="config overrides key=value")


def run_options(args: argparse.Namespace, **tool_options: Any) -> RunOptions:
    """``RunOptions`` from the arguments ``add_run_arguments`` defined, plus the calling tool's own fields."""
    return RunOptions(
        dataset=args.dataset,
        data_root=args.data_root or Path("datasets") / args.dataset,
        output_dir=args.output_dir,
        device=args.device,
        amp=args.amp,
        strict=args.strict,
        progress=not args.no_progress,
        optimize=not args.no_optimize,
        **tool_options,
    )
