"""Every shipped config builds and trains: one SGD step on tiny inputs with the config's own depth, anchors,
sampling and solver, only the width (base_width 8), the input size (64–96 px) and the weights (none) shrunk.

(No inference here: a randomly initialised deep trunk at these sizes often yields no proposals at all, which is
tested on its own in test_inference.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from detection.build import build_detector
from detection.config import load_config
from detection.engine.trainer import Trainer

# Detector configs; configs/imagenet_loc/ holds the localiser's (detection/localization/config.py, its own tests).
CONFIGS = sorted(p for p in (Path(__file__).resolve().parents[3] / "configs").rglob("*.yaml")
                 if p.parent.name != "imagenet_loc")
SHRINK = [
    "model.backbone.base_width=8",
    "model.backbone.weights=none",
    "input.train_min_sizes=[64]",
    "input.train_max_size=96",
    "input.test_min_size=64",
    "input.test_max_size=96",
    "data.num_workers=0",
]


class _Images:
    """Just enough of a dataset for the Trainer's sampler; batches are handed to ``Trainer.step`` directly."""

    def __init__(self, classes: list[str]) -> None:
        self.classes = classes

    def __len__(self) -> int:
        return 2

    def image_info(self, index: int) -> dict[str, int | str]:
        return {"height": 64, "width": 96, "file_name": f"{index}.jpg", "image_id": index}


def test_every_family_is_covered() -> None:
    families = {p.parent.name if p.parent.name != "configs" else p.stem for p in CONFIGS}
    assert {"coco", "voc", "imagenet_det", "quickstart"} <= families


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_one_train_step(path: Path, tmp_path: Path) -> None:
    cfg = load_config(path, SHRINK)
    k = cfg.num_classes
    torch.manual_seed(0)
    model = build_detector(cfg)
    trainer = Trainer(
        model=model, cfg=cfg, dataset=_Images([f"class{i}" for i in range(k)]), output_dir=tmp_path,
        device=torch.device("cpu"), classes=[f"class{i}" for i in range(k)], progress=False,
    )  # fmt: skip
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 64, 96, generator=g), torch.rand(3, 64, 80, generator=g)]
    targets = [
        {"boxes": torch.tensor([[4.0, 6.0, 40.0, 50.0], [50.0, 10.0, 90.0, 60.0]]), "labels": torch.tensor([1, k])},
        {"boxes": torch.tensor([[10.0, 8.0, 70.0, 60.0]]), "labels": torch.tensor([k // 2 + 1])},
    ]
    before = {name: p.detach().clone() for name, p in model.named_parameters()}

    losses = trainer.step(images, targets)

    assert losses is not None
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_box", "loss_cls", "loss_box", "loss"}
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    assert losses["loss_cls"] > 0 and losses["loss_rpn_cls"] > 0
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    # conv5_x is roi_heads.box_head.head, or roi_heads.box_head.box_head.head inside the global-context wrapper
    for part in ("rpn.head.", "trunk.body.layer3.", "roi_heads.box_head.", "roi_heads.predictor.cls_score"):
        assert any(name.startswith(part) for name in changed), f"{part} did not learn"
    assert not any(name.startswith("trunk.body.conv1.") for name in changed)  # frozen at every freeze_at ≥ 1
