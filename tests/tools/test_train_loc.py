"""End to end on a tiny generated CLS-LOC root: classifier, per-class RPN (with --resume), R-CNN stage, 1-crop and
dense testing; the CSVs read back by tools/eval_imagenet.py give the numbers test_loc reported."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

import eval_imagenet  # noqa: E402
import test_loc  # noqa: E402
import train_loc  # noqa: E402

from backbones.train import TrainConfig, train  # noqa: E402
from detection.localization.data import generate_cls_loc, read_cls_loc, write_imagefolder_view  # noqa: E402

TINY = ["num_classes=3", "net.arch=resnet18", "net.base_width=8", "input.crop=48", "input.scale_range=[56,64]",
        "input.resize=56", "input.dense_scales=[48,64]", "rpn.anchor_sizes=[16,32,64]", "solver.batch_size=4",
        "solver.steps=[3]", "solver.checkpoint_period=2", "solver.log_period=1", "rcnn.proposals=6",
        "rcnn.warp_size=32", "rcnn.context_pad=4", "rcnn_solver.batch_size=8", "rcnn_solver.max_iter=2",
        "rcnn_solver.steps=[]", "rcnn_solver.log_period=1", "test.classifier_mode=10crop", "workers=0"]  # fmt: skip


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Tiny nets: one thread does the work; on a shared machine a second costs an OpenMP barrier per op (this
    module took 25x longer with two threads on a busy 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("loc")
    root = generate_cls_loc(tmp / "data", num_classes=3, train_per_class=4, num_val=5, min_size=64, max_size=80)
    train(TrainConfig(dataset="imagefolder", data_root=str(write_imagefolder_view(root, tmp / "view")),
                      output_dir=str(tmp / "cls"), arch="resnet18", base_width=8, image_size=48, scale_range=(56, 64),
                      lighting=0.0, iters=2, batch_size=4, workers=0, progress=False))  # fmt: skip
    return root, tmp


def test_train_resume_test_and_score(pipeline: tuple[Path, Path]) -> None:
    root, tmp = pipeline
    flags = ["--data-root", str(root), "--no-progress"]
    overrides = [f"net.weights={tmp / 'cls' / 'model_final.pth'}", "solver.max_iter=4", *TINY]
    rpn_dir = tmp / "rpn"
    assert train_loc.main(["rpn", *flags, "--output-dir", str(rpn_dir), *overrides]) == 0
    assert (rpn_dir / "model_0000002.pth").is_file() and (rpn_dir / "model_final.pth").is_file()
    assert train_loc.main(["rpn", *flags, "--resume", "--output-dir", str(rpn_dir), *overrides]) == 0
    assert "at iteration 2" in (rpn_dir / "log.txt").read_text()
    rpn = str(rpn_dir / "model_final.pth")
    assert train_loc.main(["rcnn", *flags, "--weights", rpn, "--output-dir", str(tmp / "rcnn"), *overrides]) == 0
    assert (tmp / "rcnn" / "proposals.pth").is_file()

    out = tmp / "test"
    assert test_loc.main(["--data-root", str(root), "--weights", rpn, "--cls-weights",
                          str(tmp / "cls" / "model_final.pth"), "--rcnn-weights", str(tmp / "rcnn" / "model_final.pth"),
                          "--output-dir", str(out), "--no-progress"]) == 0  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"rpn_1crop", "rpn_dense", "rpn_rcnn_dense"}
    assert all((m["world_size"], m["images_per_rank"]) == (1, [5]) for m in metrics.values())

    # Two gloo ranks under torchrun: the same CSVs, byte for byte, and the same numbers.
    two = tmp / "test2"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ROOT / "tools" / "test_loc.py"), "--data-root", str(root), "--weights", rpn, "--cls-weights",
           str(tmp / "cls" / "model_final.pth"), "--rcnn-weights", str(tmp / "rcnn" / "model_final.pth"),
           "--output-dir", str(two), "--no-progress"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    sharded = json.loads((two / "metrics.json").read_text())
    for system, numbers in metrics.items():
        assert sharded[system] == {**numbers, "world_size": 2, "images_per_rank": [2, 3]}
        for kind in ("top5", "gt_class"):
            csv_name = f"{system}_{kind}.csv"
            assert (two / csv_name).read_text() == (out / csv_name).read_text(), csv_name
    val = read_cls_loc(root, "val")
    for system, numbers in metrics.items():
        numbers = {k: v for k, v in numbers.items() if k not in ("world_size", "images_per_rank")}
        scored = tmp / f"{system}.json"
        args = ["loc", "--data-root", str(root / "ILSVRC"), "--json", str(scored)]
        assert eval_imagenet.main([*args, "--results", str(out / f"{system}_top5.csv")]) == 0
        assert json.loads(scored.read_text())["top5_loc_error"] == numbers["top5_loc_error"]
        assert eval_imagenet.main([*args, "--results", str(out / f"{system}_gt_class.csv"), "--gt-class"]) == 0
        assert json.loads(scored.read_text())["gt_class_loc_error"] == numbers["gt_class_loc_error"]
        lines = (out / f"{system}_top5.csv").read_text().splitlines()
        assert lines[0] == "ImageId,PredictionString" and len(lines) == 1 + len(val.records)
        guesses = lines[1].split(",")[1].split()
        assert len(guesses) == 5 * 3 and guesses[0] in val.wnids  # 3 classes: top-5 holds all three


def test_rcnn_stage_needs_the_rpn(pipeline: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    root, tmp = pipeline
    assert train_loc.main(["rcnn", "--data-root", str(root), "--output-dir", str(tmp / "x")]) == 2
    assert "needs --weights (the trained per-class RPN)" in capsys.readouterr().err


# --- the one training loop's guarantees, for the localiser (as tests/tools/test_train_det_run_dir.py for detection)
def _rpn(pipeline: tuple[Path, Path], out: Path, *extra: str) -> int:
    root, tmp = pipeline
    return train_loc.main(["rpn", "--data-root", str(root), "--no-progress", "--output-dir", str(out), *extra,
                           f"net.weights={tmp / 'cls' / 'model_final.pth'}", "solver.max_iter=4", *TINY])  # fmt: skip


@pytest.fixture(scope="module")
def rpn_reference(pipeline: tuple[Path, Path]) -> Path:
    """An uninterrupted 4-iteration per-class RPN run in fp32."""
    out = pipeline[1] / "rpn_reference"
    assert _rpn(pipeline, out) == 0
    return out


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["model"]


def _without_timing(path: Path) -> list[dict]:
    timing = ("time", "data_time", "memory_mb", "eta_s")
    return [{k: v for k, v in json.loads(line).items() if k not in timing} for line in path.read_text().splitlines()]


def test_sigterm_saves_the_current_iteration_and_resume_is_exact(
    pipeline: tuple[Path, Path], rpn_reference: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """SIGTERM arrives during step 0 (as a scheduler sends it, mid-step): the step finishes, model_0000001.pth is
    written, exit code 143; --resume then reaches the uninterrupted run's weights and metrics.jsonl exactly."""
    from detection.localization.model import PerClassRPN

    original = PerClassRPN.losses
    calls = []

    def losses(self: PerClassRPN, *args: object) -> dict[str, torch.Tensor]:
        calls.append(1)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, *args)

    monkeypatch.setattr(PerClassRPN, "losses", losses)
    out = tmp_path / "rpn"
    handler = signal.getsignal(signal.SIGTERM)
    assert _rpn(pipeline, out) == 143
    assert signal.getsignal(signal.SIGTERM) is handler
    saved = out / "model_0000001.pth"
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"stopped: training stopped by SIGTERM at iteration 1 of 4; checkpoint {saved} saved; continue with --resume")
    assert torch.load(saved, weights_only=True)["iteration"] == 1 and not (out / "model_final.pth").exists()
    monkeypatch.setattr(PerClassRPN, "losses", original)

    assert _rpn(pipeline, out, "--resume") == 0
    assert f"resumed from {saved} at iteration 1" in (out / "log.txt").read_text()
    resumed, reference = _weights(out / "model_final.pth"), _weights(rpn_reference / "model_final.pth")
    assert resumed.keys() == reference.keys()
    for key in reference:
        assert torch.equal(resumed[key], reference[key]), key
    lines = _without_timing(out / "metrics.jsonl")
    assert [line["iteration"] for line in lines] == [1, 2, 3, 4]  # solver.log_period=1; cut back to 1, then on
    assert lines == _without_timing(rpn_reference / "metrics.jsonl")
    assert {"lr", "loss", "loss_cls", "loss_box"} <= set(lines[0])


def test_amp_trains_in_bfloat16_on_the_cpu(pipeline: tuple[Path, Path], rpn_reference: Path, tmp_path: Path) -> None:
    """--amp end to end: autocast really runs (the weights differ from fp32's) and they stay finite."""
    out = tmp_path / "amp"
    assert _rpn(pipeline, out, "--amp") == 0
    amp, fp32 = _weights(out / "model_final.pth"), _weights(rpn_reference / "model_final.pth")
    assert all(torch.isfinite(v).all() for v in amp.values() if v.is_floating_point())
    assert any(not torch.equal(amp[k], fp32[k]) for k in fp32 if fp32[k].is_floating_point())


def test_a_second_run_in_a_locked_folder_is_refused(
    pipeline: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from backbones.loop_guard import RunLock

    with RunLock(tmp_path):
        assert _rpn(pipeline, tmp_path) == 1
    assert "another training run" in capsys.readouterr().err
    assert not list(tmp_path.glob("model_*.pth"))
