"""detection/engine/run_dir.py: the output folder check, the run lock (released by a crash), run identity."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from backbones.checkpoint import save_checkpoint
from detection.config import load_config
from detection.engine.run_dir import (
    RunDirError,
    RunLock,
    check_same_run,
    config_hash,
    prepare_output_dir,
    refuse_foreign_checkpoints,
)

ROOT = Path(__file__).resolve().parents[3]


def test_output_path_that_is_a_file_or_not_writable(tmp_path: Path) -> None:
    file = tmp_path / "out"
    file.write_text("x")
    with pytest.raises(RunDirError, match=f"output path {file} exists and is not a folder"):
        prepare_output_dir(file)
    with pytest.raises(RunDirError, match=f"cannot write to output folder {file / 'sub'}"):
        prepare_output_dir(file / "sub")  # its parent is a file
    assert prepare_output_dir(tmp_path / "a" / "b").is_dir()


def test_lock_is_exclusive_and_a_killed_holder_releases_it(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from detection.engine.run_dir import "
         "RunLock; lock = RunLock(Path(sys.argv[1])).acquire(); print('locked', flush=True); time.sleep(300)",
         str(tmp_path)],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirError, match=rf"another training run \(pid {holder.pid} on "):
            RunLock(tmp_path).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    assert (tmp_path / "train.lock").exists()  # the file stays; the kernel dropped the lock with the process
    with RunLock(tmp_path):
        assert f"pid {os.getpid()} " in (tmp_path / "train.lock").read_text()
    with RunLock(tmp_path):  # released on exit, so it can be taken again
        pass


def test_config_hash_ignores_loader_workers_and_logging_only() -> None:
    base = load_config().to_dict()
    assert config_hash(base) == config_hash(load_config(overrides=["data.num_workers=7"]).to_dict())
    wandb = load_config(overrides=["logging.wandb_project=det", "logging.wandb_run_name=r1"]).to_dict()
    assert config_hash(base) == config_hash(wandb)  # --resume may start reporting to Weights & Biases
    assert check_same_run(Path("m.pth"), base, wandb) is None
    assert config_hash(base) != config_hash(load_config(overrides=["seed=7"]).to_dict())
    assert len(config_hash(base)) == 16


def test_check_same_run_names_the_differences(tmp_path: Path) -> None:
    mine = load_config(overrides=["seed=7", "solver.max_iter=60"]).to_dict()
    old = load_config(overrides=["solver.max_iter=400"]).to_dict()
    assert check_same_run(tmp_path / "m.pth", dict(mine), mine) is None
    assert check_same_run(tmp_path / "m.pth", None, mine) is None  # nothing to compare with
    assert check_same_run(tmp_path / "m.pth", old, mine) == (
        f"{tmp_path / 'm.pth'} was written by a run with another config (seed 0 → 7, solver.max_iter 400 → 60)")
    older = {k: v for k, v in mine.items()}
    older["input"] = {k: v for k, v in mine["input"].items() if k != "max_image_pixels"}  # before that key existed
    assert check_same_run(tmp_path / "m.pth", older, mine) is None


def test_refuse_foreign_checkpoints(tmp_path: Path) -> None:
    refuse_foreign_checkpoints(tmp_path)  # empty: fine
    (tmp_path / "log.txt").write_text("")
    save_checkpoint(tmp_path / "model_final.pth", {"model": {}})
    refuse_foreign_checkpoints(tmp_path)  # only numbered checkpoints belong to a resumable run
    save_checkpoint(tmp_path / "model_0000200.pth", {"model": {}})
    with pytest.raises(RunDirError, match=r"holds checkpoints of another run \(model_0000200.pth\); use --resume"):
        refuse_foreign_checkpoints(tmp_path)
