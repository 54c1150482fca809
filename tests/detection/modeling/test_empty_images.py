"""Background-only images (``data.keep_empty``) in training: an image without ground-truth boxes gives RPN and RoI
negatives only, and the losses and gradients stay finite (the tiny model of tests/tiny_det.yaml)."""

from __future__ import annotations

from pathlib import Path

import torch

from detection import build_detector, load_config

TINY_CONFIG = Path(__file__).resolve().parents[2] / "tiny_det.yaml"
EMPTY = {"boxes": torch.zeros((0, 4)), "labels": torch.zeros(0, dtype=torch.int64)}


def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_detector(load_config(TINY_CONFIG)).train()


def test_a_batch_with_an_empty_image_trains_with_finite_losses_and_gradients() -> None:
    model = tiny_model()
    images = [torch.rand(3, 64, 80), torch.rand(3, 72, 64)]
    targets = [{"boxes": torch.tensor([[4.0, 6.0, 40.0, 50.0]]), "labels": torch.tensor([1])}, EMPTY]
    losses = model(images, targets)
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_rpn_box"] > 0 and losses["loss_box"] > 0  # the other image still has its positives
    sum(losses.values()).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_an_empty_image_contributes_negatives_only() -> None:
    model = tiny_model()
    losses = model([torch.rand(3, 64, 80)], [EMPTY])
    assert losses["loss_rpn_box"] == 0 and losses["loss_box"] == 0  # no positive anchor or RoI to regress
    assert losses["loss_rpn_cls"] > 0 and losses["loss_cls"] > 0  # its negatives are still classified
    sum(losses.values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    proposals = [torch.tensor([[0.0, 0.0, 20.0, 20.0], [10.0, 5.0, 60.0, 40.0], [30.0, 30.0, 64.0, 64.0]])]
    rois, labels, regression = model.roi_heads.sample_proposals(proposals, [EMPTY])
    assert len(rois[0]) == 3 and labels.tolist() == [0, 0, 0] and not regression.any()
