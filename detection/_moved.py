"""Module paths from before the layout by role (2026-12): ``detection.model``, ``detection.optimize``,
``detection.ensemble``, … still import, as aliases of their new homes, with a ``DeprecationWarning`` naming the new
path. Nothing inside the toolkit uses them (tests/test_layout.py)."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from types import ModuleType

MOVED = {
    "detection.model": "detection.modeling.faster_rcnn",
    "detection.rpn": "detection.modeling.rpn",
    "detection.anchors": "detection.modeling.anchors",
    "detection.roi_heads": "detection.modeling.roi_heads",
    "detection.box_head": "detection.modeling.box_head",
    "detection.pooling": "detection.modeling.pooling",
    "detection.postprocess": "detection.modeling.postprocess",
    "detection.boxes": "detection.modeling.boxes",
    "detection.sampling": "detection.modeling.sampling",
    "detection.optimize": "detection.fast.optimize",
    "detection.factored_head": "detection.fast.factored_head",
    "detection.commuted_head": "detection.fast.commuted_head",
    "detection.separable_align": "detection.fast.separable_align",
    "detection.multiscale": "detection.testtime.pyramid",
    "detection.ensemble": "detection.testtime.ensemble",
    "detection.predictor": "detection.deploy.predictor",
    "detection.export": "detection.deploy.export",
    "detection.visualize": "detection.deploy.visualize",
    "detection.model_zoo": "detection.weights.detectron2",
    "detection.transfer": "detection.weights.transfer",
}


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, new: str) -> None:
        self.new = new

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        warnings.warn(f"{spec.name} moved to {self.new}; import it from there", DeprecationWarning, stacklevel=2)
        return importlib.import_module(self.new)

    def exec_module(self, module: ModuleType) -> None:
        pass  # the new module is already executed


class MovedModuleFinder(importlib.abc.MetaPathFinder):
    """Finds each old path in :data:`MOVED` and hands back the module at its new path (the same object)."""

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        new = MOVED.get(fullname)
        if new is None:
            return None
        return importlib.util.spec_from_loader(fullname, _AliasLoader(new))


def install() -> None:
    if not any(isinstance(f, MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.append(MovedModuleFinder())
