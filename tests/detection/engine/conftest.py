"""Tiny generated data and tiny configs for the training-engine tests (a ResNet-18 C4 of width 8 at 64–96 px)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from detection.config import Config, load_config
from detection.data import build_dataset, build_transforms
from detection.data.shapes import generate_shapes

TINY_CONFIG = Path(__file__).resolve().parents[2] / "tiny_det.yaml"


def tiny_config(*overrides: str) -> Config:
    return load_config(TINY_CONFIG, list(overrides))


@pytest.fixture(name="tiny_config")
def tiny_config_fixture() -> Callable[..., Config]:
    """``tiny_config(*overrides)``: the tiny test config with further ``key=value`` overrides."""
    return tiny_config


@pytest.fixture(scope="session")
def shapes_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 training and 4 validation shapes images of 64–96 px in COCO layout."""
    root = tmp_path_factory.mktemp("shapes")
    generate_shapes(root, num_train=16, num_val=4, min_size=64, max_size=96)
    return root


@pytest.fixture
def shapes_train(shapes_root: Path) -> torch.utils.data.Dataset:
    cfg = tiny_config()
    transforms = build_transforms(train=True, min_sizes=tuple(cfg.input.train_min_sizes), max_size=96)
    return build_dataset("shapes", shapes_root, "train", transforms, train=True)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # Two shared cores: PyTorch's thread pool collapses when another process is busy (10–40× measured).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
