"""detection/testtime/ensemble.py: ensembles and flip testing as one wrapper of the models' public parts; exact
where the
maths says it must be (one model, copies of one model, mirroring), composing with refinement, voting, context
and the pyramid."""

import copy
import itertools

import pytest
import torch
import torchvision

from detection import build_detector, load_config
from detection.build import build_test_detector
from detection.testtime.ensemble import EnsembleDetector, mirror_boxes, nms_union_of_proposals
from detection.testtime.pyramid import MultiScaleDetector

IMPROVEMENTS = ("box_refinement", "box_voting", "global_context")
COMBINATIONS = [dict(zip(IMPROVEMENTS, bits)) for bits in itertools.product([False, True], repeat=3)]
PYRAMID = [48, 64, 96]


def tiny_config(**switches):
    overrides = [
        "num_classes=3", "model.backbone.depth=18", "model.backbone.base_width=8", "model.backbone.weights=none",
        "model.anchors.sizes=[16,32,64]", "model.rpn.pre_nms_top_n_test=100", "model.rpn.post_nms_top_n_test=20",
        "model.roi_heads.score_thresh=0.0", "input.test_min_size=64", "input.test_max_size=96",
    ]
    overrides += [f"model.roi_heads.{k}={str(v).lower()}" for k, v in switches.items() if k in IMPROVEMENTS]
    overrides += [f"{k}={v}" for k, v in switches.items() if k not in IMPROVEMENTS]
    return load_config(None, overrides)


def build(cfg, seed=0):
    torch.manual_seed(seed)
    return build_detector(cfg).eval()


def images():
    g = torch.Generator().manual_seed(2)
    return [torch.rand(3, 64, 80, generator=g), torch.rand(3, 72, 64, generator=g)]


def assert_same(a_list, b_list):
    for a, b in zip(a_list, b_list):
        assert len(a["boxes"]) > 0
        for key in ("boxes", "scores", "labels"):
            assert torch.equal(a[key], b[key]), key


def test_mirror_boxes_hand_made_and_an_involution_on_whole_pixels():
    boxes = torch.tensor([[0.0, 1.0, 10.0, 5.0], [3.0, 0.0, 80.0, 9.0]])
    assert mirror_boxes(boxes, 80).tolist() == [[70.0, 1.0, 80.0, 5.0], [0.0, 0.0, 77.0, 9.0]]
    class_boxes = torch.rand(6, 3, 4) * 80
    assert torch.equal(mirror_boxes(mirror_boxes(boxes, 80), 80), boxes)
    assert mirror_boxes(class_boxes, 80).shape == (6, 3, 4)


def test_nms_over_the_union_of_proposals_hand_made():
    a, a_scores = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]]), torch.tensor([0.9, 0.5])
    # [1, 0, 11, 10] overlaps a[0] by IoU 90/110 = 0.82; [20, 20, 30, 31] overlaps a[1] by 100/110 = 0.91.
    b, b_scores = torch.tensor([[1.0, 0, 11, 10], [20, 20, 30, 31], [50, 50, 60, 60]]), torch.tensor([0.8, 0.7, 0.6])
    union = nms_union_of_proposals([a, b], [a_scores, b_scores], 0.7, keep=10)
    assert union.tolist() == [[0, 0, 10, 10], [20, 20, 30, 31], [50, 50, 60, 60]]  # by objectness, across sets
    assert nms_union_of_proposals([a, b], [a_scores, b_scores], 0.95, keep=2).tolist() == [[0, 0, 10, 10],
                                                                                           [1, 0, 11, 10]]
    # A set with itself (an ensemble of copies): the set, in its order; repeats tie and fall behind the first.
    assert torch.equal(nms_union_of_proposals([a, a, a], [a_scores] * 3, 0.7, keep=10), a)
    assert nms_union_of_proposals([a[:0], a[:0]], [a_scores[:0]] * 2, 0.7, keep=10).shape == (0, 4)


@pytest.mark.parametrize("switches", [COMBINATIONS[0], COMBINATIONS[4], COMBINATIONS[-1]])  # none, refinement, all
def test_ensemble_of_one_model_or_of_its_copies_is_that_model(switches):
    model = build(tiny_config(**switches))
    with torch.inference_mode():
        single = model(images())
        assert_same(single, EnsembleDetector([model])(images()))
        assert_same(single, EnsembleDetector([model, copy.deepcopy(model), model])(images()))


def test_ensemble_of_one_model_with_the_pyramid_is_the_pyramid():
    cfg = tiny_config(box_refinement=True, box_voting=True, global_context=True)
    model = build(cfg)
    pyramid = MultiScaleDetector(model, min_sizes=PYRAMID, max_size=2000)
    ensemble = EnsembleDetector([model, copy.deepcopy(model)], pyramid_min_sizes=PYRAMID, pyramid_max_size=2000)
    with torch.inference_mode():
        assert_same(pyramid(images()), ensemble(images()))


def test_ensemble_scores_the_union_of_proposals_with_the_mean_of_every_model(monkeypatch):
    cfg = tiny_config()
    models = [build(cfg, seed) for seed in (0, 1, 2)]
    ensemble = EnsembleDetector(models)
    seen = {}
    real_detect = models[0].roi_heads.detect

    def spy(scorer, proposals):
        seen["scorer"], seen["proposals"] = scorer, proposals
        return real_detect(scorer, proposals)

    monkeypatch.setattr(models[0].roi_heads, "detect", spy)
    with torch.inference_mode():
        ensemble(images())
        batches = [m.transform(images()) for m in models]
        features = [m.trunk(b.tensor) for m, b in zip(models, batches)]
        own = [m.rpn.propose(f, b.image_sizes) for m, f, b in zip(models, features, batches)]
        union = seen["proposals"]
        for i in range(len(images())):
            boxes_i, scores_i = [p[0][i] for p in own], [p[1][i] for p in own]
            assert torch.equal(union[i], nms_union_of_proposals(boxes_i, scores_i, 0.7, keep=20))
            assert len(union[i]) == 20  # as many as one RPN proposes (post_nms_top_n_test), from all three
            assert not all(any(torch.equal(u, p) for p in boxes_i[0]) for u in union[i])  # not only model 0's
        probs, boxes = seen["scorer"](union)
        each = [m.roi_heads.score(f, union, b.image_sizes) for m, f, b in zip(models, features, batches)]
    for i in range(len(images())):
        assert torch.allclose(probs[i], sum(e[0][i] for e in each) / 3, atol=1e-6)
        assert torch.allclose(boxes[i], sum(e[1][i] for e in each) / 3, atol=1e-4)


def test_flip_unmirrors_exactly_on_a_mirror_symmetric_image():
    half = torch.rand(3, 64, 40, generator=torch.Generator().manual_seed(3))
    symmetric = [torch.cat((half, half.flip(-1)), dim=-1)]
    model = build(tiny_config())
    with torch.inference_mode():
        plain, mirrored = EnsembleDetector([model], flip=True).views(symmetric)
        (width,) = [w for _, w in plain.image_sizes]
        # The mirrored images are the images: the flipped view is the plain view seen in a mirror, exactly.
        assert torch.equal(mirrored.proposals[0], mirror_boxes(plain.proposals[0], width))
        boxes = [plain.proposals[0]]
        probs, class_boxes = mirrored.score(boxes)
        plain_probs, plain_boxes = plain.score([mirror_boxes(boxes[0], width)])
    assert torch.equal(probs[0], plain_probs[0])
    assert torch.equal(class_boxes[0], mirror_boxes(plain_boxes[0], width))


def test_flip_testing_proposes_and_scores_mirror_invariantly(monkeypatch):
    """Flip testing of the mirrored images hands ``roi_heads.detect`` the mirror of what flip testing of the images
    does: the same proposals mirrored and a scorer whose probabilities agree, class boxes mirrored. (The detections
    themselves are not compared: with random weights many RoIs tie in score, and NMS breaks ties by input order.)"""
    model = build(tiny_config())
    tester = EnsembleDetector([model], pyramid_min_sizes=PYRAMID, flip=True)
    calls = []
    real_detect = model.roi_heads.detect
    monkeypatch.setattr(model.roi_heads, "detect", lambda f, p: calls.append((f, p)) or real_detect(f, p))
    with torch.inference_mode():
        tester(images())
        tester([i.flip(-1) for i in images()])
        (scorer, proposals), (scorer_m, proposals_m) = calls
        widths = [i.shape[-1] for i in images()]
        for p, p_m, w in zip(proposals, proposals_m, widths):
            assert len(p) == len(p_m) > 0
            distance = (p[:, None, :] - mirror_boxes(p_m, w)[None]).abs().amax(dim=2)
            assert distance.amin(dim=1).max() < 1e-4  # every proposal has its mirror image in the other set
        probs, boxes = scorer(proposals)
        probs_m, boxes_m = scorer_m([mirror_boxes(p, w) for p, w in zip(proposals, widths)])
    for a, b in zip(probs, probs_m):
        assert torch.allclose(a, b, atol=1e-6)
    for a, b, w in zip(boxes, boxes_m, widths):
        assert torch.allclose(a, mirror_boxes(b, w), atol=1e-4)


def test_flip_ensemble_and_pyramid_compose():
    cfg = tiny_config(box_refinement=True, **{"test.flip": "true", "test.pyramid_min_sizes": "[48,64,96]"})
    tester = build_test_detector([build(cfg, 0), build(cfg, 1)], cfg)
    assert isinstance(tester, EnsembleDetector) and tester.pyramid_min_sizes == PYRAMID
    with torch.inference_mode():
        assert len(tester.views(images())) == 4  # two models, each on the images and their mirror
        out = tester(images())
    for det, image in zip(out, images()):
        assert len(det["boxes"]) > 0 and torch.isfinite(det["boxes"]).all()
        assert (det["boxes"][:, 2] <= image.shape[2] + 1e-3).all()


def test_build_test_detector_keeps_a_single_model_plain():
    cfg = tiny_config()
    model = build(cfg)
    assert build_test_detector(model, cfg) is model
    assert build_test_detector([model], cfg) is model


def test_members_must_agree_on_classes_and_be_in_eval_mode():
    cfg = tiny_config()
    other = build(load_config(None, ["num_classes=4", "model.backbone.depth=18", "model.backbone.base_width=8",
                                     "model.backbone.weights=none"]))
    with pytest.raises(ValueError, match="classes"):
        EnsembleDetector([build(cfg), other])
    with pytest.raises(RuntimeError, match="eval"):
        EnsembleDetector([build(cfg).train()])(images())


def test_the_union_nms_is_configurable_and_the_rpns_by_default():
    cfg = tiny_config(**{"test.ensemble_nms_thresh": 0.5, "test.ensemble_proposals": 7})
    models = [build(cfg, 0), build(cfg, 1)]
    default = EnsembleDetector(models)
    assert (default.proposal_nms_thresh, default.proposals_per_image) == (0.7, 20)  # model.rpn.nms_thresh, test
    tester = build_test_detector(models, cfg)
    assert (tester.proposal_nms_thresh, tester.proposals_per_image) == (0.5, 7)
    assert "proposals_per_image=7" in repr(tester)
    seen = []
    real_detect = models[0].roi_heads.detect
    models[0].roi_heads.detect = lambda f, p: seen.append(p) or real_detect(f, p)
    with torch.inference_mode():
        tester(images())
    for proposals in seen[0]:
        assert len(proposals) == 7
        iou = torchvision.ops.box_iou(proposals, proposals) - torch.eye(7)
        assert iou.max() <= 0.5
