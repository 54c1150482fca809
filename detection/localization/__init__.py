"""ImageNet localisation with the per-class RPN and the R-CNN stage (the paper's Appendix C, Table 13).

``data`` (CLS-LOC layout reader and generator) → ``model`` (per-class RPN, R-CNN stage) → ``engine`` (training both
stages) → ``inference`` (1-crop / dense views, per-class boxes, R-CNN rescoring) → ``predict`` (CSV files scored by
``detection/evaluation/imagenet_loc.py``). See docs/localization.md.
"""

from detection.localization.config import LocConfig, load_loc_config
from detection.localization.model import PerClassRPN, RCNNLocalizer

__all__ = ["LocConfig", "PerClassRPN", "RCNNLocalizer", "load_loc_config"]
