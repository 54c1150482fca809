"""Testing protocols: 10-crop and fully-convolutional scores equal the same averages computed by hand."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from backbones.classify import (
    build_classifier,
    collate_single,
    evaluate,
    fullconv_scores,
    score_map,
    tencrop_scores,
    topk_correct,
)
from backbones.data import ImageFolderDataset, MultiScaleView, Normalizer, TenCropView

W = np.array([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0], [-1.5, 0.5, 2.0], [2.0, 1.0, 1.0]])  # [K=4, C=3]
B = np.array([0.1, -0.2, 0.3, 0.0])


class ToyNet(nn.Module):
    """Features = 4x4 average pooling of the input; logits = fc(global mean of the features)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 4)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor(W))
            self.fc.bias.copy_(torch.tensor(B))

    def forward_features(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(x, 4)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.forward_features(x).mean((2, 3)))


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


def test_topk_correct_by_hand() -> None:
    scores = torch.tensor([[0.1, 0.5, 0.2, 0.0, 0.05, 0.15], [0.3, 0.1, 0.2, 0.25, 0.05, 0.1]])
    assert topk_correct(scores, torch.tensor([1, 4]), (1, 5)) == [1, 1]
    assert topk_correct(scores, torch.tensor([2, 0]), (1, 5)) == [1, 2]
    assert topk_correct(scores[:, :3], torch.tensor([0, 1]), (1, 5)) == [0, 2]  # k capped at K


def test_ten_crop_view_is_corners_centre_and_flips() -> None:
    img = np.random.default_rng(0).integers(0, 256, (12, 16, 3), dtype=np.uint8)
    crops = TenCropView(crop=8, resize=12)(img).numpy().transpose(0, 2, 3, 1)
    flipped = img[:, ::-1]
    expected = [img[:8, :8], img[:8, -8:], img[-8:, :8], img[-8:, -8:], img[2:10, 4:12]]
    expected += [flipped[:8, :8], flipped[:8, -8:], flipped[-8:, :8], flipped[-8:, -8:], flipped[2:10, 4:12]]
    for got, want in zip(crops, expected):
        np.testing.assert_array_equal(got, want)


def test_tencrop_scores_average_softmax_by_hand() -> None:
    crops = torch.rand(2, 10, 3, 8, 8)
    with torch.no_grad():
        got = tencrop_scores(ToyNet(), crops)
    for b in range(2):
        probs = [softmax(W @ crops[b, v].double().mean((1, 2)).numpy() + B) for v in range(10)]
        np.testing.assert_allclose(got[b].numpy(), np.mean(probs, 0), rtol=1e-5, atol=1e-6)


def test_fullconv_scores_by_hand() -> None:
    img = np.random.default_rng(1).integers(0, 256, (24, 36, 3), dtype=np.uint8)
    views = MultiScaleView((8, 16, 24), flip=True)(img)
    with torch.no_grad():
        got = fullconv_scores(ToyNet(), [v[None].float() / 255 for v in views])
    probs = []
    for v in views:
        x = v.double().numpy() / 255  # [3, h, w]
        c, h, w = x.shape
        pooled = x.reshape(c, h // 4, 4, w // 4, 4).mean((2, 4))  # the conv5 map, [3, h/4, w/4]
        logit_map = np.einsum("kc,chw->khw", W, pooled) + B[:, None, None]  # fc as a 1x1 conv
        probs.append(softmax(logit_map.mean((1, 2))))  # spatial average, then softmax
    np.testing.assert_allclose(got[0].numpy(), np.mean(probs, 0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("arch", ["resnet18", "cifar_resnet20"])
def test_fc_as_conv_equals_global_pool_then_fc(arch: str) -> None:
    torch.manual_seed(0)
    model = build_classifier(arch, num_classes=5, base_width=16).eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        assert score_map(model, x).shape[:2] == (2, 5)
        torch.testing.assert_close(score_map(model, x).mean((2, 3)), model(x), rtol=1e-4, atol=1e-5)


def test_build_classifier_names() -> None:
    assert build_classifier("resnet18", num_classes=7, base_width=16).fc.out_features == 7
    assert build_classifier("cifar_resnet20", num_classes=10).depth == 20
    with pytest.raises(ValueError, match="unknown arch"):
        build_classifier("vgg16", num_classes=10)


def test_evaluate_modes_match_hand_computation(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    for wnid in ("a", "b", "c", "d"):
        (tmp_path / wnid).mkdir()
        for i in range(2):
            cv2.imwrite(str(tmp_path / wnid / f"{i}.png"), rng.integers(0, 256, (20, 28, 3), dtype=np.uint8))
    norm = Normalizer([0.5, 0.5, 0.5], [0.25, 0.25, 0.25])
    model = ToyNet()
    for mode, view in (("10crop", TenCropView(8, 16)), ("fullconv", MultiScaleView((12, 16)))):
        ds = ImageFolderDataset(tmp_path, view)
        fullconv = mode == "fullconv"
        loader = DataLoader(ds, batch_size=1 if fullconv else 3, collate_fn=collate_single if fullconv else None)
        result = evaluate(model, loader, norm, mode)
        hits1 = hits5 = 0
        for i in range(len(ds)):
            views, label = ds[i]
            xs = [norm(v[None]) for v in views]
            with torch.no_grad():
                probs = torch.stack([model(x)[0].softmax(-1) for x in xs]).mean(0)
            order = probs.argsort(descending=True).tolist()
            hits1 += order[0] == label
            hits5 += label in order[:5]
        assert result["num_images"] == 8
        assert result["top1_error"] == pytest.approx(100 * (1 - hits1 / 8))
        assert result["top5_error"] == pytest.approx(100 * (1 - hits5 / 8))
