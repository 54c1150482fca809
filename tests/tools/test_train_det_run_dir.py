"""tools/train_det.py preempted (SIGTERM, Ctrl-C), pointed at a reused or unusable output folder, out of disk, or
given invalid config values: a checkpoint at the current iteration and an exact resume, or one error line and no
work done. Tiny generated shapes data and a ResNet-18 C4 of width 8, on the CPU (helpers in conftest.py)."""

from __future__ import annotations

import hashlib
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from backbones.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[2]


def assert_same_state(a: Path, b: Path) -> None:
    """Bit-identical model and optimizer state (and position in the data) in two checkpoints."""
    first, second = load_checkpoint(a), load_checkpoint(b)
    for key in ("iteration", "epoch", "batch_in_epoch"):
        assert first[key] == second[key], key
    assert first["model"].keys() == second["model"].keys()
    for name, tensor in first["model"].items():
        assert torch.equal(tensor, second["model"][name]), name
    for slot, state in first["optimizer"]["state"].items():
        assert torch.equal(state["momentum_buffer"], second["optimizer"]["state"][slot]["momentum_buffer"])


def error_line(done: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    return lines[-1] if lines else ""


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("model_*.pth"))}


@pytest.fixture(scope="module")
def reference(tiny_shapes: Path, tmp_path_factory: pytest.TempPathFactory, run_train) -> Path:
    """An uninterrupted 12-iteration run (checkpoints at 3, 6, 9, 12; 6, 9 and 12 kept), without evaluation."""
    out = tmp_path_factory.mktemp("reference") / "run"
    done = run_train(tiny_shapes, out, "--no-eval")
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.mark.parametrize(("action", "name", "code"), [("term", "SIGTERM", 143), ("int", "SIGINT", 130)])
def test_sigterm_and_ctrl_c_save_the_current_iteration_and_resume_exactly(
    tiny_shapes: Path, reference: Path, tmp_path: Path, run_train, action: str, name: str, code: int
) -> None:
    """The signal arrives during step 4 (0-based): that step finishes, ``model_0000005.pth`` is written atomically,
    the run exits with the shell's code for the signal and one line saying where to continue from. (The resume is
    checked once, after SIGTERM: both signals leave the same checkpoint.)"""
    out = tmp_path / "run"
    done = run_train(tiny_shapes, out, "--no-eval", fault=f"0:4:{action}")
    assert done.returncode == code, done.stderr[-3000:]
    saved = out / "model_0000005.pth"
    assert error_line(done) == (f"stopped: training stopped by {name} at iteration 5 of 12; checkpoint {saved} "
                                "saved; continue with --resume")
    assert load_checkpoint(saved)["iteration"] == 5
    assert not (out / "model_final.pth").exists()
    assert not list(out.glob(".model_*"))  # no half-written temporary
    if action == "int":
        return

    done = run_train(tiny_shapes, out, "--no-eval", "--resume")
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(r"resumed from .*model_0000005\.pth at iteration 5", done.stderr)
    assert_same_state(out / "model_0000012.pth", reference / "model_0000012.pth")


def test_new_run_into_another_runs_folder_is_refused_and_resume_checks_the_config(
    tiny_shapes: Path, reference: Path, tmp_path: Path, run_train
) -> None:
    """A shorter run with another seed into an old run's folder once pruned the old checkpoints by number and
    resumed from them; now it refuses, and ``--resume`` refuses another config unless ``--resume-anyway``."""
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    before = digest(out)

    done = run_train(tiny_shapes, out, "--no-eval", "seed=7", "solver.max_iter=2")
    assert done.returncode == 1
    assert error_line(done) == (
        f"error: {out} already holds checkpoints of another run (model_0000006.pth, model_0000009.pth, "
        "model_0000012.pth); use --resume to continue that run, or pass a new --output-dir")

    done = run_train(tiny_shapes, out, "--no-eval", "--resume", "seed=7", "solver.max_iter=14")
    assert done.returncode == 1
    assert error_line(done) == (
        f"error: --resume: {out / 'model_0000012.pth'} was written by a run with another config (seed 0 → 7, "
        "solver.max_iter 12 → 14); pass a new --output-dir, or --resume-anyway to continue it with this config")
    assert digest(out) == before  # nothing pruned, nothing overwritten

    done = run_train(tiny_shapes, out, "--no-eval", "--resume-anyway", "solver.max_iter=14")
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(r"--resume-anyway: .*another config \(solver\.max_iter 12 → 14\)", done.stderr)
    assert re.search(r"resumed from .*model_0000012\.pth at iteration 12", done.stderr)
    assert load_checkpoint(out / "model_0000014.pth")["iteration"] == 14


def test_resume_with_another_architecture_is_one_line(
    tiny_shapes: Path, reference: Path, tmp_path: Path, run_train
) -> None:
    """Plain ``--resume`` refuses it as another config (checked in the test above); forced with
    ``--resume-anyway``, the weights do not fit: one line, where there used to be 106 size-mismatch lines."""
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    done = run_train(tiny_shapes, out, "--no-eval", "--resume-anyway", "model.backbone.base_width=16")
    assert done.returncode == 1
    assert error_line(done).startswith(f"error: cannot load checkpoint {out / 'model_0000012.pth'}: its weights do "
                                       "not fit the configured model: ")
    assert len(done.stderr.splitlines()) < 20  # not one line per mismatching tensor


def test_a_second_run_in_a_locked_folder_is_refused_and_a_crashed_holder_leaves_no_lock(
    tiny_shapes: Path, tmp_path: Path, run_train
) -> None:
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; "
         "from detection.engine.run_dir import RunLock, prepare_output_dir; "
         "lock = RunLock(prepare_output_dir(Path(sys.argv[1]))).acquire(); print('locked', flush=True); "
         "time.sleep(300)",
         str(out)],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        done = run_train(tiny_shapes, out, "--no-eval", "solver.max_iter=1")
        assert done.returncode == 1
        assert re.fullmatch(rf"error: another training run \(pid {holder.pid} on \S+\) is using {re.escape(str(out))}; "
                            r"wait for it to finish or pass a new --output-dir", error_line(done))
    finally:
        holder.send_signal(signal.SIGKILL)  # a crash: no clean-up code runs
        holder.wait(timeout=30)
    done = run_train(tiny_shapes, out, "--no-eval", "solver.max_iter=1")
    assert done.returncode == 0, done.stderr[-3000:]
    assert (out / "model_final.pth").is_file()


def test_full_disk_while_saving_is_one_line_and_leaves_no_partial_file(
    tiny_shapes: Path, reference: Path, tmp_path: Path, run_train
) -> None:
    """Files may not grow past half a checkpoint (RLIMIT_FSIZE, the kernel's EFBIG: what a full disk looks like to
    the writer). torch.save used to report it as "unexpected pos"."""
    limit = (reference / "model_0000012.pth").stat().st_size // 2

    def small_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() then fails with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    out = tmp_path / "run"
    done = run_train(tiny_shapes, out, "--no-eval", preexec_fn=small_files)
    assert done.returncode == 1
    assert error_line(done) == f"error: cannot write checkpoint {out / 'model_0000003.pth'}: File too large"
    assert not list(out.glob("model_*.pth")) and not list(out.glob(".model_*"))


@pytest.mark.parametrize("kind", ["file", "read-only"])
def test_unusable_output_path_is_one_line_before_any_work(
    tiny_shapes: Path, tmp_path: Path, run_train, kind: str
) -> None:
    out = tmp_path / "out"
    if kind == "file":
        out.write_text("not a folder")
        expected = f"error: output path {out} exists and is not a folder; pass a folder to --output-dir"
    else:
        if os.geteuid() == 0:
            pytest.skip("root writes into read-only folders")
        out.mkdir()
        out.chmod(0o555)
        expected = f"error: cannot write to output folder {out}: Permission denied"
    done = run_train(tiny_shapes, out, "--no-eval")
    assert done.returncode == 1
    assert error_line(done) == expected


def test_invalid_config_values_are_one_line_naming_each_before_any_work(
    tiny_shapes: Path, tmp_path: Path, run_train
) -> None:
    """``max_iter=0`` used to exit 0 with an untrained model_final.pth; the others crashed mid-run or never ended."""
    out = tmp_path / "run"
    bad = ["solver.base_lr=-0.1", "solver.momentum=-0.5", "solver.ims_per_batch=0", "input.train_min_sizes=[]",
           "data.num_workers=-1", "solver.max_iter=0"]  # fmt: skip
    done = run_train(tiny_shapes, out, *bad)
    assert done.returncode == 2
    line = error_line(done)
    assert line.startswith("error: invalid config: ")
    for override in bad:
        assert override in line, override
    assert not out.exists()


def test_num_classes_mismatch_is_one_line(tiny_shapes: Path, tmp_path: Path, run_train) -> None:
    done = run_train(tiny_shapes, tmp_path / "run", "num_classes=3")
    assert done.returncode == 1  # a data problem (detection/engine/own_data.py check_classes), as in test_own_data
    assert error_line(done).startswith("error: the config says num_classes=3 but shapes train has 5 classes")
