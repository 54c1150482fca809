"""One training step of the tiny detector, for the DDP-equivalence test (test_ddp.py).

    torchrun --standalone --nproc_per_node=2 ddp_step_worker.py OUT_FILE

Each rank takes one image of the two-image batch from :func:`make_batch` and does one ``Trainer.step`` under
DistributedDataParallel (gloo); rank 0 saves the parameters and gradients after the step to ``OUT_FILE``. The test
imports this file for :func:`make_batch` / :func:`make_trainer` and takes the same step on both images in one
process.

Sampling is made deterministic by letting every candidate through: the RPN and RoI batch sizes exceed the number
of anchors and proposals per image and the positive fraction is 1, so both runs train on exactly the same anchors
and RoIs; the losses' fixed normalisers (batch_size_per_image × images) then make the workers' mean gradient the
gradient of the combined batch.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from backbones import runtime
from detection.build import build_detector
from detection.config import Config, load_config
from detection.engine.trainer import Trainer

HEIGHT, WIDTH = 64, 96


def make_config() -> Config:
    return load_config(
        None,
        [
            "num_classes=3",
            "model.backbone.depth=18",
            "model.backbone.base_width=8",
            "model.backbone.weights=none",
            "model.backbone.freeze_at=1",
            f"input.train_min_sizes=[{HEIGHT}]",
            f"input.train_max_size={WIDTH}",
            "model.rpn.pre_nms_top_n_train=200",
            "model.rpn.post_nms_top_n_train=40",
            "model.rpn.batch_size_per_image=1024",  # > 4·6 positions × 15 anchors = 360 anchors per image
            "model.rpn.positive_fraction=1.0",
            "model.roi_heads.batch_size_per_image=64",  # > 40 proposals + ground truth per image
            "model.roi_heads.positive_fraction=1.0",
            "solver.ims_per_batch=2",
            "solver.base_lr=0.5",
            "solver.momentum=0.0",
            "solver.weight_decay=0.0",
            "solver.warmup_iters=0",
            "data.num_workers=0",
        ],
    )


def make_batch() -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """Two different images of the same size (so padding is the same alone or together), two objects each."""
    g = torch.Generator().manual_seed(7)
    images = [torch.rand(3, HEIGHT, WIDTH, generator=g) for _ in range(2)]
    targets = [
        {"boxes": torch.tensor([[4.0, 6.0, 40.0, 50.0], [50.0, 10.0, 90.0, 30.0]]), "labels": torch.tensor([1, 2])},
        {"boxes": torch.tensor([[20.0, 20.0, 60.0, 62.0], [0.0, 0.0, 30.0, 25.0]]), "labels": torch.tensor([3, 1])},
    ]
    return images, targets


class _TwoImages:
    """Just enough of a dataset for the Trainer's sampler; the test feeds batches to ``Trainer.step`` itself."""

    classes = ["a", "b", "c"]

    def __len__(self) -> int:
        return 2

    def image_info(self, index: int) -> dict[str, Any]:
        return {"height": HEIGHT, "width": WIDTH, "file_name": f"{index}.png", "image_id": index}


def make_trainer(output_dir: Path) -> Trainer:
    cfg = make_config()
    torch.manual_seed(0)
    model = build_detector(cfg)
    return Trainer(
        model=model, cfg=cfg, dataset=_TwoImages(), output_dir=output_dir, device=torch.device("cpu"),
        classes=_TwoImages.classes, progress=False,
    )  # fmt: skip


def trained_state(trainer: Trainer) -> dict[str, dict[str, torch.Tensor]]:
    named = list(trainer.model.named_parameters())
    return {
        "params": {k: p.detach().clone() for k, p in named},
        "grads": {k: p.grad.clone() for k, p in named if p.grad is not None},
    }


def main(out_file: Path) -> None:
    torch.set_num_threads(1)
    rank, world_size = runtime.init_distributed(torch.device("cpu"))
    assert world_size == 2, "run with torchrun --nproc_per_node=2"
    images, targets = make_batch()
    with tempfile.TemporaryDirectory() as scratch:
        trainer = make_trainer(Path(scratch))
        torch.manual_seed(rank)
        losses = trainer.step([images[rank]], [targets[rank]])
    assert losses is not None
    if rank == 0:
        torch.save(trained_state(trainer), out_file)
    runtime.cleanup()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
