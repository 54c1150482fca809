"""detection/weights/transfer.py: a detector initialised from another detector's checkpoint (COCO → VOC fine-tuning):
everything of the same name and shape, and the class-specific rows of the classes both name."""

from pathlib import Path

import pytest
import torch

from backbones.checkpoint import CheckpointError, save_checkpoint
from detection import build_detector, load_config
from detection.devkit import VOC_CLASSES
from detection.weights.transfer import load_detector_weights, match_classes

COCO_LIKE = ["person", "bicycle", "car", "motorcycle", "airplane", "zebra", "tv"]


def tiny(num_classes: int, *extra: str, seed: int = 0):
    cfg = load_config(None, [f"num_classes={num_classes}", "model.backbone.depth=18", "model.backbone.base_width=8",
                             "model.backbone.weights=none", *extra])  # fmt: skip
    torch.manual_seed(seed)
    return build_detector(cfg), cfg


def checkpoint(tmp_path: Path, model, cfg, classes) -> Path:
    state = {"model": model.state_dict(), "config": cfg.to_dict()}
    if classes is not None:
        state["classes"] = classes
    return save_checkpoint(tmp_path / "source.pth", state)


def test_voc_names_match_their_coco_spellings():
    pairs = match_classes(list(VOC_CLASSES), COCO_LIKE)
    named = {VOC_CLASSES[t - 1]: COCO_LIKE[s - 1] for t, s in pairs.items()}
    assert named == {"aeroplane": "airplane", "bicycle": "bicycle", "car": "car", "motorbike": "motorcycle",
                     "person": "person", "tvmonitor": "tv"}  # fmt: skip
    assert match_classes(["Cat", "dog"], ["dog", "cat"]) == {1: 2, 2: 1}


def test_shared_class_rows_are_copied_and_the_rest_kept(tmp_path):
    source, source_cfg = tiny(len(COCO_LIKE), seed=1)
    target_classes = ["tvmonitor", "cow", "person"]
    target, _ = tiny(3, seed=2)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    report = load_detector_weights(target, checkpoint(tmp_path, source, source_cfg, COCO_LIKE), classes=target_classes)
    after, weights = target.state_dict(), source.state_dict()
    for name in after:
        if not name.startswith("roi_heads.predictor."):
            assert torch.equal(after[name], weights[name]), name
    cls_w, src_cls = after["roi_heads.predictor.cls_score.weight"], weights["roi_heads.predictor.cls_score.weight"]
    box_b, src_box = after["roi_heads.predictor.bbox_pred.bias"], weights["roi_heads.predictor.bbox_pred.bias"]
    # target labels 1 (tvmonitor ← tv, source label 7) and 3 (person ← source label 1); background row 0
    assert torch.equal(cls_w[0], src_cls[0]) and torch.equal(cls_w[1], src_cls[7]) and torch.equal(cls_w[3], src_cls[1])
    assert torch.equal(cls_w[2], before["roi_heads.predictor.cls_score.weight"][2])  # cow: COCO-like has none
    assert torch.equal(box_b[0:4], src_box[24:28]) and torch.equal(box_b[8:12], src_box[0:4])
    assert torch.equal(box_b[4:8], before["roi_heads.predictor.bbox_pred.bias"][4:8])
    assert report.class_pairs == [("tvmonitor", "tv"), ("person", "person")]
    summary = report.summary()
    assert "2 shared classes: tvmonitor←tv, person" in summary and "kept at initialisation" not in summary


def test_without_class_names_the_class_layers_keep_their_initialisation(tmp_path):
    source, cfg = tiny(3, seed=1)
    target, _ = tiny(3, seed=2)
    before = target.state_dict()["roi_heads.predictor.cls_score.weight"].clone()
    report = load_detector_weights(target, checkpoint(tmp_path, source, cfg, None), classes=["a", "b", "c"])
    assert torch.equal(target.state_dict()["roi_heads.predictor.cls_score.weight"], before)
    assert "roi_heads.predictor.cls_score.weight" in report.kept
    assert "names no classes" in report.summary()


def test_other_shapes_are_reported_not_loaded(tmp_path):
    source, cfg = tiny(3, seed=1)  # no global context: the predictor reads C features, the context one 2C
    target, _ = tiny(3, "model.roi_heads.global_context=true", seed=2)
    report = load_detector_weights(target, checkpoint(tmp_path, source, cfg, ["a", "b", "c"]), classes=["a", "b", "c"])
    assert "shape" in report.kept["roi_heads.predictor.cls_score.weight"]
    assert any(name.startswith("trunk.") for name in report.copied)


def test_a_file_that_is_not_a_detector_checkpoint_is_refused(tmp_path):
    path = save_checkpoint(tmp_path / "x.pth", {"weights": torch.zeros(2)})
    with pytest.raises(CheckpointError, match="x.pth"):
        load_detector_weights(tiny(3)[0], path)
