#!/usr/bin/env python
"""Draw a trained detector's boxes, class names and scores on images, a video or a camera's frames.

``--images`` takes files or folders (every .jpg/.jpeg/.png/.bmp inside). Each result is written as
``OUTPUT_DIR/<name>.png`` and the detections as ``OUTPUT_DIR/detections.json``.

``--video FILE`` (or ``--video 0``, a camera) writes ``OUTPUT_DIR/<name>.mp4`` (``camera0.mp4``) with the same
size, frame count and frame rate, and prints the frames per second; ``--show`` also opens a window where there is a
display (``q`` stops). Frames that fail to decode are skipped and counted::

    python tools/demo.py --weights detectron2:R50-C4-3x --video street.mp4 --output-dir output/demo --show
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path

import cv2
import torch
from tqdm import tqdm

from backbones.checkpoint import CheckpointError
from backbones.runtime import (
    autocast,
    pick_device,
    setup_logging,
)
from detection.build import (
    build_test_detector,
    load_detector,
)
from detection.config import ConfigError, load_config
from detection.data.errors import UnreadableImageError
from detection.data.io import read_image
from detection.data.transforms import to_tensor
from detection.deploy.predictor import Predictor
from detection.deploy.video import VideoError, annotate_video
from detection.deploy.visualize import draw_detections
from detection.engine.cli import (
    add_amp,
    add_config,
    add_device,
    add_no_progress,
    add_output_dir,
    add_overrides,
    add_weights,
    tool_parser,
)
from detection.engine.run_dir import RunDirError, prepare_output_dir
from detection.fast.optimize import optimize_for_inference
from detection.files import ResultWriteError, atomic_open, write_json
from detection.modeling.boxes import scale_boxes

EXAMPLE = ("python tools/demo.py --weights output/quickstart/detector/model_final.pth --images datasets/shapes/val "
           "--output-dir output/demo")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}
logger = logging.getLogger("demo")


def collect_images(paths: list[Path]) -> list[Path]:
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
        else:
            found.append(path)
    return found


def drawing_names(images: list[Path]) -> dict[Path, str]:
    """``<stem>.png`` per image, unique: ``a/img.jpg`` and ``b/img.png`` (or ``b/img.jpg``) become ``img.png`` and
    ``img_1.png`` instead of one overwriting the other."""
    names: dict[Path, str] = {}
    taken: set[str] = set()
    for path in images:
        name, k = f"{path.stem}.png", 0
        while name.lower() in taken:
            k += 1
            name = f"{path.stem}_{k}.png"
        taken.add(name.lower())
        names[path] = name
    return names


OVERRIDE = re.compile(r"^[A-Za-z_][\w.]*=")


def build_parser() -> argparse.ArgumentParser:
    p = tool_parser(__doc__, EXAMPLE)
    add_weights(p, "written by tools/train_det.py", required=True)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", type=Path, nargs="+", help="image files or folders")
    source.add_argument("--video", metavar="FILE|INDEX", help="a video file, or a camera index (0: the first)")
    p.add_argument("--show", action="store_true", help="--video: also show the frames in a window")
    p.add_argument("--batch-size", type=int, default=1, help="--video: frames per forward pass (4: 1.3x on a CPU)")
    add_output_dir(p, "output/demo")
    add_config(p, "default: the one in the checkpoint")
    p.add_argument("--score-thresh", type=float, default=0.5, help="draw detections scoring at least this")
    add_device(p)
    add_amp(p)
    add_no_progress(p)
    p.add_argument("--strict", action="store_true", help="stop at the first unreadable or oversized image")
    add_overrides(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # ``--images a.jpg b.jpg key=value`` : argparse hands trailing overrides to --images; take them back.
    overrides = [str(x) for x in args.images or [] if OVERRIDE.match(str(x)) and not x.exists()]
    args.images = [x for x in args.images or [] if str(x) not in overrides]
    args.overrides = overrides + args.overrides
    setup_logging(None)
    if not 0.0 <= args.score_thresh <= 1.0:  # NaN too: it would silently draw nothing
        print(f"error: --score-thresh must be in [0, 1], got {args.score_thresh}", file=sys.stderr)
        return 2
    try:
        cfg = load_config(args.config, args.overrides) if args.config is not None else None
        model, cfg, classes = load_detector(args.weights, cfg, args.overrides)
        prepare_output_dir(args.output_dir)
    except (ConfigError, CheckpointError, RunDirError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.video is not None:
        return video(args, Predictor.from_detector(model, cfg, classes, device=args.device, amp=args.amp))
    device = pick_device(args.device)
    model = optimize_for_inference(model.to(device))  # frozen BN folded into the convs, channels-last
    model = build_test_detector(model, cfg)  # the image pyramid, if configured
    images = collect_images(args.images)
    if not images:
        print("error: no images found in " + " ".join(map(str, args.images)), file=sys.stderr)
        return 2
    output_names = drawing_names(images)
    records, failed = [], 0
    bar = tqdm(images, desc="demo", disable=args.no_progress)
    for path in bar:
        try:
            image, original = read_image(path, max_pixels=cfg.input.max_image_pixels)
        except UnreadableImageError as exc:
            if args.strict:
                bar.close()  # before the error line, so that it stays the last one
                print(f"error: {exc}", file=sys.stderr)
                return 1
            logger.warning("%s", exc)
            failed += 1
            continue
        try:
            with torch.inference_mode(), autocast(device, args.amp):
                det = model([to_tensor(image).to(device)])[0]
        except RuntimeError as exc:  # one odd image must not cost the others their drawings
            reason = (str(exc).strip().splitlines() or ["RuntimeError"])[0][:200]
            if args.strict:
                bar.close()
                print(f"error: {path}: detection failed: {reason}", file=sys.stderr)
                return 1
            logger.warning("%s: detection failed (%s); skipped", path, reason)
            failed += 1
            continue
        det = {k: v.float().cpu() if v.is_floating_point() else v.cpu() for k, v in det.items()}
        drawn = draw_detections(image, det["boxes"], det["scores"], det["labels"], classes, args.score_thresh)
        out_path = args.output_dir / output_names[path]
        try:
            with atomic_open(out_path, "wb") as f:
                f.write(cv2.imencode(".png", cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))[1].tobytes())
        except ResultWriteError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        keep = det["scores"] >= args.score_thresh
        # The drawing is of the decoded image; the JSON's boxes are in the file's pixels (a file over 10,000 px is
        # decoded at reduced size).
        det["boxes"] = scale_boxes(det["boxes"], (image.shape[0], image.shape[1]), original)
        records.append({
            "image": str(path),
            "output": str(out_path),
            "detections": [
                {"box": [round(v, 2) for v in b], "score": round(float(s), 4),
                 "label": classes[int(lab) - 1] if classes else int(lab)}
                for b, s, lab in zip(det["boxes"][keep].tolist(), det["scores"][keep], det["labels"][keep])
            ],
        })
    try:
        write_json(args.output_dir / "detections.json", records)
    except ResultWriteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {len(records)} images to {args.output_dir}" + (f" ({failed} unreadable, skipped)" if failed else ""))
    return 1 if failed and not records else 0


def video(args: argparse.Namespace, predictor: Predictor) -> int:
    try:
        done = annotate_video(predictor, args.video, args.output_dir, score_thresh=args.score_thresh,
                              batch_size=args.batch_size, show=args.show, progress=not args.no_progress)
    except VideoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    skipped = f", {done.failed} frames could not be decoded and were skipped" if done.failed else ""
    if not done.frames:
        print(f"error: {args.video}: no frame could be decoded{skipped}", file=sys.stderr)
        return 1
    rate = f"{done.fps:.1f}" if done.fps >= 10 else f"{done.fps:.3g}"
    per_frame = f" ({1 / done.fps:.2f} s per frame)" if 0 < done.fps < 1 else ""
    print(f"wrote {done.output}: {done.frames} frames at {rate} frames per second{per_frame}{skipped}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
