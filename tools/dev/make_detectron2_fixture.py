#!/usr/bin/env python
"""Write the detectron2 oracle fixture that tests/detection/weights/test_detectron2.py checks this toolkit against.

Run by hand, with a detectron2 source checkout and its pure-Python dependencies (fvcore, iopath, omegaconf,
hydra-core, yacs, termcolor, tabulate, cloudpickle, pycocotools); no compiled extension is needed for the C4 model
on the CPU. The project itself never imports detectron2 and CI never runs this script::

    pip install fvcore iopath omegaconf hydra-core yacs termcolor tabulate cloudpickle
    PYTHONPATH=/path/to/detectron2 python tools/dev/make_detectron2_fixture.py --detectron2 /path/to/detectron2 \
        --output-dir tests/detection/weights/fixtures/detectron2_r50_c4

What it does: builds detectron2's own Faster R-CNN R50-C4 (configs/COCO-Detection/faster_rcnn_R_50_C4_1x.yaml)
at a reduced width (``--width``, so the weights stay ~1 MB) with ``--num-classes`` classes; fills it with fixed-seed
random weights whose frozen-BN statistics are calibrated on the images (so activations stay in a sane range and
every stage matters); saves them as a model-zoo ``.pkl`` (``{"model": {name: ndarray}, "__author__": ...}``) and
loads that file back through detectron2's ``DetectionCheckpointer``; then runs detectron2 on a few generated images
and saves its proposals (boxes, objectness logits), detections (boxes, scores, 0-based classes) and, in training
mode on fixed targets, its four losses, to ``outputs.npz``.

The pre-/post-NMS proposal counts are lowered (``--pre-nms``, ``--post-nms``) so that both cut-offs bind on
small images; the image sizes are multiples of 32 and each image runs alone, so no padding or resizing is involved
(detectron2 pads nothing for C4, ``input.size_divisible=1``).

Then the whole test path, ``outputs_resized.npz``: detectron2's ``DefaultPredictor`` steps (``ResizeShortestEdge``
to a small test scale, ``--test-min-size`` / ``--test-max-size``, on the ``uint8`` image; the model; and
``detector_postprocess``: boxes scaled back to the original image, clipped, empty ones dropped after the top 100)
on images that get enlarged, shrunk (one with a side that lands on .5) and capped by the longer side, with
``model_final.pkl``'s weights but a few classes' box regressors shifted right (:func:`border_weights`, which the
test applies too), so that boxes near the right border collapse when clipped and detectron2 keeps fewer than 100
detections.

Without detectron2 (``--semantics``), only ``outputs_resized.npz`` is written, from
detectron2's *documented* test-path semantics written out here (:func:`d2_output_shape`, :func:`d2_resize`,
:func:`d2_postprocess`) around this toolkit's converted network, which ``outputs.npz`` proves equal to
detectron2's at the test scale. The file records which (``source``: "detectron2" or "semantics"); regenerate with
detectron2 whenever it is available.
"""

from __future__ import annotations

import argparse
import pickle
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

IMAGE_SIZES = ((128, 160), (160, 128), (128, 128))  # (H, W), one detectron2 call each
# Test scale 128 / 200: enlarged (96 × 120 → 128 × 160), shrunk with a .5 side (256 × 301 → 128 × 150.5: int(x + 0.5)
# gives 151, round() 150), capped by the longer side (60 × 160 → 75 × 200).
RESIZED_SIZES = ((96, 120), (256, 301), (60, 160))
BORDER_CLASSES, BORDER_SHIFT = (0, 1, 2, 3, 4), 15.0  # dx bias (÷ 10: 1.5 box widths to the right)


def generated_image(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """An RGB uint8 ``[H, W, 3]`` image of a smooth background and a few coloured rectangles; their boxes
    ``[N, 4]`` xyxy (used as training targets)."""
    yy, xx = np.mgrid[0:height, 0:width]
    base = rng.uniform(40, 200, size=3)
    image = base + 30 * np.sin(xx[..., None] / rng.uniform(8, 30) + rng.uniform(0, 6, size=3))
    boxes = []
    for _ in range(rng.integers(2, 5)):
        w, h = rng.integers(16, width // 2), rng.integers(16, height // 2)
        x0, y0 = rng.integers(0, width - w), rng.integers(0, height - h)
        image[y0 : y0 + h, x0 : x0 + w] = rng.uniform(0, 255, size=3)
        boxes.append([x0, y0, x0 + w, y0 + h])
    image += rng.normal(0, 6, size=image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), np.asarray(boxes, dtype=np.float32)


def build_cfg(args: argparse.Namespace):  # -> detectron2 CfgNode
    from detectron2.config import get_cfg

    cfg = get_cfg()
    cfg.merge_from_file(str(args.detectron2 / "configs" / "COCO-Detection" / "faster_rcnn_R_50_C4_1x.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.RESNETS.STEM_OUT_CHANNELS = args.width
    cfg.MODEL.RESNETS.WIDTH_PER_GROUP = args.width
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 4 * args.width
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = args.num_classes
    cfg.MODEL.RPN.PRE_NMS_TOPK_TEST = args.pre_nms
    cfg.MODEL.RPN.POST_NMS_TOPK_TEST = args.post_nms
    cfg.MODEL.RPN.BATCH_SIZE_PER_IMAGE = args.train_batch
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = args.train_batch
    return cfg


@torch.no_grad()
def randomize(model: torch.nn.Module, images: list[torch.Tensor], seed: int) -> None:
    """Fixed-seed weights with frozen-BN statistics calibrated on ``images``, heads scaled to spread outputs."""
    from detectron2.layers import FrozenBatchNorm2d

    torch.manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            fan_in = module.weight[0].numel()
            module.weight.normal_(0, (2.0 / fan_in) ** 0.5)
            if module.bias is not None:
                module.bias.normal_(0, 0.1)
        elif isinstance(module, torch.nn.Linear):
            module.weight.normal_(0, module.in_features**-0.5)
            module.bias.normal_(0, 0.1)
        elif isinstance(module, FrozenBatchNorm2d):
            module.weight.uniform_(0.5, 1.2)
            module.bias.normal_(0, 0.2)

    # Each frozen BN's statistics are set, just before it runs, from its input on the images, then jittered.
    def calibrate(module: FrozenBatchNorm2d, inputs: tuple[torch.Tensor]) -> None:
        x = inputs[0]
        module.running_mean.copy_(x.mean(dim=(0, 2, 3)) + 0.05 * torch.randn(x.shape[1]) * x.std())
        module.running_var.copy_(x.var(dim=(0, 2, 3)) * torch.empty(x.shape[1]).uniform_(0.8, 1.25) + 1e-3)

    hooks = [m.register_forward_pre_hook(calibrate) for m in model.modules() if isinstance(m, FrozenBatchNorm2d)]
    model.eval()
    for image in images:  # res5's statistics come from the last image's RoIs; good enough
        model([{"image": image}])
    for hook in hooks:
        hook.remove()

    # Spread the heads' outputs: objectness logits ~ N(0, 2), RPN deltas ~ N(0, 0.15), class logits ~ N(0, 2.5),
    # box deltas ~ N(0, 1) (÷ weights 10, 10, 5, 5), measured on the images.
    rpn_head = model.proposal_generator.rpn_head
    predictor = model.roi_heads.box_predictor
    seen: dict[str, torch.Tensor] = {}
    grabs = [
        rpn_head.objectness_logits.register_forward_hook(lambda m, i, o: seen.__setitem__("obj", o)),
        rpn_head.anchor_deltas.register_forward_hook(lambda m, i, o: seen.__setitem__("rpn", o)),
        predictor.cls_score.register_forward_hook(lambda m, i, o: seen.__setitem__("cls", o)),
        predictor.bbox_pred.register_forward_hook(lambda m, i, o: seen.__setitem__("box", o)),
    ]
    model([{"image": images[0]}])
    for hook in grabs:
        hook.remove()
    for layer, key, target in (
        (rpn_head.objectness_logits, "obj", 2.0),
        (rpn_head.anchor_deltas, "rpn", 0.15),
        (predictor.cls_score, "cls", 2.5),
        (predictor.bbox_pred, "box", 1.0),
    ):
        factor = target / seen[key].std().item()
        layer.weight.mul_(factor)
        layer.bias.mul_(factor)


def save_model_zoo_pickle(model: torch.nn.Module, path: Path) -> None:
    """detectron2's model-zoo layout: ``{"model": {name: float32 ndarray}, "__author__": ...}``."""
    weights = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    with open(path, "wb") as f:
        pickle.dump({"model": weights, "__author__": "resdet fixture (detectron2 R50-C4, random)"}, f, protocol=4)


@torch.no_grad()
def run_inference(model: torch.nn.Module, image: torch.Tensor) -> dict[str, np.ndarray]:
    """detectron2's ``GeneralizedRCNN.inference`` step by step, keeping the proposals."""
    batched = [{"image": image}]
    images = model.preprocess_image(batched)
    features = model.backbone(images.tensor)
    proposals, _ = model.proposal_generator(images, features, None)
    results, _ = model.roi_heads(images, features, proposals, None)
    (final,) = model._postprocess(results, batched, images.image_sizes)
    inst = final["instances"]
    return {
        "proposals": proposals[0].proposal_boxes.tensor.numpy(),
        "objectness": proposals[0].objectness_logits.numpy(),
        "boxes": inst.pred_boxes.tensor.numpy(),
        "scores": inst.scores.numpy(),
        "classes": inst.pred_classes.numpy(),
    }


def run_training_losses(
    model: torch.nn.Module, images: list[torch.Tensor], boxes: list[np.ndarray], classes: list[np.ndarray]
) -> dict[str, np.ndarray]:
    """detectron2's four losses on one batch of all images, with sampling that keeps every candidate (the RPN's
    and the RoI head's per-image batch sizes exceed the anchors and the proposals), so no random draw matters.
    Also the number of RoIs the box head saw (detectron2 divides its two losses by it)."""
    from detectron2.structures import Boxes, Instances
    from detectron2.utils.events import EventStorage

    batched = []
    for image, b, c in zip(images, boxes, classes):
        instances = Instances(tuple(image.shape[-2:]), gt_boxes=Boxes(torch.from_numpy(b)),
                              gt_classes=torch.from_numpy(c))
        batched.append({"image": image, "instances": instances})
    model.train()
    with EventStorage(), torch.no_grad():
        losses = model(batched)
        images_list = model.preprocess_image(batched)
        gt = [x["instances"] for x in batched]
        proposals, _ = model.proposal_generator(images_list, model.backbone(images_list.tensor), gt)
        sampled = model.roi_heads.label_and_sample_proposals(proposals, gt)
    model.eval()
    out = {k: np.array(v.item(), dtype=np.float64) for k, v in losses.items()}
    out["train_num_rois"] = np.array(sum(len(x) for x in sampled))
    return out


def border_weights(source: Path, target: Path) -> None:
    """``model_border.pkl``: the model-zoo pickle ``source`` with ``BORDER_CLASSES``' dx bias raised by
    ``BORDER_SHIFT`` (detectron2's ``bbox_pred`` rows are 4 per class, dx first, no background rows)."""
    from backbones.checkpoint import load_array_pickle  # never runs pickled code

    zoo = load_array_pickle(source)
    bias = zoo["model"]["roi_heads.box_predictor.bbox_pred.bias"].copy()
    for c in BORDER_CLASSES:
        bias[4 * c] += BORDER_SHIFT
    zoo["model"]["roi_heads.box_predictor.bbox_pred.bias"] = bias
    with open(target, "wb") as f:
        pickle.dump(zoo, f, protocol=4)


@torch.no_grad()
def run_detectron2_test_path(model: torch.nn.Module, cfg, rgb: np.ndarray) -> dict[str, np.ndarray]:
    """detectron2's ``DefaultPredictor.__call__`` on an RGB ``uint8`` image (BGR input format), keeping the number
    of detections before ``detector_postprocess`` dropped the empty ones."""
    from detectron2.data import transforms as T

    aug = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST], cfg.INPUT.MAX_SIZE_TEST)
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    image = aug.get_transform(bgr).apply_image(bgr)
    inputs = [{"image": torch.as_tensor(image.astype("float32").transpose(2, 0, 1)),
               "height": rgb.shape[0], "width": rgb.shape[1]}]
    (raw,) = model.inference(inputs, do_postprocess=False)
    (final,) = model.inference(inputs)
    inst = final["instances"]
    return {"resized_size": np.array(image.shape[:2]), "raw_count": np.array(len(raw)),
            "boxes": inst.pred_boxes.tensor.numpy(), "scores": inst.scores.numpy(),
            "classes": inst.pred_classes.numpy()}


def d2_output_shape(height: int, width: int, short: int, max_size: int) -> tuple[int, int]:
    """detectron2's ``ResizeShortestEdge.get_output_shape``, as documented in its source."""
    size = short * 1.0
    scale = size / min(height, width)
    newh, neww = (size, scale * width) if height < width else (scale * height, size)
    if max(newh, neww) > max_size:
        scale = max_size * 1.0 / max(newh, neww)
        newh, neww = newh * scale, neww * scale
    return int(newh + 0.5), int(neww + 0.5)


def d2_resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """detectron2's ``ResizeTransform.apply_image`` on ``uint8``: PIL ``resize((w, h), BILINEAR)``."""
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR))


def d2_postprocess(
    boxes: torch.Tensor, resized: tuple[int, int], original: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """detectron2's ``detector_postprocess`` on boxes: ``Boxes.scale(W / w, H / h)``, ``Boxes.clip((H, W))``;
    returns the boxes and the mask of ``Boxes.nonempty()`` (width and height > 0)."""
    (h, w), (oh, ow) = resized, original
    boxes = boxes.clone()
    boxes[:, 0::2] *= ow / w
    boxes[:, 1::2] *= oh / h
    x1, y1 = boxes[:, 0].clamp(min=0, max=ow), boxes[:, 1].clamp(min=0, max=oh)
    x2, y2 = boxes[:, 2].clamp(min=0, max=ow), boxes[:, 3].clamp(min=0, max=oh)
    boxes = torch.stack((x1, y1, x2, y2), dim=-1)
    return boxes, (boxes[:, 2] - boxes[:, 0] > 0) & (boxes[:, 3] - boxes[:, 1] > 0)


@torch.no_grad()
def run_semantics_test_path(weights: Path, args: argparse.Namespace, rgb: np.ndarray) -> dict[str, np.ndarray]:
    """The same outputs without detectron2: its documented resize and post-processing (above) around this
    toolkit's converted network, run at the resized image's own scale (no resize inside the model) with no
    degenerate-box removal before NMS, as detectron2's ``fast_rcnn_inference`` (score threshold, per-class NMS,
    top 100)."""
    from detection.weights.detectron2 import CONFIGS, convert_detectron2_file

    height, width = d2_output_shape(rgb.shape[0], rgb.shape[1], args.test_min_size, args.test_max_size)
    resized = d2_resize(np.ascontiguousarray(rgb[:, :, ::-1]), height, width)[:, :, ::-1]  # BGR as detectron2
    overrides = [f"model.backbone.base_width={args.width}", f"num_classes={args.num_classes}",
                 f"model.rpn.pre_nms_top_n_test={args.pre_nms}", f"model.rpn.post_nms_top_n_test={args.post_nms}",
                 f"input.test_min_size={min(height, width)}", "input.test_max_size=100000",
                 "input.resize_mode=float", "model.roi_heads.empty_boxes=after_top_k"]
    converted = convert_detectron2_file(weights, CONFIGS / "faster_rcnn_R_50_C4_1x.yaml", overrides)
    from detection.build import build_detector

    model = build_detector(converted.cfg)
    model.load_state_dict(converted.state)
    model.eval()
    opened = model.propose([torch.from_numpy(resized.copy()).permute(2, 0, 1).float() / 255])
    assert opened.batch.image_sizes == [(height, width)]  # not resized again inside the model
    (raw,), _ = model.roi_heads(opened.features, opened.proposals, opened.batch.image_sizes)
    boxes, nonempty = d2_postprocess(raw["boxes"], (height, width), rgb.shape[:2])
    return {"resized_size": np.array([height, width]), "raw_count": np.array(len(boxes)),
            "boxes": boxes[nonempty].numpy(), "scores": raw["scores"][nonempty].numpy(),
            "classes": (raw["labels"][nonempty] - 1).numpy()}


def write_resized_fixture(args: argparse.Namespace, run: Any, source: str) -> None:
    """``outputs_resized.npz``: ``run(rgb)`` (the detectron2 or the semantics test path) on generated images of
    ``RESIZED_SIZES``, with boxes and classes to annotate them (tools/test_det.py runs on them in the test)."""
    rng = np.random.default_rng(args.seed + 1)
    out: dict[str, np.ndarray] = {"source": np.array(source), "num_images": np.array(len(RESIZED_SIZES)),
                                  "test_min_size": np.array(args.test_min_size),
                                  "test_max_size": np.array(args.test_max_size),
                                  "pre_nms_topk": np.array(args.pre_nms), "post_nms_topk": np.array(args.post_nms)}
    for i, (h, w) in enumerate(RESIZED_SIZES):
        rgb, boxes = generated_image(rng, h, w)
        out[f"image_{i}"], out[f"gt_boxes_{i}"] = rgb, boxes  # annotations for the tools/test_det.py check
        for key, value in run(rgb).items():
            out[f"{key}_{i}"] = value
        print(f"image {i} {rgb.shape[:2]} → {tuple(out[f'resized_size_{i}'].tolist())}: {int(out[f'raw_count_{i}'])} "
              f"detections, {len(out[f'boxes_{i}'])} after dropping empty boxes")
    for i in range(len(RESIZED_SIZES)):
        out[f"gt_classes_{i}"] = rng.integers(0, args.num_classes, size=len(out[f"gt_boxes_{i}"]))
    np.savez_compressed(args.output_dir / "outputs_resized.npz", **out)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--detectron2", type=Path, help="detectron2 source checkout (holds configs/)")
    p.add_argument("--semantics", action="store_true", help="no detectron2: write only outputs_resized.npz, from "
                   "its documented test path around the converted model_final.pkl")
    p.add_argument("--test-min-size", type=int, default=128, help="the resized fixture's INPUT.MIN_SIZE_TEST")
    p.add_argument("--test-max-size", type=int, default=200, help="the resized fixture's INPUT.MAX_SIZE_TEST")
    p.add_argument("--output-dir", type=Path, default=Path("tests/detection/weights/fixtures/detectron2_r50_c4"))
    p.add_argument("--width", type=int, default=6, help="stem / res2 bottleneck width (64 in the real model)")
    p.add_argument("--num-classes", type=int, default=20)
    p.add_argument("--pre-nms", type=int, default=600)
    p.add_argument("--post-nms", type=int, default=150)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-batch", type=int, default=4096, help="RPN and RoI samples per image in the loss run "
                   "(more than every candidate, so sampling keeps all)")
    args = p.parse_args(argv)
    border = Path(tempfile.mkdtemp()) / "model_border.pkl"  # made from model_final.pkl again by the test
    if args.semantics:
        border_weights(args.output_dir / "model_final.pkl", border)
        write_resized_fixture(args, lambda rgb: run_semantics_test_path(border, args, rgb), "semantics")
        return
    if args.detectron2 is None:
        p.error("give --detectron2 (a source checkout), or --semantics")
    try:
        from detectron2.checkpoint import DetectionCheckpointer
    except ImportError:
        sys.exit(f"detectron2 does not import: run with PYTHONPATH={args.detectron2.resolve()} (its source checkout)")

    from detectron2.modeling import build_model

    rng = np.random.default_rng(args.seed)
    generated = [generated_image(rng, h, w) for h, w in IMAGE_SIZES]
    # detectron2 takes CHW float in its INPUT.FORMAT, BGR 0–255.
    d2_images = [torch.from_numpy(rgb[:, :, ::-1].copy()).permute(2, 0, 1).float() for rgb, _ in generated]

    cfg = build_cfg(args)
    model = build_model(cfg)
    randomize(model, d2_images, args.seed)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    weights = args.output_dir / "model_final.pkl"
    save_model_zoo_pickle(model, weights)

    # Reload through detectron2's own loader, so the fixture is a file detectron2 itself reads.
    model = build_model(cfg)
    DetectionCheckpointer(model).load(str(weights))
    model.eval()
    out: dict[str, np.ndarray] = {
        "width": np.array(args.width),
        "num_classes": np.array(args.num_classes),
        "pre_nms_topk": np.array(args.pre_nms),
        "post_nms_topk": np.array(args.post_nms),
        "num_images": np.array(len(generated)),
        "train_batch": np.array(args.train_batch),
    }
    for i, ((rgb, boxes), image) in enumerate(zip(generated, d2_images)):
        out[f"image_{i}"] = rgb
        out[f"gt_boxes_{i}"] = boxes
        for key, value in run_inference(model, image).items():
            out[f"{key}_{i}"] = value
        print(f"image {i} {rgb.shape[:2]}: {len(out[f'proposals_{i}'])} proposals, {len(out[f'boxes_{i}'])} "
              f"detections, classes {sorted(set(out[f'classes_{i}'].tolist()))[:10]}")
    gt_classes = [rng.integers(0, args.num_classes, size=len(boxes)) for _, boxes in generated]
    for i, c in enumerate(gt_classes):
        out[f"gt_classes_{i}"] = c  # detectron2's 0-based classes
    out.update(run_training_losses(model, d2_images, [b for _, b in generated], gt_classes))
    print("training losses:", {k: float(v) for k, v in out.items() if k.startswith("loss_")},
          "RoIs:", int(out["train_num_rois"]))
    np.savez_compressed(args.output_dir / "outputs.npz", **out)

    border_weights(weights, border)
    model = build_model(cfg)
    DetectionCheckpointer(model).load(str(border))
    model.eval()
    cfg.defrost()
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = args.test_min_size, args.test_max_size
    write_resized_fixture(args, lambda rgb: run_detectron2_test_path(model, cfg, rgb), "detectron2")
    sizes = {f.name: f.stat().st_size for f in args.output_dir.iterdir()}
    print(f"wrote {args.output_dir}: {sizes}")


if __name__ == "__main__":
    main()
