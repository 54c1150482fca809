"""resdet detection: Faster R-CNN on the ResNet C4 split (the ResNet paper, Appendix A–C)."""

from detection.build import build_detector, build_test_detector, load_backbone_weights
from detection.config import Config, ConfigError, load_config
from detection.model import FasterRCNN

__all__ = [
    "Config",
    "ConfigError",
    "FasterRCNN",
    "Predictor",
    "build_detector",
    "build_test_detector",
    "load_backbone_weights",
    "load_config",
]


def __getattr__(name: str) -> object:
    # Predictor pulls in the data and engine stacks; load it on first use so ``import detection`` stays light.
    if name == "Predictor":
        from detection.predictor import Predictor

        return Predictor
    raise AttributeError(f"module 'detection' has no attribute {name!r}")
