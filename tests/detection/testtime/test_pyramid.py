"""detection/testtime/pyramid.py: the image pyramid as a wrapper of the model's public parts, composing with box
refinement, voting and global context."""

import itertools

import pytest
import torch

from detection import build_detector, load_config
from detection.build import build_test_detector
from detection.fast.optimize import optimize_for_inference
from detection.modeling import postprocess as postprocess_module
from detection.modeling.boxes import scale_boxes
from detection.testtime.pyramid import MultiScaleDetector, Pyramid, choose_levels

IMPROVEMENTS = ("box_refinement", "box_voting", "global_context")
COMBINATIONS = [dict(zip(IMPROVEMENTS, bits)) for bits in itertools.product([False, True], repeat=3)]


def tiny_config(depth=18, **switches):
    overrides = [
        "num_classes=3", f"model.backbone.depth={depth}", "model.backbone.base_width=8", "model.backbone.weights=none",
        "model.anchors.sizes=[16,32,64]", "model.rpn.pre_nms_top_n_test=100", "model.rpn.post_nms_top_n_test=20",
        "model.roi_heads.score_thresh=0.0", "input.test_min_size=64", "input.test_max_size=96",
    ]
    overrides += [f"model.roi_heads.{k}={str(v).lower()}" for k, v in switches.items() if k in IMPROVEMENTS]
    overrides += [f"{k}={v}" for k, v in switches.items() if k not in IMPROVEMENTS]
    return load_config(None, overrides)


def images():
    g = torch.Generator().manual_seed(2)
    return [torch.rand(3, 64, 80, generator=g), torch.rand(3, 72, 64, generator=g)]


def build(cfg):
    torch.manual_seed(0)
    return build_detector(cfg).eval()


def test_choose_levels_hand_made():
    boxes = torch.tensor([[0.0, 0.0, 112.0, 112.0], [0.0, 0.0, 448.0, 448.0], [0.0, 0.0, 10.0, 10.0]])
    scales = torch.tensor([0.5, 1.0, 2.0])
    first, second = choose_levels(boxes, scales)
    # 112² × 2² = 224² exactly at level 2 (its neighbour is below: level 1); 448² × 0.5² = 224² at level 0;
    # 10² is tiny at every level: the largest level, neighbour below.
    assert first.tolist() == [2, 0, 2] and second.tolist() == [1, 1, 1]


@pytest.mark.parametrize("switches", COMBINATIONS)
def test_pyramid_of_the_test_scale_equals_single_scale(switches):
    cfg = tiny_config(**switches)
    model = build(cfg)
    pyramid = MultiScaleDetector(model, min_sizes=[cfg.input.test_min_size], max_size=cfg.input.test_max_size)
    with torch.inference_mode():
        single, multi = model(images()), pyramid(images())
    for a, b in zip(single, multi):
        assert len(a["boxes"]) > 0
        for key in ("boxes", "scores", "labels"):
            assert torch.equal(a[key], b[key]), key


def test_pyramid_follows_detectrons_test_path_too():
    """With ``input.resize_mode=detectron2`` every pyramid level is resized as the model's test scale is (PIL on
    whole grey levels, ``int(x + 0.5)`` sizes: 149 × 128 → 75 × 64, where ``round`` gives 74), so a pyramid of the
    test scale still equals single scale, and the levels' scale factors follow that rule."""
    cfg = tiny_config(**{"input.resize_mode": "detectron2", "model.roi_heads.empty_boxes": "after_top_k"})
    model = build(cfg)
    g = torch.Generator().manual_seed(3)
    pictures = [torch.randint(0, 256, (3, 149, 128), generator=g).float() / 255]
    pyramid = MultiScaleDetector(model, min_sizes=[cfg.input.test_min_size], max_size=cfg.input.test_max_size)
    with torch.inference_mode():
        opened = model.propose(pictures)
        single, multi = model(pictures), pyramid(pictures)
        levels = Pyramid(model, pictures, [32, 64], cfg.input.test_max_size, opened.batch, opened.features)
    assert opened.batch.image_sizes == [(75, 64)]
    assert levels.scales[0].tolist() == pytest.approx([37 / 75, 1.0])  # level 32: 37.25 × 32 → 37 × 32
    for a, b in zip(single, multi):
        assert len(a["boxes"]) > 0 and all(torch.equal(a[k], b[k]) for k in a)


def test_pyramid_of_the_test_scale_equals_single_scale_on_the_factored_head():
    cfg = tiny_config(depth=50, box_refinement=True, box_voting=True, global_context=True)
    model = optimize_for_inference(build(cfg))
    pyramid = MultiScaleDetector(model, min_sizes=[cfg.input.test_min_size], max_size=cfg.input.test_max_size)
    with torch.inference_mode():
        for a, b in zip(model(images()), pyramid(images())):
            assert len(a["boxes"]) > 0 and all(torch.equal(a[k], b[k]) for k in a)


def test_pyramid_with_refinement_repools_refined_boxes_and_uses_nms_03(monkeypatch):
    cfg = tiny_config(box_refinement=True, box_voting=True, **{"test.pyramid_min_sizes": "[48,64,96]"})
    model = build(cfg)
    tester = build_test_detector(model, cfg)
    assert isinstance(tester, MultiScaleDetector)
    heads = model.roi_heads
    pooled_boxes, nms_thresholds = [], []
    real_features, real_nms = heads.box_features, postprocess_module.batched_nms
    monkeypatch.setattr(heads, "box_features", lambda f, b, s: pooled_boxes.append(b) or real_features(f, b, s))
    monkeypatch.setattr(postprocess_module, "batched_nms",
                        lambda b, s, i, t: nms_thresholds.append(t) or real_nms(b, s, i, t))
    scorer_calls = []
    real_predict = heads.predict
    monkeypatch.setattr(heads, "predict", lambda f, b, s: scorer_calls.append(b) or real_predict(f, b, s))
    with torch.inference_mode():
        out = tester(images())
    assert all(len(d["boxes"]) > 0 for d in out)
    assert nms_thresholds == [0.3, 0.3]  # one per image, the refinement threshold
    assert len(scorer_calls) == 2  # the proposals, then the refined boxes, each scored over the pyramid
    proposals, refined = scorer_calls
    assert not all(torch.equal(p, r) for p, r in zip(proposals, refined))
    assert len(pooled_boxes) >= 4  # ≥ 2 levels per scoring pass: each box pooled at two adjacent levels


@pytest.mark.parametrize("switches", COMBINATIONS)
def test_every_combination_with_the_pyramid_runs(switches):
    cfg = tiny_config(**switches, **{"test.pyramid_min_sizes": "[48,64,96]"})
    tester = build_test_detector(build(cfg), cfg)
    with torch.inference_mode():
        out = tester(images())
    for det, image in zip(out, images()):
        assert len(det["boxes"]) > 0 and torch.isfinite(det["boxes"]).all()
        assert (det["boxes"][:, 2] <= image.shape[2] + 1e-3).all()
        assert (det["boxes"][:, 3] <= image.shape[1] + 1e-3).all()


def test_training_mode_is_refused():
    cfg = tiny_config(**{"test.pyramid_min_sizes": "[48,64]"})
    tester = build_test_detector(build(cfg).train(), cfg)
    with pytest.raises(RuntimeError, match="eval"):
        tester(images())


@pytest.mark.parametrize("levels_per_roi", [1, 2])
def test_levels_per_roi_sets_how_many_levels_pool_each_box(monkeypatch, levels_per_roi):
    cfg = tiny_config(box_refinement=True, **{"test.pyramid_min_sizes": "[64,128,256,512]",
                                             "test.pyramid_levels_per_roi": levels_per_roi})
    model = build(cfg)
    tester = build_test_detector(model, cfg)
    assert tester.levels_per_roi == levels_per_roi
    heads = model.roi_heads
    pooled, scored = [], []
    real_features, real_predict = heads.box_features, heads.predict

    def spy_features(features, boxes, sizes):
        pooled.append(sum(len(b) for b in boxes))
        return real_features(features, boxes, sizes)

    def spy_predict(features, boxes, sizes):
        scored.append(sum(len(b) for b in boxes))
        return real_predict(features, boxes, sizes)

    monkeypatch.setattr(heads, "box_features", spy_features)
    monkeypatch.setattr(heads, "predict", spy_predict)
    with torch.inference_mode():
        out = tester(images())
    assert all(len(d["boxes"]) > 0 for d in out)
    assert len(scored) == 2 and len(pooled) >= 3  # proposals and refined boxes; several levels in use
    assert sum(pooled) == levels_per_roi * sum(scored)  # each box pooled at exactly levels_per_roi levels


def test_one_level_per_roi_scores_each_box_at_its_nearest_level_alone():
    cfg = tiny_config(global_context=True)
    model = optimize_for_inference(build(cfg))
    heads = model.roi_heads
    with torch.inference_mode():
        batch = model.transform(images())
        features = model.trunk(batch.tensor)
        proposals, _ = model.rpn(features, batch.image_sizes)
        pyramid = Pyramid(model, images(), [64, 128, 256, 512], 2000, batch, features, levels_per_roi=1)
        probs, class_boxes = pyramid.score(proposals)
        # The oracle: every box alone through the head at the level choose_levels names first.
        for i, (boxes, scales) in enumerate(zip(proposals, pyramid.scales)):
            first, _ = choose_levels(boxes, scales)
            assert len(set(first.tolist())) >= 2
            for r in range(len(boxes)):
                level_features, sizes = pyramid.level(int(first[r]))
                one = [boxes[r:r + 1] if j == i else boxes[:0] for j in range(len(proposals))]
                local = [scale_boxes(b, t, s) for b, t, s in zip(one, batch.image_sizes, sizes)]
                p, c = heads.predict(heads.box_features(level_features, local, sizes), one, batch.image_sizes)
                torch.testing.assert_close(p[i], probs[i][r:r + 1], rtol=1e-4, atol=1e-5)
                torch.testing.assert_close(c[i], class_boxes[i][r:r + 1], rtol=1e-4, atol=1e-3)


def test_levels_per_roi_other_than_one_or_two_is_refused():
    model = build(tiny_config())
    with pytest.raises(ValueError, match="levels_per_roi"):
        MultiScaleDetector(model, min_sizes=[48, 64], max_size=2000, levels_per_roi=3)
