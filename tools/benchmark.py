"""Speed of this toolkit's Faster R-CNN R-C4 against torchvision's FasterRCNN assembled with the same architecture,
settings and weights (detection/benchmark.py), in one process, alternating the models every iteration.

    python tools/benchmark.py --config configs/coco/faster_rcnn_r50_c4.yaml --compare torchvision \
        --device cpu --dtype fp32 bf16 --threads 1 --iters 5 --json out.json --markdown docs/benchmarks.md

Rows: torchvision (fp32, the baseline of every ratio), ours as built (fp32), ours optimised (detection/fast/optimize.py:
frozen BN folded into the convs, channels-last; inference under ``torch.inference_mode``) in each ``--dtype``
(bf16 = ``torch.autocast``). Times are medians over ``--iters`` after ``--warmup``; FLOPs are counted once with
``FlopCounterMode`` and divided by the median time; the peak is the best of a large channels-last 3×3 convolution on
the same device and dtype. "CPU s/img" is the median process CPU time per call: on a shared machine at
``--threads 1`` it is the least disturbed measure of the work (at 2 threads it includes OpenMP spin-waiting).
Timed numbers are reported, never asserted.
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from detection.benchmark import (
    agreement,
    benchmark_sample,
    build_torchvision_c4,
    calibrate,
    capture_proposals,
    copy_weights,
    save_results,
)
from detection.build import build_detector
from detection.config import load_config
from detection.engine.cli import add_config, add_device, add_flag, add_json, add_overrides, tool_parser
from detection.fast.optimize import optimize_for_inference, optimize_for_training
from detection.modeling.box_head import conv5_of


@dataclass
class Variant:
    name: str
    model: nn.Module
    dtype: str  # "fp32" | "bf16"
    optimizer: torch.optim.Optimizer | None = None
    times: list[float] = field(default_factory=list)
    peak_bytes: int = 0
    flops: int = 0
    cpu_share: list[float] = field(default_factory=list)
    cpu_times: list[float] = field(default_factory=list)  # process CPU seconds per timed call


# --- measurement helpers ----------------------------------------------------------------------------------------
def _vm_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


class PeakMemory:
    """Peak memory above the level at entry: CUDA ``max_memory_allocated``; CPU the resident-set high-water mark
    (``VmHWM``, reset through ``/proc/self/clear_refs``), which includes allocator slack."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak = 0

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated()
        else:
            try:
                Path("/proc/self/clear_refs").write_text("5")
            except OSError:
                pass
            self.start = _vm_kib("VmRSS") * 1024
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.start
        else:
            self.peak = _vm_kib("VmHWM") * 1024 - self.start


def autocast(device: torch.device, dtype: str) -> Any:
    return torch.autocast(device.type, dtype=torch.bfloat16) if dtype == "bf16" else nullcontext()


def peak_conv_gflops(device: torch.device, dtype: str, reps: int = 3) -> float:
    """Best GFLOP/s of a 512→512 3×3 convolution on a 56×56 map, channels-last (batch 4 on CPU, 32 on CUDA)."""
    batch = 32 if device.type == "cuda" else 4
    torch_dtype = torch.bfloat16 if dtype == "bf16" else torch.float32
    conv = nn.Conv2d(512, 512, 3, padding=1, bias=False).to(device, torch_dtype, memory_format=torch.channels_last)
    x = torch.randn(batch, 512, 56, 56, device=device, dtype=torch_dtype).contiguous(memory_format=torch.channels_last)
    flops = 2 * batch * 56 * 56 * 512 * 512 * 9
    best = float("inf")
    with torch.inference_mode():
        for _ in range(reps + 1):
            start = _now(device)
            conv(x)
            best = min(best, _now(device) - start)
    return flops / best / 1e9


def keep_freed_memory() -> bool:
    """glibc only: serve allocations below 1 GiB from the heap and keep freed memory (``mallopt``
    ``M_MMAP_THRESHOLD`` / ``M_TRIM_THRESHOLD``). By default every tensor above 32 MiB is a fresh ``mmap`` whose
    pages fault in (and are zeroed) on first touch, then go back to the OS when freed: on this CPU that is a third
    of torchvision's inference time. Affects every model in the process alike. Returns whether it took effect."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(libc.mallopt(m_mmap_threshold, 1 << 30)) and bool(libc.mallopt(m_trim_threshold, 1 << 31))


def _now(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


# --- the two workloads ------------------------------------------------------------------------------------------
def inference_step(v: Variant, images: list[Tensor], device: torch.device) -> Callable[[], Any]:
    def step() -> Any:
        with torch.inference_mode(), autocast(device, v.dtype):
            return v.model(images)

    return step


def train_step(v: Variant, images: list[Tensor], targets: list[dict[str, Tensor]],
               device: torch.device) -> Callable[[], Any]:
    def step() -> Any:
        with autocast(device, v.dtype):
            losses = v.model(images, targets)
        total = sum(loss.float() for loss in losses.values())
        total.backward()
        assert v.optimizer is not None
        v.optimizer.step()
        v.optimizer.zero_grad(set_to_none=True)
        return total

    return step


def measure(variants: list[Variant], steps: list[Callable[[], Any]], device: torch.device, warmup: int,
            iters: int) -> None:
    """Run every variant ``warmup + iters`` times, rotating the order each round so contention hits all alike."""
    for it in range(warmup + iters):
        order = list(range(len(variants)))
        order = order[it % len(order):] + order[: it % len(order)]
        for k in order:
            v = variants[k]
            cpu0 = time.process_time()
            with PeakMemory(device) as mem:
                start = _now(device)
                steps[k]()
                elapsed = _now(device) - start
            if it >= warmup:
                v.times.append(elapsed)
                v.peak_bytes = max(v.peak_bytes, mem.peak)
                v.cpu_share.append((time.process_time() - cpu0) / elapsed / torch.get_num_threads())
                v.cpu_times.append(time.process_time() - cpu0)


def count_flops(step: Callable[[], Any]) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return counter.get_total_flops()


# --- building ---------------------------------------------------------------------------------------------------
def build_variants(args: argparse.Namespace, device: torch.device) -> tuple[Any, dict[str, nn.Module], list]:
    size = args.image_size
    overrides = [f"input.test_min_size={size}", f"input.test_max_size={round(size * 1000 / 600)}",
                 f"input.train_min_sizes=[{size}]", f"input.train_max_size={round(size * 1000 / 600)}",
                 "model.backbone.weights=none", "model.rpn.min_box_size=0.001", *args.opts]
    cfg = load_config(args.config, overrides)
    torch.manual_seed(args.seed)
    samples = [benchmark_sample(size, round(size * 4 / 3), seed=args.seed + i) for i in range(args.batch)]
    ours = build_detector(cfg)
    calibrate(ours, samples[0][0])
    theirs = build_torchvision_c4(cfg)
    copy_weights(ours, theirs)
    models = {"torchvision": theirs, "ours": ours}
    for m in models.values():
        m.to(device)
    return cfg, models, [(img.to(device), {k: t.to(device) for k, t in tgt.items()}) for img, tgt in samples]


def compile_parts(model: nn.Module) -> None:
    """torch.compile the dense parts (trunk, RPN head, conv5 head); the proposal logic stays eager. Inductor's
    freezing folds the (inference-only) weights as constants and lets it fuse conv + add + ReLU on CPU."""
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True
    model.trunk.compile()
    model.rpn.head.compile()
    conv5_of(model.roi_heads.box_head).compile(dynamic=True)


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    if args.keep_freed_memory and not keep_freed_memory():
        raise SystemExit("error: --keep-freed-memory needs glibc's mallopt (Linux)")
    cfg, models, samples = build_variants(args, device)
    images = [img for img, _ in samples]
    targets = [tgt for _, tgt in samples]
    result: dict[str, Any] = {"rows": [], "agreement": {}, "peak_gflops": {}}
    for dtype in args.dtype:
        result["peak_gflops"][dtype] = peak_conv_gflops(device, dtype)

    if args.mode in ("inference", "both"):
        base = [Variant("torchvision", models["torchvision"].eval(), "fp32"),
                Variant("ours", models["ours"].eval(), "fp32")]
        optimized = optimize_for_inference(copy.deepcopy(models["ours"]))
        if args.compile:
            compile_parts(optimized)
        variants = base + [Variant(f"ours optimised{' +compile' if args.compile else ''}", optimized, d)
                           for d in args.dtype]
        one = [images[0]]
        steps = [inference_step(v, one, device) for v in variants]
        outputs = []
        for v, step in zip(variants, steps):
            store, handle = capture_proposals(v.model)
            det = {k: t.float().cpu() for k, t in step()[0].items()}
            handle.remove()
            det["proposals"] = torch.cat(store).cpu() if store else torch.zeros(0, 4)
            outputs.append(det)
            v.flops = count_flops(step)
        result["agreement"] = {f"{v.name} {v.dtype}": agreement(outputs[0], out)
                               for v, out in zip(variants[1:], outputs[1:])}
        measure(variants, steps, device, args.warmup, args.iters)
        result["rows"] += [row("inference", v, 1, variants[0], result["peak_gflops"]) for v in variants]
        del optimized, variants, steps

    if args.mode in ("train", "both"):
        trained = {
            "torchvision": copy.deepcopy(models["torchvision"]).train(),
            "ours": copy.deepcopy(models["ours"]).train(),
        }
        fused = optimize_for_training(copy.deepcopy(models["ours"]).train())
        variants = [Variant("torchvision", trained["torchvision"], "fp32"), Variant("ours", trained["ours"], "fp32")]
        variants += [Variant("ours optimised", fused, d) for d in args.dtype]
        for v in variants:
            v.optimizer = torch.optim.SGD([p for p in v.model.parameters() if p.requires_grad], lr=1e-5,
                                          momentum=0.9, weight_decay=1e-4)
        steps = [train_step(v, images, targets, device) for v in variants]
        for v, step in zip(variants, steps):
            v.flops = count_flops(step)
        measure(variants, steps, device, args.warmup, args.iters)
        result["rows"] += [row("train", v, len(images), variants[0], result["peak_gflops"]) for v in variants]
    return result


def row(mode: str, v: Variant, images: int, baseline: Variant, peaks: dict[str, float]) -> dict[str, Any]:
    median = statistics.median(v.times)
    base = statistics.median(baseline.times)
    gflops = v.flops / median / 1e9
    return {
        "mode": mode, "model": v.name, "dtype": v.dtype, "images": images,
        "s_per_img": median / images, "img_per_s": images / median, "peak_mb": v.peak_bytes / 2**20,
        "gflop_per_img": v.flops / images / 1e9, "gflops": gflops,
        "pct_peak": 100 * gflops / peaks.get(v.dtype, peaks.get("fp32", float("nan"))),
        "vs_torchvision": median / base, "cpu_share": statistics.median(v.cpu_share),
        "cpu_s_per_img": statistics.median(v.cpu_times) / images,
        "cpu_vs_torchvision": statistics.median(v.cpu_times) / statistics.median(baseline.cpu_times),
        "times": v.times,
    }


# --- reporting --------------------------------------------------------------------------------------------------
def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda}"
    model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                  if ln.startswith("model name")), platform.processor())
    return f"{model}, {os.cpu_count()} cores"


def markdown(result: dict[str, Any], args: argparse.Namespace, command: str) -> str:
    device = torch.device(args.device)
    lines = [
        f"### {args.device.upper()} {', '.join(args.dtype)}, {date.today().isoformat()}",
        "",
        f"- command: `{command}`",
        f"- machine: {machine(device)}; torch {torch.__version__}; threads {args.threads}; "
        f"load average at start/end {result['load'][0]:.2f} / {result['load'][1]:.2f}; allocator: "
        + ("glibc, freed memory kept (--keep-freed-memory)" if args.keep_freed_memory else "default"),
        f"- image {args.image_size}×{round(args.image_size * 4 / 3)}, inference batch 1, training batch {args.batch}, "
        f"{args.warmup} warm-up + {args.iters} timed iterations per model, alternating; "
        "peak conv: " + ", ".join(f"{d} {g:.0f} GFLOP/s" for d, g in result["peak_gflops"].items()),
        "",
        "| mode | model | dtype | s/img (median) | img/s | peak mem MB | GFLOP/img | GFLOP/s | % conv peak "
        "| × torchvision time | CPU share | CPU s/img | × torchvision CPU s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['mode']} | {r['model']} | {r['dtype']} | {r['s_per_img']:.3f} | {r['img_per_s']:.2f} "
            f"| {r['peak_mb']:.0f} | {r['gflop_per_img']:.0f} | {r['gflops']:.0f} | {r['pct_peak']:.0f} "
            f"| {r['vs_torchvision']:.2f} | {r['cpu_share']:.2f} | {r['cpu_s_per_img']:.3f} "
            f"| {r['cpu_vs_torchvision']:.2f} |"
        )
    if result["agreement"]:
        lines += ["", "Output agreement with torchvision fp32 (eval, same weights, same image):", "",
                  "| model | proposals (tv/ours) | matched | max proposal diff px | detections (tv/ours) | matched "
                  "| max box diff px | max score diff |", "|---|---|---|---|---|---|---|---|"]
        for name, a in result["agreement"].items():
            lines.append(
                f"| {name} | {a.get('proposals', '-')} | {a.get('proposals_matched', 0):.3f} "
                f"| {a.get('proposal_max_box_diff', 0):.2g} | {a['detections']} | {a['detections_matched']:.3f} "
                f"| {a['max_box_diff']:.2g} | {a['max_score_diff']:.2g} |"
            )
    return "\n".join(lines) + "\n"


EXAMPLE = "python tools/benchmark.py --mode inference --image-size 320 --iters 2 --threads 1"


def build_parser() -> argparse.ArgumentParser:
    p = tool_parser(__doc__, EXAMPLE)
    add_config(p, "default configs/coco/faster_rcnn_r50_c4.yaml", type=str,
               default=str(Path(__file__).resolve().parents[1] / "configs/coco/faster_rcnn_r50_c4.yaml"))
    p.add_argument("--compare", default="torchvision", choices=["torchvision"])
    add_device(p, default="cpu")
    p.add_argument("--dtype", nargs="+", default=["fp32"], choices=["fp32", "bf16"],
                   help="dtypes of the optimised model (torchvision and ours-as-built always run fp32)")
    p.add_argument("--mode", default="both", choices=["inference", "train", "both"])
    p.add_argument("--image-size", type=int, default=600, help="shorter side; images are 4:3")
    add_flag(p, "--batch-size", old=("--batch",), dest="batch", type=int, default=1, help="images per training step")
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--compile", action="store_true", help="torch.compile the optimised model's dense parts")
    p.add_argument("--keep-freed-memory", action="store_true",
                   help="glibc: keep freed memory in the heap instead of mmap/munmap per large tensor (all models)")
    p.add_argument("--seed", type=int, default=0)
    add_json(p, "all rows, times and agreement")
    p.add_argument("--markdown", type=Path, help="append the table (with command, machine, date) to this file")
    add_overrides(p, "applied to both models", dest="opts")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    command = "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])])
    load0 = os.getloadavg()[0]
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    result = run(args)
    result["load"] = (load0, os.getloadavg()[0])
    result["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["cpu_s"] = resource.getrusage(resource.RUSAGE_SELF).ru_utime - usage0.ru_utime
    text = markdown(result, args, command)
    print(text)
    save_results(args, result, text)


if __name__ == "__main__":
    main()
