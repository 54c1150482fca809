"""Two models used from two Python threads at once see nothing of each other: each gives, bit for bit, the
detections (and, for the training box heads, the gradients) it gives alone. The fast parts change no process-wide
state in a forward or backward (thread counts, global flags)."""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable

import pytest
import torch

import detection.fast.nms as fast_nms
from detection import build_detector, load_config
from detection.fast.nms import BlockedNMS
from detection.fast.optimize import optimize_for_inference, optimize_for_training
from detection.modeling.faster_rcnn import FasterRCNN

greedy_block = fast_nms._greedy_block


def model(*overrides: str) -> FasterRCNN:
    """R50-C4 of width 8 at 256 px: thousands of anchors, so the RPN's blocked NMS runs its block loop."""
    cfg = load_config(None, [
        "num_classes=3", "model.backbone.depth=50", "model.backbone.base_width=8", "model.backbone.weights=none",
        "model.rpn.pre_nms_top_n_test=4000", "model.rpn.post_nms_top_n_test=100", "model.roi_heads.score_thresh=0.0",
        "input.test_min_size=256", "input.test_max_size=320", *overrides,
    ])
    torch.manual_seed(0)
    built = build_detector(cfg)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in built.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.05, generator=g)
    return built


def images(seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(3, 256, 320, generator=g), torch.rand(3, 240, 320, generator=g)]


def run_together(jobs: list[Callable[[], object]], rounds: int = 2) -> list[list[object]]:
    """Each job ``rounds`` times in its own thread, all threads started together; their results per job."""
    results: list[list[object]] = [[] for _ in jobs]
    errors: list[BaseException] = []
    start = threading.Barrier(len(jobs))

    def work(i: int) -> None:
        try:
            start.wait()
            for _ in range(rounds):
                results[i].append(jobs[i]())
        except BaseException as exc:  # noqa: BLE001  (re-raised in the main thread)
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def assert_same(a: list[dict[str, torch.Tensor]], b: list[dict[str, torch.Tensor]]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def test_fast_and_plain_models_in_two_threads_detect_as_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    plain = model("model.roi_heads.pooler=roialign").eval()
    fast_pool = optimize_for_inference(model())
    fast_align = optimize_for_inference(copy.deepcopy(plain))
    assert isinstance(fast_pool.rpn.nms, BlockedNMS) and isinstance(fast_align.rpn.nms, BlockedNMS)
    jobs = []
    for m, seed in ((plain, 0), (fast_pool, 1), (fast_align, 2)):
        def job(m: FasterRCNN = m, seed: int = seed) -> list[dict[str, torch.Tensor]]:
            with torch.inference_mode():
                return m(images(seed))
        jobs.append(job)
    blocks = []
    monkeypatch.setattr(fast_nms, "_greedy_block", lambda *args: blocks.append(1) or greedy_block(*args))
    alone = [job() for job in jobs]
    assert all(len(d["boxes"]) > 0 for out in alone for d in out)
    assert blocks  # the blocked NMS ran its loop, not torchvision's kernel
    for expected, together in zip(alone, run_together(jobs)):
        for got in together:
            assert_same(got, expected)


def test_two_fast_box_heads_in_two_threads_give_their_gradients_alone() -> None:
    """Training's box heads: the commuted RoIAlign head sorts its taps in the backward
    (detection/fast/separable_align.py) and the factored RoIPool head gathers, in two threads at once; each gives
    the gradients it gives alone. (Whole training steps would race on the samplers' global random generator.)"""
    heads = [optimize_for_training(model(*overrides)).train().roi_heads.box_head
             for overrides in ((), ("model.roi_heads.pooler=roialign",))]
    g = torch.Generator().manual_seed(4)
    channels = heads[0].head.layer4[0].conv1.in_channels
    features = torch.randn(2, channels, 20, 26, generator=g).relu().contiguous(memory_format=torch.channels_last)
    xy = torch.rand(2, 60, 2, generator=g) * 380
    boxes = list(torch.cat((xy, xy + 8 + torch.rand(2, 60, 2, generator=g) * 150), dim=2))
    sizes = [(320, 416), (320, 416)]

    def step(head: torch.nn.Module) -> Callable[[], dict[str, torch.Tensor]]:
        def job() -> dict[str, torch.Tensor]:
            head.zero_grad(set_to_none=True)
            x = features.clone().requires_grad_()
            head(x, boxes, sizes).square().sum().backward()
            grads = {n: p.grad.clone() for n, p in head.named_parameters() if p.grad is not None}
            return {"features": x.grad, **grads}
        return job

    jobs = [step(head) for head in heads]
    alone = [job() for job in jobs]
    for expected, together in zip(alone, run_together(jobs)):
        assert len(expected) > 1
        for got in together:
            assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in expected)
