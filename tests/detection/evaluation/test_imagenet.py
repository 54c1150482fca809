"""ImageNet DET (eval_detection.m) and CLS-LOC (eval_clsloc.m): hand cases, a reference, files, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from detection.evaluation.imagenet_det import (
    det_threshold,
    evaluate_det_files,
    imagenet_det_eval,
    write_det_results,
)
from detection.evaluation.imagenet_loc import (
    imagenet_loc_eval,
    read_loc_predictions,
    write_loc_predictions,
)
from detection.evaluation.voc import EvaluationInputError, voc_ap

BIG = (1.0, 1.0, 100.0, 100.0)  # 100 x 100 with +1: threshold 0.5


def ap_of(dets, gt, classes=("a",), blacklist=()):
    return imagenet_det_eval(dets, gt, list(classes), blacklist).ap


def test_small_object_threshold() -> None:
    small = (1.0, 1.0, 10.0, 10.0)  # 10 x 10 → 100 / 400
    assert det_threshold(small) == 0.25
    assert det_threshold(BIG) == 0.5
    gt = {1: [("a", small)]}
    assert ap_of([(1, "a", 0.9, (1.0, 1.0, 30.0, 10.0))], gt)["a"] == 1.0  # IoU 1/3 ≥ 0.25
    assert ap_of([(1, "a", 0.9, (1.0, 1.0, 50.0, 10.0))], gt)["a"] == 0.0  # IoU 0.2


def test_iou_at_threshold_counts() -> None:
    # IoU exactly 0.5: ILSVRC uses ≥ (a VOC test asserts the opposite).
    assert ap_of([(1, "a", 0.9, (1.0, 1.0, 200.0, 100.0))], {1: [("a", BIG)]})["a"] == 1.0


def test_second_detection_may_take_another_gt() -> None:
    other = (31.0, 1.0, 130.0, 100.0)  # IoU with BIG: 7000 / 13000 ≥ 0.5
    dets = [(1, "a", 0.9, BIG), (1, "a", 0.8, BIG)]
    assert ap_of(dets, {1: [("a", BIG), ("a", other)]})["a"] == 1.0


def test_blacklist_skips_detections_and_positives() -> None:
    gt = {1: [("a", BIG)], 2: [("a", BIG)]}
    dets = [(2, "a", 0.9, (300.0, 300.0, 350.0, 350.0)), (1, "a", 0.8, BIG)]
    assert ap_of(dets, gt)["a"] == pytest.approx(0.25)  # FP then TP, npos 2
    result = imagenet_det_eval(dets, gt, ["a"], blacklist=[(2, "a")])
    assert result.npos["a"] == 1 and result.ap["a"] == 1.0


def test_ties_follow_image_order_and_empty_cases() -> None:
    dets = [(2, "a", 0.5, BIG), (1, "a", 0.5, (300.0, 300.0, 350.0, 350.0))]
    assert ap_of(dets, {1: [], 2: [("a", BIG)]})["a"] == 0.5  # image 1's FP comes first
    assert ap_of(dets, {2: [("a", BIG)], 1: []})["a"] == 1.0
    result = imagenet_det_eval(dets, {1: [], 2: [("a", BIG), ("b", BIG)]}, ["a", "b"])
    assert result.ap["b"] == 0.0 and result.mAP == 0.25
    with pytest.raises(EvaluationInputError, match="image 3"):
        imagenet_det_eval([(3, "a", 0.5, BIG)], {1: []}, ["a"])


def reference_eval_detection(dets, gt, classes, blacklist):
    """eval_detection.m transcribed with explicit loops (per-image matching, then per-class AP)."""
    tp_all, conf_all, lab_all = [], [], []
    for img in gt:
        mine = sorted([d for d in dets if d[0] == img], key=lambda d: -d[2])
        detected = [False] * len(gt[img])
        for _, c, conf, bb in mine:
            if (img, c) in blacklist:
                continue
            ovmax, kmax = -np.inf, -1
            for k, (gc, g) in enumerate(gt[img]):
                if gc != c or detected[k]:
                    continue
                iw = min(bb[2], g[2]) - max(bb[0], g[0]) + 1
                ih = min(bb[3], g[3]) - max(bb[1], g[1]) + 1
                if iw > 0 and ih > 0:
                    ua = (
                        (bb[2] - bb[0] + 1) * (bb[3] - bb[1] + 1)
                        + (g[2] - g[0] + 1) * (g[3] - g[1] + 1)
                        - iw * ih
                    )
                    ov = iw * ih / ua
                    w, h = g[2] - g[0] + 1, g[3] - g[1] + 1
                    thr = min(0.5, w * h / ((w + 10) * (h + 10)))
                    if ov >= thr and ov > ovmax:
                        ovmax, kmax = ov, k
            if kmax >= 0:
                detected[kmax] = True
            tp_all.append(float(kmax >= 0))
            conf_all.append(conf)
            lab_all.append(c)
    aps = {}
    for c in classes:
        idx = [i for i, lab in enumerate(lab_all) if lab == c]
        idx = [idx[j] for j in np.argsort([-conf_all[i] for i in idx], kind="stable")]
        tp = np.cumsum([tp_all[i] for i in idx])
        fp = np.cumsum([1 - tp_all[i] for i in idx])
        npos = sum(1 for img in gt for gc, _ in gt[img] if gc == c and (img, c) not in blacklist)
        aps[c] = voc_ap(tp / npos, tp / np.maximum(tp + fp, np.finfo(float).eps), False) if npos else 0.0
    return aps


def test_random_agreement_with_reference() -> None:
    rng = np.random.default_rng(0)
    classes = ["a", "b", "c"]
    for _ in range(60):
        gt, dets = {}, []
        for img in range(1, 9):
            gt[img] = []
            for _ in range(rng.integers(0, 4)):
                x, y = rng.integers(1, 80, size=2)
                w, h = rng.choice([6, 12, 40], size=2)
                gt[img].append((str(rng.choice(classes)), (float(x), float(y), float(x + w), float(y + h))))
            for c, box in gt[img]:
                for _ in range(rng.integers(0, 3)):
                    jittered = tuple(float(v) for v in np.add(box, rng.integers(-5, 6, size=4)))
                    dets.append((img, c, float(rng.integers(0, 5)) / 4, jittered))
            dets.append((img, str(rng.choice(classes)), float(rng.random()), (10.0, 10.0, 50.0, 50.0)))
        blacklist = {(int(rng.integers(1, 9)), str(rng.choice(classes)))}
        ours = imagenet_det_eval(dets, gt, classes, blacklist).ap
        ref = reference_eval_detection(dets, gt, classes, blacklist)
        for c in classes:
            assert ours[c] == pytest.approx(ref[c], abs=1e-9)


@pytest.fixture
def ilsvrc_root(tmp_path: Path, write_xml) -> Path:
    root = tmp_path / "ILSVRC"
    (root / "devkit" / "data").mkdir(parents=True)
    (root / "devkit" / "data" / "map_det.txt").write_text("n01 1 cat\nn02 2 dog\nn03 3 traffic light\n")
    (root / "ImageSets" / "DET").mkdir(parents=True)
    names = [f"ILSVRC2013_val_{i:08d}" for i in range(1, 5)]
    (root / "ImageSets" / "DET" / "val.txt").write_text("".join(f"{n} {i}\n" for i, n in enumerate(names, 1)))
    objects = [[("n01", BIG)], [("n02", BIG), ("n01", (1, 1, 10, 10))], [], [("n03", (50, 50, 90, 70))]]
    for n, objs in zip(names, objects):
        write_xml(root / "Annotations" / "DET" / "val" / f"{n}.xml", objs)
    for i in range(1, 4):
        write_xml(
            root / "Annotations" / "CLS-LOC" / "val" / f"ILSVRC2012_val_{i:08d}.xml", objects[i - 1][:1]
        )
    return root


def test_det_files_round_trip_and_cli(ilsvrc_root: Path, tmp_path: Path, load_tool, capsys) -> None:
    dets = [
        (1, "n01", 0.9, BIG),
        (2, "n01", 0.8, (1.0, 1.0, 25.0, 10.0)),
        (3, "n02", 0.7, BIG),
        (4, "n03", 0.6, (50.0, 50.0, 90.0, 70.0)),
    ]
    results = tmp_path / "dets.txt"
    write_det_results(results, dets, {"n01": 1, "n02": 2, "n03": 3})
    from_files = evaluate_det_files(ilsvrc_root, "val", results)
    gt = {
        1: [("n01", BIG)],
        2: [("n02", BIG), ("n01", (1, 1, 10, 10))],
        3: [],
        4: [("n03", (50, 50, 90, 70))],
    }
    assert from_files.ap == imagenet_det_eval(dets, gt, ["n01", "n02", "n03"]).ap
    assert from_files.ap == {"n01": 1.0, "n02": 0.0, "n03": 1.0}
    blacklist = tmp_path / "blacklist.txt"
    blacklist.write_text("2 n02\n")
    out = tmp_path / "det.json"
    argv = ["det", "--data-root", str(ilsvrc_root), "--results", str(results), "--json", str(out)]
    assert load_tool("eval_imagenet").main([*argv, "--blacklist", str(blacklist)]) == 0
    assert json.loads(out.read_text()) == {"mAP": 2 / 3, "ap": {"n01": 1.0, "n02": 0.0, "n03": 1.0}}
    assert "n03 traffic light" in capsys.readouterr().out
    results.write_text("1 1 0.9 1 1 100 100\n5 1 0.9 1 1 100 100\n")
    assert load_tool("eval_imagenet").main(argv) == 2
    assert "dets.txt:2: " in capsys.readouterr().err


def test_loc_hand_cases() -> None:
    gt = {"i1": [("a", BIG)], "i2": [("a", BIG)], "i3": [("b", BIG)], "i4": [("a", BIG)]}
    far = (300.0, 300.0, 400.0, 400.0)
    preds = {
        "i1": [("b", BIG), ("a", BIG)],  # right only at the second guess
        "i2": [("a", far)],  # right class, wrong box
        "i3": [("b", (1.0, 1.0, 200.0, 100.0))],  # IoU exactly 0.5 counts
        # i4 has no predictions: wrong everywhere
    }
    r = imagenet_loc_eval(preds, gt)
    assert r.to_dict() == {
        "top1_loc_error": 0.75,
        "top5_loc_error": 0.5,
        "top1_cls_error": 0.5,
        "top5_cls_error": 0.25,
    }
    assert r.num_missing == 1
    six = {"i1": [("b", far)] * 5 + [("a", BIG)]}  # the sixth guess is dropped
    assert imagenet_loc_eval(six, {"i1": [("a", BIG)]}).topk_loc_error == 1.0
    r = imagenet_loc_eval(preds, gt, blacklist=["i4"], gt_class=True)
    assert r.num_images == 3 and r.topk_loc_error == pytest.approx(1 / 3)
    assert r.gt_class_loc_error == pytest.approx(1 / 3)  # i1 judged on its 'a' box, i2 wrong box
    assert imagenet_loc_eval(preds, gt, top_k=1).to_dict()["top1_loc_error"] == 0.75


def test_loc_files_and_cli(ilsvrc_root: Path, tmp_path: Path, load_tool) -> None:
    preds = {
        "ILSVRC2012_val_00000001": [("n02", BIG), ("n01", BIG)],
        "ILSVRC2012_val_00000002": [("n02", BIG)],
    }
    csv_path = tmp_path / "loc.csv"
    write_loc_predictions(csv_path, preds)
    assert read_loc_predictions(csv_path) == preds
    out = tmp_path / "loc.json"
    argv = ["loc", "--data-root", str(ilsvrc_root), "--results", str(csv_path), "--json", str(out)]
    assert load_tool("eval_imagenet").main([*argv, "--gt-class"]) == 0
    numbers = json.loads(out.read_text())
    # image 3 has no objects in CLS-LOC here and no predictions: it counts as wrong.
    assert numbers == {
        "top1_loc_error": 2 / 3,
        "top5_loc_error": 1 / 3,
        "top1_cls_error": 2 / 3,
        "top5_cls_error": 1 / 3,
        "gt_class_loc_error": 1 / 3,
    }
    csv_path.write_text("ImageId,PredictionString\nILSVRC2012_val_00000001,n01 1 1 100\n")
    with pytest.raises(EvaluationInputError, match=r"loc\.csv:2: .*multiple of 5"):
        read_loc_predictions(csv_path)
    csv_path.write_text("ImageId,PredictionString\nILSVRC2012_val_00000009,n01 1 1 100 100\n")
    assert load_tool("eval_imagenet").main(argv) == 2
