"""Convert the paper's original MSRA Caffe ResNet weights into a toolkit checkpoint.

Input: a ``.npz`` (flat keys ``"res2a_branch2a/0"``, ...) or ``.pkl`` (``{"res2a_branch2a": [w], ...}``) of numpy
arrays keyed by Caffe layer name, e.g. dumped from ``ResNet-50-model.caffemodel`` with pycaffe. Output: a toolkit
checkpoint for ``build_resnet(depth, style="msra")``, whose input is BGR 0-255 minus the per-channel mean
(``backbones.MSRA_INPUT``)::

    python tools/convert_weights.py --input ResNet-50-model.npz --depth 50 --output weights/resnet50_msra.pth

Load it with ``load_weights(build_resnet(50, style="msra"), "weights/resnet50_msra.pth")``.
"""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from backbones import build_resnet, load_weights
from backbones.checkpoint import save_checkpoint
from backbones.weights import convert_msra_caffe

# Everything a pickle of numpy arrays, lists and dicts needs; anything else (e.g. os.system) is refused.
_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),
}


class _ArraysOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays are expected")
        return super().find_class(module, name)


def read_arrays(path: Path) -> dict[str, Any]:
    """Numpy arrays keyed by Caffe layer name from a ``.npz`` or ``.pkl`` file, never executing pickled code."""
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    with open(path, "rb") as f:
        try:
            arrays = _ArraysOnlyUnpickler(f, encoding="latin1").load()  # latin1: Python 2 era pickles
        except pickle.UnpicklingError as e:
            raise SystemExit(f"{path}: {e}") from e
    if isinstance(arrays, dict) and isinstance(arrays.get("blobs"), dict):  # {"blobs": {...}} wrappers
        arrays = arrays["blobs"]
    if not isinstance(arrays, dict):
        raise SystemExit(f"{path}: expected a dict of numpy arrays keyed by Caffe layer name")
    return arrays


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, required=True, help=".npz or .pkl of Caffe blobs")
    parser.add_argument("--depth", type=int, choices=(50, 101, 152), required=True)
    parser.add_argument("--output", type=Path, required=True, help="toolkit checkpoint to write (.pth)")
    args = parser.parse_args(argv)

    state = convert_msra_caffe(read_arrays(args.input), args.depth)
    # Loading strictly into the target architecture proves every key and shape before anything is written.
    load_weights(build_resnet(args.depth, style="msra"), state)
    config = {"arch": f"resnet{args.depth}", "style": "msra", "source": str(args.input)}
    path = save_checkpoint(args.output, {"model": state, "config": config})
    print(f"wrote {path}: {len(state)} tensors for build_resnet({args.depth}, style='msra')")
    return path


if __name__ == "__main__":
    main()
