"""resdet detection: Faster R-CNN on the ResNet C4 split (the ResNet paper, Appendix A–C)."""

from detection import _moved
from detection.build import build_detector, build_test_detector, load_backbone_weights, load_detector
from detection.config import Config, ConfigError, load_config
from detection.fast.optimize import optimize_for_inference, optimize_for_training
from detection.modeling.faster_rcnn import FasterRCNN

_moved.install()  # the module paths from before the layout by role (detection.model, detection.optimize, …)

__all__ = [
    "Config",
    "ConfigError",
    "FasterRCNN",
    "Predictor",
    "build_detector",
    "build_test_detector",
    "load_backbone_weights",
    "load_config",
    "load_detector",
    "optimize_for_inference",
    "optimize_for_training",
]


def __getattr__(name: str) -> object:
    # Predictor pulls in the data and engine stacks; load it on first use so ``import detection`` stays light.
    if name == "Predictor":
        from detection.deploy.predictor import Predictor

        return Predictor
    raise AttributeError(f"module 'detection' has no attribute {name!r}")
