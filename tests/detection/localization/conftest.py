"""A tiny generated CLS-LOC root (3 classes, 4 training images each, 6 held-out), made once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from detection.localization.data import generate_cls_loc


@pytest.fixture(scope="session")
def cls_loc_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_cls_loc(tmp_path_factory.mktemp("cls_loc") / "root", num_classes=3, train_per_class=4,
                            num_val=6, min_size=64, max_size=96)  # fmt: skip
