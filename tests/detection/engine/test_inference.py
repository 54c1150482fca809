"""``run_inference`` edge cases."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from detection.build import build_detector
from detection.data import build_dataset, build_transforms
from detection.engine.inference import run_inference


def test_an_image_without_proposals_gives_empty_detections(shapes_root: Path, tiny_config: Any) -> None:
    cfg = tiny_config("model.rpn.min_box_size=100000")  # every proposal is "too small": none survive
    dataset = build_dataset("shapes", shapes_root, "val", build_transforms(train=False))
    torch.manual_seed(0)
    predictions = run_inference(build_detector(cfg), dataset, device=torch.device("cpu"), progress=False)
    assert len(predictions.outputs) == len(dataset)
    for output in predictions.outputs:
        assert output["boxes"].shape == (0, 4) and len(output["scores"]) == len(output["labels"]) == 0


class WholeImage(torch.nn.Module):
    """Detects each input image whole: the box says which pixels the model was given."""

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        return [{"boxes": torch.tensor([[0.0, 0.0, float(i.shape[-1]), float(i.shape[-2])]]),
                 "scores": torch.ones(1), "labels": torch.ones(1, dtype=torch.int64)} for i in images]


def test_images_decoded_at_reduced_size_are_scored_in_their_original_pixels(shapes_root: Path) -> None:
    """Files over ``max_side`` are decoded smaller; result files and metrics must still be in the file's pixels
    (COCO's ground truth is), or every box of a panorama comes out at half scale."""
    full = build_dataset("shapes", shapes_root, "val", build_transforms(train=False))
    reduced = build_dataset("shapes", shapes_root, "val", build_transforms(train=False))
    for part in getattr(reduced, "datasets", [reduced]):
        part.max_side = 40
    assert reduced[0][0].shape[-2:] != full[0][0].shape[-2:]  # really decoded smaller
    predictions = run_inference(WholeImage(), reduced, device=torch.device("cpu"), progress=False)
    for index, (target, output) in enumerate(zip(predictions.targets, predictions.outputs)):
        height, width = target["orig_size"]
        torch.testing.assert_close(output["boxes"], torch.tensor([[0.0, 0.0, float(width), float(height)]]))
        torch.testing.assert_close(target["boxes"], full[index][1]["boxes"], atol=0.05, rtol=0)


class FailsOnWidth(WholeImage):
    """WholeImage, raising (as a model does on an odd image) whenever a given width is in the batch."""

    def __init__(self, widths: set[int]) -> None:
        super().__init__()
        self.widths = widths

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        if any(i.shape[-1] in self.widths for i in images):
            raise RuntimeError("injected failure")
        return super().forward(images)


def test_an_image_the_model_fails_on_is_named_and_the_rest_of_its_batch_kept(shapes_root: Path) -> None:
    import pytest

    from detection.engine.inference import ImageFailedError, image_name

    dataset = build_dataset("shapes", shapes_root, "val", build_transforms(train=False))
    widths = [dataset[i][0].shape[-1] for i in range(len(dataset))]
    odd = next(i for i, w in enumerate(widths) if widths.count(w) == 1)
    cpu = torch.device("cpu")
    for batch_size in (1, 2):  # in a batch of two, the other image is run again alone and kept
        predictions = run_inference(FailsOnWidth({widths[odd]}), dataset, device=cpu, batch_size=batch_size,
                                    progress=False)  # fmt: skip
        assert predictions.failed == [image_name(dataset, odd)] and image_name(dataset, odd).endswith(".jpg")
        assert len(predictions.outputs) == len(dataset) - 1 and predictions.skipped == 0
    with pytest.raises(ImageFailedError, match=f"^{image_name(dataset, odd)}: detection failed: injected failure$"):
        run_inference(FailsOnWidth({widths[odd]}), dataset, device=cpu, progress=False, strict=True)
    with pytest.raises(ImageFailedError, match=f"failed on every image \\({len(dataset)}\\)"):
        run_inference(FailsOnWidth(set(widths)), dataset, device=cpu, progress=False)
