"""detectron2's C4 detectors run here exactly as in detectron2 (detection/weights/detectron2.py,
tools/convert_weights.py).

The fixture under fixtures/detectron2_r50_c4/ was written by tools/dev/make_detectron2_fixture.py with detectron2
itself: a model-zoo ``.pkl`` of its R50-C4 at width 6 (random weights, fixed seed; detectron2's own loader read it
back) and detectron2's proposals and detections on three generated images. Nothing here imports detectron2.

``outputs_resized.npz`` (weights: ``model_final.pkl`` with a few box regressors shifted, ``border_weights``) holds
the whole test path — resize, model, boxes back to the
original image, empty boxes dropped — on images that get enlarged, shrunk and capped; its ``source`` field says
that detectron2 wrote it (the script's ``--semantics`` mode, for machines without detectron2, writes
"semantics"), see docs/model_zoo.md.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from backbones.checkpoint import CheckpointError, load_checkpoint
from detection.build import build_detector, load_backbone_weights, load_detector
from detection.config import Config, load_config
from detection.modeling.anchors import cell_anchors
from detection.modeling.boxes import resized_shape
from detection.modeling.faster_rcnn import detectron2_resized_shape, pil_resize
from detection.weights.detectron2 import (
    COCO_CLASSES,
    convert_detectron2,
    detectron2_architecture,
    detectron2_classes,
    read_detectron2_weights,
)

ROOT = Path(__file__).resolve().parents[3]
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "detectron2_r50_c4"
BOX_TOL, SCORE_TOL = 1e-3, 1e-5


def load_tool(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name.replace("/", "."), ROOT / "tools" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def convert_tool() -> ModuleType:
    return load_tool("convert_weights")


@pytest.fixture(scope="module")
def outputs() -> dict[str, np.ndarray]:
    with np.load(FIXTURE / "outputs.npz", allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory, outputs: dict[str, np.ndarray]) -> Path:
    """The fixture converted by the command-line tool, with the R50-C4 1x config and the fixture's small sizes."""
    out = tmp_path_factory.mktemp("zoo") / "r50_c4.pth"
    convert_tool().main([
        "--from", "detectron2", str(FIXTURE / "model_final.pkl"), "--output", str(out),
        "--config", str(ROOT / "configs" / "detectron2" / "faster_rcnn_R_50_C4_1x.yaml"),
        f"model.backbone.base_width={int(outputs['width'])}", f"num_classes={int(outputs['num_classes'])}",
        f"model.rpn.pre_nms_top_n_test={int(outputs['pre_nms_topk'])}",
        f"model.rpn.post_nms_top_n_test={int(outputs['post_nms_topk'])}",
        "input.test_min_size=128",  # every fixture image's shorter side: no resizing, as in detectron2's run
    ])
    return out


def fixture_sizes(outputs: dict[str, np.ndarray]) -> list[str]:
    return [f"model.backbone.base_width={int(outputs['width'])}", f"num_classes={int(outputs['num_classes'])}"]


def match_one_to_one(ours: np.ndarray, theirs: np.ndarray, tol: float) -> list[int]:
    """For each row of ``theirs`` the index of a distinct row of ``ours`` within ``tol`` (max abs difference);
    rows whose scores nearly tie may come in another order, so order is not required. -1 where none is left."""
    free = np.ones(len(ours), dtype=bool)
    found = []
    for row in theirs:
        close = np.nonzero(free & (np.abs(ours - row).max(axis=1) <= tol))[0]
        found.append(int(close[0]) if len(close) else -1)
        if len(close):
            free[close[0]] = False
    return found


@pytest.fixture(scope="module")
def resized_outputs() -> dict[str, np.ndarray]:
    with np.load(FIXTURE / "outputs_resized.npz", allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def converted_border(
    tmp_path_factory: pytest.TempPathFactory, outputs: dict[str, np.ndarray], resized_outputs: dict[str, np.ndarray]
) -> Path:
    """The fixture's weights with boxes pushed to the border (the fixture script's ``border_weights``), converted
    by the tool with the R50-C4 1x config, at the resized fixture's test scale."""
    folder = tmp_path_factory.mktemp("zoo")
    out, border = folder / "r50_c4_border.pth", folder / "model_border.pkl"
    load_tool("dev/make_detectron2_fixture").border_weights(FIXTURE / "model_final.pkl", border)
    r = resized_outputs
    convert_tool().main([
        "--from", "detectron2", str(border), "--output", str(out),
        "--config", str(ROOT / "configs" / "detectron2" / "faster_rcnn_R_50_C4_1x.yaml"), *fixture_sizes(outputs),
        f"model.rpn.pre_nms_top_n_test={int(r['pre_nms_topk'])}",
        f"model.rpn.post_nms_top_n_test={int(r['post_nms_topk'])}",
        f"input.test_min_size={int(r['test_min_size'])}", f"input.test_max_size={int(r['test_max_size'])}",
    ])
    return out


def unmatched_detections(detections: dict[str, torch.Tensor], fixture: dict[str, np.ndarray], i: int) -> int:
    """How many of the fixture's detections of image ``i`` have no detection here with the same class, the box
    within ``BOX_TOL`` and the score within ``SCORE_TOL`` (one-to-one); every one when the counts differ."""
    far = 1e4  # a class difference puts rows far apart
    ours = np.concatenate((detections["boxes"].numpy(), far * (detections["labels"].numpy()[:, None] - 1),
                           detections["scores"].numpy()[:, None] / SCORE_TOL * BOX_TOL), 1)
    want = np.concatenate((fixture[f"boxes_{i}"], far * fixture[f"classes_{i}"][:, None],
                           fixture[f"scores_{i}"][:, None] / SCORE_TOL * BOX_TOL), 1)
    if ours.shape != want.shape:
        return len(want)
    return match_one_to_one(ours, want, BOX_TOL).count(-1)


def image_tensor(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(rgb).permute(2, 0, 1).float() / 255  # RGB [0, 1], as the data pipeline decodes


def test_the_whole_test_path_is_detectron2s(converted_border: Path, resized_outputs: dict[str, np.ndarray]) -> None:
    """With configs/detectron2, images at any size give detectron2's ``DefaultPredictor`` detections: its resize
    (``int(x + 0.5)`` sizes, PIL bilinear on ``uint8``), boxes scaled back and clipped, empty boxes dropped after
    the top 100. The fixture's images are enlarged, shrunk (one side lands on .5, where ``round`` would give
    another size) and capped by the longer side; some of its top-100 boxes collapse at the border."""
    model, cfg, _ = load_detector(converted_border)
    model.eval()
    assert cfg.input.resize_mode == "detectron2" and cfg.model.roi_heads.empty_boxes == "after_top_k"
    r = resized_outputs
    assert str(r["source"]) == "detectron2", "outputs_resized.npz was not written by detectron2 (docs/model_zoo.md)"
    kinds, dropped, other_rounding = set(), 0, 0
    for i in range(int(r["num_images"])):
        rgb = r[f"image_{i}"]
        (h, w), resized = rgb.shape[:2], tuple(int(v) for v in r[f"resized_size_{i}"])
        assert model.transform.test_size(h, w) == resized, f"image {i}: {(h, w)} resized to another size"
        kinds.add("enlarged" if resized[0] > h else "shrunk")
        other_rounding += resized_shape(h, w, int(r["test_min_size"]), int(r["test_max_size"])) != resized
        with torch.no_grad():
            (detections,) = model([image_tensor(rgb)])
        assert len(detections["boxes"]) == len(r[f"boxes_{i}"]), f"image {i}: {len(detections['boxes'])} detections"
        assert unmatched_detections(detections, r, i) == 0, f"image {i}: detections differ from the fixture's"
        dropped += int(r[f"raw_count_{i}"]) - len(r[f"boxes_{i}"])
    assert kinds == {"enlarged", "shrunk"} and other_rounding > 0 and dropped > 0  # the fixture covers each case


def test_the_toolkits_own_test_path_differs_on_those_images(
    converted_border: Path, resized_outputs: dict[str, np.ndarray]
) -> None:
    """The switch matters: the paper's pipeline (float resize, thin boxes dropped before NMS) on the same weights
    gives other detections on the resized fixture (the differences docs/model_zoo.md describes)."""
    model, _, _ = load_detector(converted_border,
                                overrides=["input.resize_mode=float", "model.roi_heads.empty_boxes=before_nms"])
    model.eval()
    r = resized_outputs
    differing = 0
    for i in range(int(r["num_images"])):
        with torch.no_grad():
            (detections,) = model([image_tensor(r[f"image_{i}"])])
        differing += unmatched_detections(detections, r, i) > 0
    assert differing == int(r["num_images"])


def test_detectron2_resize_rule_and_pil_resize() -> None:
    """detectron2's ``ResizeShortestEdge``: the shorter side to ``short``, both scaled again if the longer exceeds
    ``max_size``, then ``int(x + 0.5)``; the ``uint8`` image resized by PIL, whole grey levels in and out."""
    assert detectron2_resized_shape(480, 640, 800, 1333) == (800, 1067)  # COCO's common size, enlarged
    assert detectron2_resized_shape(256, 301, 128, 200) == (128, 151)  # 150.5 → 151 (round() gives 150)
    assert resized_shape(256, 301, 128, 200) == (128, 150)
    assert detectron2_resized_shape(400, 2000, 800, 1333) == (267, 1333)  # capped by the longer side
    rgb = np.random.default_rng(0).integers(0, 256, size=(37, 53, 3), dtype=np.uint8)
    for size in ((60, 86), (20, 29), (37, 53)):  # enlarged, shrunk (antialiased), the same size (a copy)
        ours = pil_resize(image_tensor(rgb), size)
        theirs = np.array(Image.fromarray(rgb).resize(size[::-1], Image.Resampling.BILINEAR))
        assert torch.equal(ours, image_tensor(theirs))


def test_converted_model_reproduces_detectron2(converted: Path, outputs: dict[str, np.ndarray]) -> None:
    model, cfg, classes = load_detector(converted)
    model.eval()
    assert classes == detectron2_classes(20) and cfg.model.backbone.style == "msra"
    total_detections = 0
    for i in range(int(outputs["num_images"])):
        image = torch.from_numpy(outputs[f"image_{i}"]).permute(2, 0, 1).float() / 255  # RGB [0, 1]
        with torch.no_grad():
            (detections,) = model([image])
            opened = model.propose([image])  # the same opening as the forward pass: batch, features, proposals
        assert opened.batch.tensor.shape[-2:] == image.shape[-2:]  # neither resized nor padded
        proposals = opened.proposals

        theirs = outputs[f"proposals_{i}"]
        assert proposals[0].shape == theirs.shape
        matched = match_one_to_one(proposals[0].numpy(), theirs, BOX_TOL)
        assert -1 not in matched, f"image {i}: detectron2 proposals without a match: {matched.count(-1)}"

        # Detections: same count, and each of detectron2's has its own here with the same class, the box within
        # 1e-3 px and the score within 1e-5. Its classes are 0-based (background last), ours 1-based.
        far = 1e4  # a class difference puts rows far apart
        ours = np.concatenate((detections["boxes"].numpy(), far * (detections["labels"].numpy()[:, None] - 1)), 1)
        want = np.concatenate((outputs[f"boxes_{i}"], far * outputs[f"classes_{i}"][:, None]), 1)
        assert ours.shape == want.shape, f"image {i}: {len(ours)} detections, detectron2 {len(want)}"
        matched = match_one_to_one(ours, want, BOX_TOL)
        assert -1 not in matched, f"image {i}: {matched.count(-1)} of detectron2's detections unmatched"
        score_error = np.abs(detections["scores"].numpy()[matched] - outputs[f"scores_{i}"]).max()
        assert score_error <= SCORE_TOL, f"image {i}: scores differ by {score_error}"
        total_detections += len(want)
    assert total_detections > 0


@pytest.mark.parametrize("fixture", ["test_scale", "resized"])
def test_test_det_writes_detectron2s_detections_with_coco_category_ids(
    tmp_path: Path, request: pytest.FixtureRequest, outputs: dict[str, np.ndarray], fixture: str
) -> None:
    """One command: ``tools/test_det.py`` on the converted checkpoint and a COCO-layout split of the fixture's
    images (PNG, lossless) whose 20 category ids are sparse. Its results JSON holds detectron2's detections, each
    with the COCO id of its class (detectron2's class c is the (c+1)-th smallest id, as in its COCO datasets):
    at the test scale, and on the images the model resizes (decoded, resized, boxes scaled back, empty ones
    dropped as detectron2 does)."""
    converted = request.getfixturevalue("converted" if fixture == "test_scale" else "converted_border")
    fixed = outputs if fixture == "test_scale" else request.getfixturevalue("resized_outputs")
    root = tmp_path / "coco"
    cat_ids = [3 * k + 2 for k in range(int(outputs["num_classes"]))]
    images, annotations = [], []
    for i in range(int(fixed["num_images"])):
        rgb = fixed[f"image_{i}"]
        (root / "val").mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(root / "val" / f"{i}.png"), np.ascontiguousarray(rgb[:, :, ::-1]))
        images.append({"id": 100 + i, "file_name": f"{i}.png", "height": rgb.shape[0], "width": rgb.shape[1]})
        for j, (box, c) in enumerate(zip(fixed[f"gt_boxes_{i}"], fixed[f"gt_classes_{i}"])):
            x0, y0, x1, y1 = (float(v) for v in box)
            annotations.append({"id": 1000 * i + j, "image_id": 100 + i, "category_id": cat_ids[int(c)],
                                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0})
    names = load_checkpoint(converted)["classes"]  # test_det checks the data's class names against these
    categories = [{"id": c, "name": names[k]} for k, c in reversed(list(enumerate(cat_ids)))]  # file order: any
    (root / "annotations").mkdir()
    (root / "annotations" / "instances_val.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories}))

    test_det = load_tool("test_det")
    code = test_det.main(["--weights", str(converted), "--dataset", "coco", "--data-root", str(root),
                          "--split", "val", "--output-dir", str(tmp_path / "out"), "--device", "cpu",
                          "--no-optimize", "--no-progress", "data.num_workers=0"])
    assert code == 0
    results = json.loads((tmp_path / "out" / "coco_results_val.json").read_text())
    for i in range(int(fixed["num_images"])):
        mine = [r for r in results if r["image_id"] == 100 + i]
        far = 1e4
        ours = np.array([[x, y, x + w, y + h, far * cat_ids.index(r["category_id"])]
                         for r in mine for x, y, w, h in [r["bbox"]]], dtype=np.float32)
        want = np.concatenate((fixed[f"boxes_{i}"], far * fixed[f"classes_{i}"][:, None]), 1)
        assert ours.shape == want.shape
        matched = match_one_to_one(ours, want, BOX_TOL)
        assert -1 not in matched, f"image {i}: {matched.count(-1)} of detectron2's detections unmatched"
        scores = np.array([r["score"] for r in mine])
        assert np.abs(scores[matched] - fixed[f"scores_{i}"]).max() <= SCORE_TOL


def test_training_losses_equal_detectron2s(converted: Path, outputs: dict[str, np.ndarray]) -> None:
    """The four losses on one batch of the three images (padded together), with fixed targets. The fixture's
    per-image sample sizes exceed every candidate, so both sides keep all anchors and RoIs and no random draw
    matters. detectron2 divides the RoI losses by the RoIs actually sampled, this toolkit by RoIs-per-image ×
    images (a fixed normaliser for data-parallel means); they agree whenever each image fills its 512 RoIs, as
    real images do, so here ours are rescaled by that ratio before comparing."""
    batch = int(outputs["train_batch"])
    model, _, _ = load_detector(converted, overrides=[f"model.rpn.batch_size_per_image={batch}",
                                                      f"model.roi_heads.batch_size_per_image={batch}"])
    model.train()
    n = int(outputs["num_images"])
    images = [torch.from_numpy(outputs[f"image_{i}"]).permute(2, 0, 1).float() / 255 for i in range(n)]
    targets = [{"boxes": torch.from_numpy(outputs[f"gt_boxes_{i}"]),
                "labels": torch.from_numpy(outputs[f"gt_classes_{i}"]).long() + 1} for i in range(n)]
    with torch.no_grad():
        losses = model(images, targets)
    roi_scale = batch * n / int(outputs["train_num_rois"])
    pairs = {"loss_rpn_cls": "loss_rpn_cls", "loss_rpn_box": "loss_rpn_loc", "loss_cls": "loss_cls",
             "loss_box": "loss_box_reg"}
    for ours, theirs in pairs.items():
        value = losses[ours].item() * (roi_scale if ours in ("loss_cls", "loss_box") else 1.0)
        assert value == pytest.approx(float(outputs[theirs]), rel=1e-5), ours


def test_checkpoint_records_the_architecture(converted: Path, outputs: dict[str, np.ndarray]) -> None:
    ckpt = load_checkpoint(converted)
    width, num_classes = int(outputs["width"]), int(outputs["num_classes"])
    assert ckpt["source"]["format"] == "detectron2"
    assert ckpt["source"]["architecture"] == {"depth": 50, "base_width": width, "num_classes": num_classes,
                                              "num_anchors": 15}
    model_cfg = ckpt["config"]["model"]
    assert model_cfg["backbone"]["style"] == "msra" and model_cfg["anchors"]["round_to_pixels"] is False
    assert model_cfg["roi_heads"]["pooler"] == "roialign" and model_cfg["roi_heads"]["roi_align_aligned"] is True
    assert ckpt["config"]["input"]["channel_order"] == "BGR" and ckpt["config"]["input"]["pixel_scale"] == 255.0
    # Background moved from detectron2's last row to our first.
    d2 = read_detectron2_weights(FIXTURE / "model_final.pkl")
    cls = ckpt["model"]["roi_heads.predictor.cls_score.weight"]
    assert torch.equal(cls[0], d2["roi_heads.box_predictor.cls_score.weight"][num_classes])
    assert torch.equal(cls[1:], d2["roi_heads.box_predictor.cls_score.weight"][:num_classes])


def test_backbone_only_for_fine_tuning(tmp_path: Path, converted: Path, outputs: dict[str, np.ndarray]) -> None:
    """``--backbone-only``: the COCO-trained ResNet, as ``model.backbone.weights`` of a new (e.g. VOC) detector."""
    out = tmp_path / "r50_backbone.pth"
    convert_tool().main(["--from", "detectron2", str(FIXTURE / "model_final.pkl"), "--backbone-only",
                         "--output", str(out)])
    cfg = load_config(ROOT / "configs" / "detectron2" / "faster_rcnn_R_50_C4_voc.yaml",
                      [f"model.backbone.base_width={int(outputs['width'])}", f"model.backbone.weights={out}",
                       "num_classes=7"])
    model = build_detector(cfg)
    load_backbone_weights(model, cfg)
    detector = load_checkpoint(converted)["model"]
    for key, value in model.state_dict().items():
        if key.startswith(("trunk.body.", "roi_heads.box_head.head.")):
            assert torch.equal(value, detector[key]), key


def test_loading_into_a_torchvision_style_config_is_an_error(converted: Path, outputs: dict[str, np.ndarray]) -> None:
    cfg = load_config(ROOT / "configs" / "coco" / "faster_rcnn_r50_c4.yaml", fixture_sizes(outputs))
    with pytest.raises(CheckpointError, match="msra-style.*model.backbone.style=msra"):
        load_detector(converted, cfg)


def fixture_config(outputs: dict[str, np.ndarray]) -> Config:
    return load_config(ROOT / "configs" / "detectron2" / "faster_rcnn_R_50_C4_1x.yaml", fixture_sizes(outputs))


def test_unmapped_keys_and_wrong_shapes_fail_loudly(outputs: dict[str, np.ndarray]) -> None:
    weights = read_detectron2_weights(FIXTURE / "model_final.pkl")
    cfg = fixture_config(outputs)
    with pytest.raises(ValueError, match="roi_heads.mask_head.predictor.weight"):
        convert_detectron2({**weights, "roi_heads.mask_head.predictor.weight": torch.zeros(3)}, cfg)
    bad = dict(weights)
    bad["backbone.res3.1.conv2.weight"] = bad["backbone.res3.1.conv2.weight"][:, :-1]
    with pytest.raises(ValueError, match=r"shape mismatch: trunk.body.layer2.1.conv2.weight"):
        convert_detectron2(bad, cfg)
    missing = {k: v for k, v in weights.items() if k != "roi_heads.res5.2.conv3.norm.running_var"}
    with pytest.raises(ValueError, match=r"missing from the checkpoint: roi_heads.box_head.head.layer4.2.bn3"):
        convert_detectron2(missing, cfg)
    wrong_cfg = load_config(ROOT / "configs" / "detectron2" / "faster_rcnn_R_101_C4_3x.yaml")
    with pytest.raises(ValueError, match="depth: checkpoint 50, config 101"):
        convert_detectron2(weights, wrong_cfg)


def test_stored_anchors_and_pixel_statistics_are_checked(outputs: dict[str, np.ndarray]) -> None:
    """Older detectron2 checkpoints store ``cell_anchors`` (size-major) and the pixel mean / std."""
    weights = read_detectron2_weights(FIXTURE / "model_final.pkl")
    cfg = fixture_config(outputs)
    sizes, ratios = cfg.model.anchors.sizes, cfg.model.anchors.aspect_ratios
    size_major = torch.cat([cell_anchors([s], ratios, round_to_pixels=False) for s in sizes])
    stored = {"proposal_generator.anchor_generator.cell_anchors.0": size_major,
              "pixel_mean": torch.tensor([[[103.53]], [[116.28]], [[123.675]]]), "pixel_std": torch.ones(3, 1, 1)}
    assert convert_detectron2({**weights, **stored}, cfg).keys() == convert_detectron2(weights, cfg).keys()
    rounded = torch.cat([cell_anchors([s], ratios, round_to_pixels=True) for s in sizes])
    with pytest.raises(ValueError, match="anchors"):
        convert_detectron2({**weights, **stored, "proposal_generator.anchor_generator.cell_anchors.0": rounded}, cfg)
    with pytest.raises(ValueError, match="pixel_mean"):
        convert_detectron2({**weights, **stored, "pixel_mean": torch.tensor([0.485, 0.456, 0.406])}, cfg)


def test_architecture_read_from_shapes(outputs: dict[str, np.ndarray]) -> None:
    arch = detectron2_architecture(read_detectron2_weights(FIXTURE / "model_final.pkl"))
    assert (arch.depth, arch.base_width, arch.num_classes) == (50, int(outputs["width"]), int(outputs["num_classes"]))
    assert detectron2_classes(80) == list(COCO_CLASSES) and COCO_CLASSES[0] == "person" and len(COCO_CLASSES) == 80
    with pytest.raises(ValueError, match="C4"):
        detectron2_architecture({"backbone.bottom_up.stem.conv1.weight": torch.zeros(1)})  # an FPN model


class RunsCode:
    def __reduce__(self) -> tuple:
        return (os.system, ("echo should-not-run",))


def test_pickles_that_would_run_code_are_refused(tmp_path: Path) -> None:
    evil = tmp_path / "model_final.pkl"
    with open(evil, "wb") as f:
        pickle.dump({"model": {"backbone.stem.conv1.weight": RunsCode()}}, f)
    with pytest.raises(CheckpointError, match="refusing to load .*system"):
        read_detectron2_weights(evil)
    with pytest.raises(SystemExit, match="refusing to load"):
        convert_tool().main(["--from", "detectron2", str(evil), "--output", str(tmp_path / "x.pth")])


def test_trainer_pth_checkpoints_are_read(tmp_path: Path) -> None:
    """detectron2's trainer writes ``torch.save({"model": state_dict, "iteration": ...})``."""
    weights = read_detectron2_weights(FIXTURE / "model_final.pkl")
    path = tmp_path / "model_0004999.pth"
    torch.save({"model": weights, "iteration": 4999, "scheduler": {"last_epoch": 4999}}, path)
    again = read_detectron2_weights(path)
    assert again.keys() == weights.keys() and all(torch.equal(again[k], weights[k]) for k in weights)
