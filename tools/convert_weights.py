"""Convert published weights into toolkit checkpoints: the paper's MSRA Caffe ResNets, or detectron2's C4 detectors.

MSRA Caffe (``--from msra``, the default): a ``.npz`` (flat keys ``"res2a_branch2a/0"``, ...) or ``.pkl``
(``{"res2a_branch2a": [w], ...}``) of numpy arrays keyed by Caffe layer name, e.g. dumped from
``ResNet-50-model.caffemodel`` with pycaffe; or the same networks in caffe2 names, detectron2's
``ImageNetPretrained/MSRA/R-50.pkl`` (``conv1_w``, ``res2_0_branch2a_w`` …; the depth is read off the file;
detection/weights/msra.py). Output: a checkpoint for ``build_resnet(depth, style="msra")``, whose
input is BGR 0-255 minus the per-channel mean (``backbones.MSRA_INPUT``); it records that style, and loading it into
a torchvision-style net is an error::

    python tools/convert_weights.py --weights ResNet-50-model.npz --depth 50 --output weights/resnet50_msra.pth

detectron2 (``--from detectron2``): a Faster R-CNN C4 model-zoo ``.pkl`` or a ``.pth`` written by detectron2's
trainer. Output: a detector checkpoint (weights, the config of configs/detectron2/ that reproduces detectron2's
inference, the class names) for ``tools/test_det.py`` / ``tools/train_det.py``; see docs/model_zoo.md::

    # only its ResNet (COCO-trained conv1…conv5_x), to fine-tune a new detector with model.backbone.weights=…
    python tools/convert_weights.py --from detectron2 model_final_f97cb7.pkl --backbone-only --output r50_coco.pth
"""

from __future__ import annotations

import argparse
import sys
import zipfile
from pathlib import Path
from typing import Any

from backbones.checkpoint import CheckpointError, CheckpointWriteError, save_checkpoint
from backbones.weights import WeightsError
from detection.config import ConfigError
from detection.engine.cli import add_config, add_output, add_overrides, add_weights, tool_parser
from detection.weights.detectron2 import convert_detectron2_file
from detection.weights.msra import msra_checkpoint, read_msra_arrays

EXAMPLE = ("python tools/convert_weights.py --from detectron2 --weights model_final_f97cb7.pkl "
           "--output weights/r50_c4_3x.pth")


def read_arrays(path: Path) -> dict[str, Any]:
    """Numpy arrays keyed by layer name from a ``.npz`` or ``.pkl`` file, never executing pickled code."""
    try:
        return read_msra_arrays(path)
    except CheckpointError as e:
        raise SystemExit(f"{path}: {e.reason}") from e


def convert_msra(path: Path, depth: int | None, output: Path) -> Path:
    try:
        checkpoint = msra_checkpoint(path, depth)  # caffe2 names (detectron2's R-50.pkl) or Caffe names
    except CheckpointError as e:
        raise SystemExit(f"{path}: {e.reason}") from e
    except (WeightsError, ValueError, TypeError) as e:  # a missing layer, a wrong shape, NaN weights
        if depth is None and "give the depth" in str(e):
            raise SystemExit("--depth is required with --from msra for Caffe-named weights (50, 101 or 152)") from e
        raise SystemExit(f"{path}: {e}") from e
    written = save_checkpoint(output, checkpoint)
    arch = checkpoint["config"]["arch"]
    print(f"wrote {written}: {len(checkpoint['model'])} tensors for build_resnet({arch[len('resnet'):]}, "
          "style='msra')")
    return written


def convert_d2(path: Path, config: Path | None, overrides: list[str], output: Path, backbone_only: bool) -> Path:
    # Without --config: the configs/detectron2 file for the checkpoint's depth and classes, with its width and class
    # count (e.g. a detector trained on another dataset); everything else, detectron2's inference, from the YAML.
    try:
        converted = convert_detectron2_file(path, config, overrides)
        checkpoint = converted.backbone_checkpoint() if backbone_only else converted.detector_checkpoint()
    except CheckpointError as e:
        raise SystemExit(f"{path}: {e}") from e
    except (ConfigError, ValueError) as e:
        raise SystemExit(f"{path}{f' with {config}' if config else ''}: {e}") from e
    written = save_checkpoint(output, checkpoint)
    if backbone_only:
        print(f"wrote {written}: the ResNet-{converted.arch.depth} (MSRA style) of {path}, for model.backbone.weights")
    else:
        print(f"wrote {written}: {converted.summary()}")
    return written


def build_parser() -> argparse.ArgumentParser:
    parser = tool_parser(__doc__, EXAMPLE)
    parser.add_argument("--from", dest="source", choices=("msra", "detectron2"), default="msra",
                        help="what the input is (default: MSRA Caffe blobs)")
    parser.add_argument("path", nargs="?", type=Path, help="the input file, as --weights")
    add_weights(parser, "the published weights: .npz/.pkl of Caffe blobs, or a detectron2 .pkl/.pth",
                old=("--input",), default=None)
    parser.add_argument("--depth", type=int, choices=(50, 101, 152), default=None,
                        help="MSRA with Caffe names only (caffe2 names: read off the file)")
    add_config(parser, "detectron2 only: the toolkit config describing the checkpoint (default: configs/"
                       "detectron2/ by depth and classes)")
    parser.add_argument("--backbone-only", action="store_true",
                        help="detectron2 only: write just the ResNet (conv1…conv5_x) for model.backbone.weights")
    add_output(parser, "the toolkit checkpoint (.pth)", required=True)
    add_overrides(parser, "detectron2 only")
    return parser


def main(argv: list[str] | None = None) -> Path:
    parser = build_parser()
    args = parser.parse_intermixed_args(argv)
    # ``path`` and ``overrides`` are both positional: with --weights, the first key=value lands in ``path``.
    if args.path is not None and "=" in str(args.path):
        args.overrides.insert(0, str(args.path))
        args.path = None
    path = args.weights or args.path
    if path is None:
        parser.error("give the input file (--weights or positional)")
    if args.source == "msra":
        if args.overrides or args.config is not None or args.backbone_only:
            parser.error("--config, --backbone-only and key=value overrides apply to --from detectron2 only")
        return convert_msra(path, args.depth, args.output)
    return convert_d2(path, args.config, args.overrides, args.output, args.backbone_only)


def run(argv: list[str] | None = None) -> int:
    """``main`` with every failure as one ``error:`` line naming the input (exit code 1), never a traceback:
    object arrays or a truncated ``.npz``, missing layers, NaN weights, bad anchors, an unwritable output."""
    try:
        main(argv)
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(one_error_line(exc.code), file=sys.stderr)
            return 1
        raise
    except (CheckpointError, WeightsError, CheckpointWriteError, ValueError, OSError, zipfile.BadZipFile,
            EOFError) as exc:
        path = getattr(exc, "filename", None)
        print(one_error_line(f"{type(exc).__name__ if not str(exc) else ''}{exc}"
                             + (f" ({path})" if path and str(path) not in str(exc) else "")), file=sys.stderr)
        return 1
    return 0


def one_error_line(message: str, limit: int = 600) -> str:
    text = " ".join(message.split())
    text = text if len(text) <= limit else text[:limit] + "…"
    return text if text.startswith("error:") else f"error: {text}"


if __name__ == "__main__":
    sys.exit(run())
