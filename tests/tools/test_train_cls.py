"""tools/train_cls.py end to end, in-process: a tiny run learns, writes its outputs, and resumes exactly."""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

import backbones.train
from backbones import load_weights
from backbones.classify import build_classifier
from backbones.synthetic import write_cifar_batches, write_synthetic_cifar

ROOT = Path(__file__).resolve().parents[2]


def _tool(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_cifar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 classes told apart by colour and a bright quadrant, in the CIFAR-10 pickle layout."""
    rng = np.random.default_rng(0)

    def batch(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.arange(n) % 4
        images = rng.integers(0, 60, (n, 32, 32, 3)).astype(np.uint8)
        for i, lab in enumerate(labels):
            images[i, (lab // 2) * 16 : (lab // 2) * 16 + 16, (lab % 2) * 16 : (lab % 2) * 16 + 16, lab % 3] += 180
        return images, labels

    root = tmp_path_factory.mktemp("cifar") / "cifar-10-batches-py"
    batches = {f"data_batch_{i}": batch(16) for i in range(1, 6)} | {"test_batch": batch(16)}
    write_cifar_batches(root, batches, ["tl", "tr", "bl", "br"])
    return root.parent  # the loader also finds the cifar-10-batches-py/ subfolder


def _args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["--dataset", "cifar10", "--data-root", str(data), "--arch", "cifar_resnet8", "--batch-size", "16",
            "--workers", "0", "--output-dir", str(out), "--lr-steps", "30", *extra]  # fmt: skip


def test_tiny_training_run_lowers_loss(tiny_cifar: Path, tmp_path: Path) -> None:
    metrics = _tool("train_cls").main(_args(tiny_cifar, tmp_path, "--iters", "40", "--eval-every", "10"))
    losses = [h["train_loss"] for h in metrics["history"]]
    assert len(losses) == 4 and losses[-1] < 0.7 * losses[0], losses
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["final"]["top1_error"] == metrics["final"]["top1_error"] < 75.0  # chance is 75%
    assert [h["iteration"] for h in saved["history"]] == [10, 20, 30, 40]
    assert "iter      40/40  lr 0.01" in (tmp_path / "log.txt").read_text()
    # TensorBoard scalars as the detection trainer writes them: train/* every eval_every, val/* with validation.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert {"train/train_loss", "train/lr", "val/top1_error"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("train/train_loss")] == [10, 20, 30, 40]
    model = build_classifier("cifar_resnet8", num_classes=4)
    load_weights(model, tmp_path / "model_final.pth")  # strict: every key and shape matches

    result = _tool("eval_cls").main(["--arch", "cifar_resnet8", "--weights", str(tmp_path / "model_final.pth"),
                                     "--data-root", str(tiny_cifar), "--dataset", "cifar10", "--mode", "center",
                                     "--workers", "0", "--no-progress",
                                     "--json", str(tmp_path / "eval.json")])  # fmt: skip
    assert result["top1_error"] == pytest.approx(metrics["final"]["top1_error"])
    assert json.loads((tmp_path / "eval.json").read_text())["top1_error"] == result["top1_error"]


def test_resume_reaches_the_same_weights(tiny_cifar: Path, tmp_path: Path) -> None:
    common = ("--eval-every", "4", "--ckpt-every", "4")
    whole = _tool("train_cls").main(_args(tiny_cifar, tmp_path / "whole", "--iters", "12", *common))

    first = _tool("train_cls").main(_args(tiny_cifar, tmp_path / "parts", "--iters", "8", *common))
    assert first["final"]["iteration"] == 8
    good = (tmp_path / "parts" / "checkpoint_0000008.pth").read_bytes()
    (tmp_path / "parts" / "checkpoint_0000010.pth").write_bytes(good[: len(good) // 2])  # a crash mid-write
    partial = tmp_path / "parts" / ".checkpoint_0000010.pth.tmp.4242"  # a kill during save_checkpoint
    partial.write_bytes(good[:100])
    resumed = _tool("train_cls").main(_args(tiny_cifar, tmp_path / "parts", "--iters", "12", "--resume", *common))

    a = torch.load(tmp_path / "whole" / "model_final.pth", weights_only=True)["model"]
    b = torch.load(tmp_path / "parts" / "model_final.pth", weights_only=True)["model"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert resumed["history"] == whole["history"]
    log = (tmp_path / "parts" / "log.txt").read_text()
    assert "skipping unusable checkpoint" in log and "checkpoint_0000010.pth" in log
    assert f"resumed from {tmp_path / 'parts' / 'checkpoint_0000008.pth'} at iteration 8" in log
    assert not partial.exists()
    assert sorted(p.name for p in (tmp_path / "parts").glob("checkpoint_*.pth")) == [
        "checkpoint_0000008.pth", "checkpoint_0000010.pth", "checkpoint_0000012.pth"]  # the newest 3 by iteration


def test_synthetic_default_without_data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    small = functools.partial(write_synthetic_cifar, train_per_batch=20, test_size=20)
    monkeypatch.setattr(backbones.train, "write_synthetic_cifar", small)
    metrics = _tool("train_cls").main(["--output-dir", str(tmp_path), "--iters", "2", "--batch-size", "8",
                                       "--arch", "cifar_resnet8", "--workers", "0"])  # fmt: skip
    assert (tmp_path / "data" / "synthetic_cifar" / "data_batch_5").exists()
    assert metrics["config"]["dataset"] == "synthetic" and metrics["final"]["iteration"] == 2


def test_torchrun_two_ranks_on_cpu(tiny_cifar: Path, tmp_path: Path) -> None:
    """DistributedDataParallel over gloo: ranks split each batch, sum the eval counts, rank 0 writes."""
    # This checkout on the path: the tool must not import an installed copy of the package from elsewhere.
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(ROOT / "tools" / "train_cls.py"),
        *_args(tiny_cifar, tmp_path, "--iters", "4", "--eval-every", "2"),
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["config"]["world_size"] == 2
    assert [h["num_images"] for h in metrics["history"]] == [16, 16]  # the whole test batch, no duplicates
    assert done.stdout.count("final top-1 error") == 1  # only rank 0 reports
    load_weights(build_classifier("cifar_resnet8", num_classes=4), tmp_path / "model_final.pth")


def test_recipe_schedule_steps_warmup_and_plateau() -> None:
    from backbones.train import RecipeSchedule, TrainConfig

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = RecipeSchedule(opt, 0.1, [32_000, 48_000], warmup=True, window=3)
    assert sched.set_lr(0) == pytest.approx(0.01) and opt.param_groups[0]["lr"] == pytest.approx(0.01)
    for err in (90.0, 85.0, 70.0):  # mean 81.7%: still warming up
        sched.observe_train_error(err)
    assert sched.warming_up
    sched.observe_train_error(70.0)  # mean of the last 3: 75%
    assert not sched.warming_up and sched.lr_at(400) == pytest.approx(0.1)
    assert sched.lr_at(32_000) == pytest.approx(0.01) and sched.lr_at(48_000) == pytest.approx(0.001)

    plateau = RecipeSchedule(opt, 0.1, [], plateau_patience=2)
    for err in (50.0, 40.0, 41.0, 40.5):
        plateau.observe_eval_error(err)
    assert plateau.lr_at(10) == pytest.approx(0.01)
    restored = RecipeSchedule(opt, 0.1, [], plateau_patience=2)
    restored.load_state_dict(plateau.state_dict())
    assert restored.lr_at(10) == pytest.approx(0.01)

    cifar110 = TrainConfig(dataset="cifar10", arch="cifar_resnet110").resolve()
    assert cifar110.warmup and cifar110.lr_steps == [32_000, 48_000] and cifar110.iters == 64_000
    imagenet = TrainConfig(dataset="imagenet").resolve()
    assert (imagenet.batch_size, imagenet.lr, imagenet.weight_decay, imagenet.scale_range) == (
        256,
        0.1,
        1e-4,
        (256, 480),
    )


def test_sigterm_saves_the_current_iteration_and_resume_is_exact(
    tiny_cifar: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The one loop's preemption for the classifier: SIGTERM mid-step 2 → checkpoint_0000003.pth, then --resume
    reaches the uninterrupted run's weights, history and metrics.jsonl (timings aside)."""
    import signal

    from backbones.loop_guard import TrainingInterrupted

    common = ("--iters", "6", "--eval-every", "2", "--ckpt-every", "4")
    _tool("train_cls").main(_args(tiny_cifar, tmp_path / "whole", *common))
    original = backbones.train.ClassifierLoop.forward

    def forward(self: backbones.train.ClassifierLoop, *batch: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.state.iteration == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, *batch)

    monkeypatch.setattr(backbones.train.ClassifierLoop, "forward", forward)
    with pytest.raises(TrainingInterrupted, match=r"SIGTERM at iteration 3 of 6; checkpoint .*checkpoint_0000003"):
        _tool("train_cls").main(_args(tiny_cifar, tmp_path / "parts", *common))
    monkeypatch.setattr(backbones.train.ClassifierLoop, "forward", original)
    resumed = _tool("train_cls").main(_args(tiny_cifar, tmp_path / "parts", "--resume", *common))

    a = torch.load(tmp_path / "whole" / "model_final.pth", weights_only=True)["model"]
    b = torch.load(tmp_path / "parts" / "model_final.pth", weights_only=True)["model"]
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert resumed["history"] == json.loads((tmp_path / "whole" / "metrics.json").read_text())["history"]

    def lines(run: str) -> list[dict]:
        rows = [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in row.items() if k not in ("time", "data_time", "memory_mb", "eta_s")} for row in rows]

    assert lines("parts") == lines("whole")
    assert [row["iteration"] for row in lines("whole")] == [2, 4, 6, 6]  # evaluations at 2, 4, 6; the log line at 6
