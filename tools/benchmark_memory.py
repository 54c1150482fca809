"""Training memory of the R-C4 detector: the peak of a batch-2 step, and whether resident memory grows over many
iterations (a leak would show as a steady climb after the allocator has warmed up).

    python tools/benchmark_memory.py --iters 200 --image-size 320 --roi-batch 32 --threads 1

CPU: resident set (``VmRSS``) after every step and the high-water mark (``VmHWM``); CUDA: ``memory_allocated`` and
``max_memory_allocated``. Weights are random (calibrated as in tools/benchmark.py) and the SGD step is real.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import torch

from detection.benchmark import benchmark_sample, calibrate
from detection.build import build_detector
from detection.config import load_config
from detection.engine.cli import add_config, add_device, add_flag, tool_parser
from detection.fast.optimize import optimize_for_training
from tools.benchmark import _vm_kib, autocast, machine


def current_and_peak(device: torch.device) -> tuple[float, float]:
    """(current, peak) memory in MiB."""
    if device.type == "cuda":
        return torch.cuda.memory_allocated() / 2**20, torch.cuda.max_memory_allocated() / 2**20
    return _vm_kib("VmRSS") / 1024, _vm_kib("VmHWM") / 1024


EXAMPLE = "python tools/benchmark_memory.py --iters 20 --image-size 320 --roi-batch 32 --threads 1"


def build_parser() -> argparse.ArgumentParser:
    p = tool_parser(__doc__, EXAMPLE)
    add_config(p, "default configs/coco/faster_rcnn_r50_c4.yaml", type=str,
               default=str(Path(__file__).resolve().parents[1] / "configs/coco/faster_rcnn_r50_c4.yaml"))
    add_device(p, default="cpu")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--image-size", type=int, default=600)
    add_flag(p, "--batch-size", old=("--batch",), dest="batch", type=int, default=2)
    p.add_argument("--roi-batch", type=int, default=128, help="RoIs sampled per image (the config's is 128)")
    p.add_argument("--iters", type=int, default=200)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--plain", action="store_true", help="do not apply optimize_for_training")
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    size, long = args.image_size, round(args.image_size * 4 / 3)
    overrides = ["model.backbone.weights=none", f"model.roi_heads.batch_size_per_image={args.roi_batch}"]
    cfg = load_config(args.config, overrides)
    torch.manual_seed(0)
    samples = [benchmark_sample(size, long, seed=i) for i in range(args.batch)]
    model = build_detector(cfg)
    calibrate(model, samples[0][0])
    if not args.plain:
        optimize_for_training(model)
    model.to(device).train()
    images = [s[0].to(device) for s in samples]
    targets = [{k: t.to(device) for k, t in s[1].items()} for s in samples]
    optimizer = torch.optim.SGD([q for q in model.parameters() if q.requires_grad], lr=1e-5, momentum=0.9)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    else:
        Path("/proc/self/clear_refs").write_text("5")
    base, _ = current_and_peak(device)
    current, times = [], []
    for _ in range(args.iters):
        start = time.perf_counter()
        with autocast(device, args.dtype):
            losses = model(images, targets)
        sum(loss.float() for loss in losses.values()).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        current.append(current_and_peak(device)[0])
    _, peak = current_and_peak(device)
    tenth = max(1, args.iters // 10)
    early, late = statistics.median(current[tenth:2 * tenth]), statistics.median(current[-tenth:])
    print("\n".join([
        f"### Training memory, {date.today().isoformat()}", "",
        f"- command: `python tools/benchmark_memory.py {' '.join(argv if argv is not None else sys.argv[1:])}`",
        f"- machine: {machine(device)}; torch {torch.__version__}; threads {args.threads}; "
        f"{'plain' if args.plain else 'optimize_for_training'}, {args.dtype}",
        f"- R{cfg.model.backbone.depth}-C4, batch {args.batch}, images {size}×{long}, {args.roi_batch} RoIs/image, "
        f"{args.iters} iterations, median {statistics.median(times):.2f} s/iter", "",
        "| before training MiB | peak MiB | peak − before | current at 10–20% of run | current at last 10% | growth |",
        "|---|---|---|---|---|---|",
        f"| {base:.0f} | {peak:.0f} | {peak - base:.0f} | {early:.0f} | {late:.0f} | {late - early:+.0f} MiB |",
    ]))


if __name__ == "__main__":
    main()
