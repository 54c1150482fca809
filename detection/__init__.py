"""resdet detection: Faster R-CNN on the ResNet C4 split (the ResNet paper, Appendix A–C)."""

from detection.build import build_detector, build_test_detector, load_backbone_weights
from detection.config import Config, ConfigError, load_config
from detection.model import FasterRCNN

__all__ = [
    "Config",
    "ConfigError",
    "FasterRCNN",
    "build_detector",
    "build_test_detector",
    "load_backbone_weights",
    "load_config",
]
