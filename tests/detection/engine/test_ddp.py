"""DistributedDataParallel over 2 gloo processes takes the same SGD step as one process on the combined batch."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import torch

WORKER = Path(__file__).with_name("ddp_step_worker.py")
ROOT = Path(__file__).resolve().parents[3]


def load_worker() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ddp_step_worker", WORKER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_two_gloo_workers_take_the_same_step_as_one_process_on_the_combined_batch(tmp_path: Path) -> None:
    out = tmp_path / "ddp.pt"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(WORKER),
           str(out)]  # fmt: skip
    # This checkout on the path: the worker must not import an installed copy of the package from elsewhere.
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    ddp = torch.load(out, weights_only=True)

    worker = load_worker()
    images, targets = worker.make_batch()
    trainer = worker.make_trainer(tmp_path / "single")
    before = {k: p.detach().clone() for k, p in trainer.model.named_parameters()}
    assert trainer.step(images, targets) is not None
    single = worker.trained_state(trainer)

    assert ddp["grads"].keys() == single["grads"].keys() and len(single["grads"]) > 20
    for name, grad in single["grads"].items():
        scale = grad.abs().max().item()
        assert (ddp["grads"][name] - grad).abs().max().item() <= 1e-5 * max(scale, 1e-3), name
    biggest_update = 0.0
    for name, param in single["params"].items():
        assert (ddp["params"][name] - param).abs().max().item() <= 1e-5, name
        biggest_update = max(biggest_update, (param - before[name]).abs().max().item())
    assert biggest_update > 1e-2  # the step is far larger than the tolerance: the comparison means something
    # Every trainable part learned: RPN, conv4_x trunk, conv5 head, classifier and box regressor.
    for prefix in ("rpn.", "trunk.body.layer3.", "roi_heads.box_head.head.", "roi_heads.predictor."):
        moved = [not torch.equal(single["params"][k], before[k]) for k in before if k.startswith(prefix)]
        assert moved and all(moved), prefix
