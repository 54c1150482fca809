"""Time per image of the paper's full detection system (Appendix B, the rows of its COCO table): the baseline,
+ box refinement (with voting, NMS 0.3), + global context, + multi-scale testing (the 5-scale pyramid), and all
together, each as ``tools/test_det.py`` runs it (``optimize_for_inference``, then ``build_test_detector``).

    python tools/benchmark_system.py --config configs/coco/faster_rcnn_r50_c4.yaml --iters 3 --threads 2

Weights are random and calibrated as in tools/benchmark.py (every frozen BN normalises its input on the benchmark
image; a wider classifier so that detections pass the score threshold), the same seed for every variant. Variants
are timed in rounds with the order rotating (tools/benchmark.py's ``measure``); medians are reported, never asserted.
FLOPs (``FlopCounterMode``) say how much of a row's time is work that cannot be shared: the pyramid runs the trunk
at five scales and the box head at two levels per RoI, refinement runs the box head again on the refined boxes.
The last row is the speed option ``test.pyramid_levels_per_roi=1`` (each RoI at its nearest level only: half the
pyramid's box-head work, not the paper's maxout).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from datetime import date
from pathlib import Path
from typing import Any

import torch

from detection.benchmark import benchmark_sample, calibrate, save_results
from detection.build import build_detector, build_test_detector
from detection.config import load_config
from detection.engine.cli import add_config, add_json, add_overrides, tool_parser
from detection.fast.optimize import optimize_for_inference
from tools.benchmark import Variant, count_flops, inference_step, measure

REFINEMENT = ["model.roi_heads.box_refinement=true", "model.roi_heads.box_voting=true"]
CONTEXT = ["model.roi_heads.global_context=true"]


def variants(pyramid: list[int]) -> dict[str, list[str]]:
    """Row name → config overrides."""
    scales = ["test.pyramid_min_sizes=[" + ",".join(str(s) for s in pyramid) + "]"]
    return {
        "baseline": [],
        "+ box refinement": REFINEMENT,
        "+ global context": CONTEXT,
        "+ multi-scale testing": scales,
        "all together": REFINEMENT + CONTEXT + scales,
        "all together, one level per RoI": REFINEMENT + CONTEXT + scales + ["test.pyramid_levels_per_roi=1"],
    }


def build(args: argparse.Namespace, overrides: list[str], image: torch.Tensor) -> torch.nn.Module:
    size = args.image_size
    cfg = load_config(args.config, [
        f"input.test_min_size={size}", f"input.test_max_size={round(size * 1000 / 600)}",
        "model.backbone.weights=none", "model.rpn.min_box_size=0.001", *args.opts, *overrides,
    ])
    torch.manual_seed(args.seed)
    model = build_detector(cfg)
    calibrate(model, image)
    return build_test_detector(optimize_for_inference(model), cfg)


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    image, _ = benchmark_sample(args.image_size, round(args.image_size * 4 / 3), seed=args.seed)
    rows: list[Variant] = []
    for name, overrides in variants(args.pyramid).items():
        for dtype in args.dtype:
            rows.append(Variant(name, build(args, overrides, image), dtype))
    steps = [inference_step(v, [image], device) for v in rows]
    detections = []
    for v, step in zip(rows, steps):
        detections.append(len(step()[0]["boxes"]))
        v.flops = count_flops(step)
    measure(rows, steps, device, args.warmup, args.iters)
    base = {d: statistics.median(next(v for v in rows if v.dtype == d).times) for d in args.dtype}
    return {"rows": [
        {"variant": v.name, "dtype": v.dtype, "s_per_img": statistics.median(v.times), "times": v.times,
         "gflop": v.flops / 1e9, "detections": n, "vs_baseline": statistics.median(v.times) / base[v.dtype],
         "cpu_share": statistics.median(v.cpu_share)}
        for v, n in zip(rows, detections)
    ]}


def markdown(result: dict[str, Any], args: argparse.Namespace, command: str) -> str:
    lines = [
        f"### Full system, CPU {', '.join(args.dtype)}, {date.today().isoformat()}", "",
        f"- command: `{command}`",
        f"- torch {torch.__version__}; threads {args.threads}; load average at start/end "
        f"{result['load'][0]:.2f} / {result['load'][1]:.2f}; image {args.image_size}×"
        f"{round(args.image_size * 4 / 3)}; pyramid {args.pyramid}; {args.warmup} warm-up + {args.iters} timed "
        "iterations per variant, alternating; ours optimised", "",
        "| variant | dtype | s/img (median) | × baseline | GFLOP/img | × baseline GFLOP | detections | CPU share |",
        "|---|---|---|---|---|---|---|---|",
    ]
    base_flops = {r["dtype"]: r["gflop"] for r in result["rows"] if r["variant"] == "baseline"}
    for r in result["rows"]:
        lines.append(
            f"| {r['variant']} | {r['dtype']} | {r['s_per_img']:.3f} | {r['vs_baseline']:.2f} | {r['gflop']:.0f} "
            f"| {r['gflop'] / base_flops[r['dtype']]:.2f} | {r['detections']} | {r['cpu_share']:.2f} |"
        )
    return "\n".join(lines) + "\n"


EXAMPLE = "python tools/benchmark_system.py --image-size 320 --pyramid 240 320 --iters 1 --threads 1"


def build_parser() -> argparse.ArgumentParser:
    p = tool_parser(__doc__, EXAMPLE)
    add_config(p, "default configs/coco/faster_rcnn_r50_c4.yaml", type=str,
               default=str(Path(__file__).resolve().parents[1] / "configs/coco/faster_rcnn_r50_c4.yaml"))
    p.add_argument("--dtype", nargs="+", default=["fp32"], choices=["fp32", "bf16"])
    p.add_argument("--image-size", type=int, default=600, help="shorter side; images are 4:3")
    p.add_argument("--pyramid", type=int, nargs="+", default=[200, 400, 600, 800, 1000])
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--seed", type=int, default=0)
    add_json(p, "all rows and times")
    p.add_argument("--markdown", type=Path, help="append the table (with command and date) to this file")
    add_overrides(p, "applied to every variant", dest="opts")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    command = "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])])
    load0 = os.getloadavg()[0]
    result = run(args)
    result["load"] = (load0, os.getloadavg()[0])
    text = markdown(result, args, command)
    print(text)
    save_results(args, result, text)


if __name__ == "__main__":
    main()
