"""Checkpoints: atomic writes, weights_only reads with clear errors, corrupt-file fallback, RNG round trip,
rotation of a run's numbered checkpoints."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from backbones.checkpoint import (
    CheckpointError,
    CheckpointRotation,
    get_rng_state,
    latest_good_checkpoint,
    load_checkpoint,
    save_checkpoint,
    set_rng_state,
)


def test_round_trip_with_rng_under_weights_only(tmp_path: Path) -> None:
    state = {
        "model": {"w": torch.arange(3.0)},
        "iteration": 7,
        "config": {"lr": 0.1, "steps": [1, 2]},
        "classes": ["cat", "dog"],
        "rng": get_rng_state(),
    }
    path = save_checkpoint(tmp_path / "sub" / "model_0000007.pth", state)
    # Plain torch.load with weights_only=True must accept everything in it.
    loaded = torch.load(path, weights_only=True)
    assert loaded["iteration"] == 7 and loaded["classes"] == ["cat", "dog"] and loaded["config"]["steps"] == [1, 2]
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.arange(3.0))
    assert [p.name for p in path.parent.iterdir()] == ["model_0000007.pth"]  # no temporary left behind


def test_rng_state_restores_python_numpy_torch(tmp_path: Path) -> None:
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.standard_normal()  # leaves a cached gaussian in numpy's state
    save_checkpoint(tmp_path / "c.pth", {"model": {}, "rng": get_rng_state()})
    first = (random.random(), np.random.standard_normal(3).tolist(), torch.rand(3).tolist())
    set_rng_state(load_checkpoint(tmp_path / "c.pth")["rng"])
    assert (random.random(), np.random.standard_normal(3).tolist(), torch.rand(3).tolist()) == first


def test_failed_write_keeps_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "model_final.pth"
    save_checkpoint(path, {"model": {"w": torch.ones(1)}})

    def crash(obj: object, f: object) -> None:
        f.write(b"partial")  # type: ignore[attr-defined]
        raise OSError("disk full (test)")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"model": {"w": torch.zeros(1)}})
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(1))
    assert [p.name for p in tmp_path.iterdir()] == ["model_final.pth"]


def test_truncated_and_garbage_files_give_checkpoint_error(tmp_path: Path) -> None:
    good = save_checkpoint(tmp_path / "good.pth", {"model": {"w": torch.randn(100)}})
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[:200])
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00not a checkpoint")
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    text = tmp_path / "text.pth"  # plain junk bytes once made the unpickler raise IndexError/KeyError
    text.write_bytes(b"junk bytes here")
    for path in (truncated, garbage, empty, text):
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(path)
        assert info.value.path == path and str(path) in str(info.value)
    state_dict_only = tmp_path / "sd.pth"
    torch.save({"w": torch.ones(1)}, state_dict_only)
    with pytest.raises(CheckpointError, match="'model'"):
        load_checkpoint(state_dict_only)


def test_latest_good_checkpoint_skips_corrupt_newest(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert latest_good_checkpoint(tmp_path) is None
    for iteration in (99, 999, 1999):
        save_checkpoint(tmp_path / f"model_{iteration:07d}.pth", {"model": {}, "iteration": iteration})
    newest = tmp_path / "model_0002999.pth"
    newest.write_bytes((tmp_path / "model_0001999.pth").read_bytes()[:100])  # killed mid-write
    (tmp_path / "notes.txt").write_text("ignored")
    with caplog.at_level(logging.WARNING, logger="backbones.checkpoint"):
        found = latest_good_checkpoint(tmp_path)
    assert found == tmp_path / "model_0001999.pth"  # numeric order, not lexicographic or mtime
    assert "model_0002999.pth" in caplog.text
    # An unnumbered export does not outrank the full iteration checkpoints; alone, it is used.
    save_checkpoint(tmp_path / "model_final.pth", {"model": {}})
    assert latest_good_checkpoint(tmp_path) == tmp_path / "model_0001999.pth"
    for numbered in tmp_path.glob("model_0*.pth"):
        numbered.unlink()
    assert latest_good_checkpoint(tmp_path) == tmp_path / "model_final.pth"


def test_rotation_keeps_the_newest_by_iteration_and_leaves_other_files(tmp_path: Path) -> None:
    rotation = CheckpointRotation(tmp_path, prefix="model", keep=2)
    save_checkpoint(tmp_path / "model_final.pth", {"model": {}})
    (tmp_path / "checkpoint_0000001.pth").write_bytes(b"another run's prefix")
    for iteration in (5, 10, 15, 10_000_000):  # the last needs 8 digits: name order would put it first
        path = rotation.save(iteration, {"model": {}, "iteration": iteration})
        assert path == rotation.path(iteration) and load_checkpoint(path)["iteration"] == iteration
    assert rotation.path(5).name == "model_0000005.pth"
    assert [p.name for p in rotation.numbered()] == ["model_0000015.pth", "model_10000000.pth"]
    assert (tmp_path / "model_final.pth").exists() and (tmp_path / "checkpoint_0000001.pth").exists()
    assert rotation.newest() == tmp_path / "model_10000000.pth"


def test_rotation_keep_zero_keeps_everything(tmp_path: Path) -> None:
    rotation = CheckpointRotation(tmp_path, prefix="checkpoint", keep=0)
    for iteration in range(1, 6):
        rotation.save(iteration, {"model": {}})
    assert len(rotation.numbered()) == 5


def test_rotation_newest_skips_corrupt_files_and_never_the_final_export(tmp_path: Path) -> None:
    rotation = CheckpointRotation(tmp_path, prefix="model", keep=3)
    assert rotation.newest() is None
    save_checkpoint(tmp_path / "model_final.pth", {"model": {}})
    assert rotation.newest() is None  # a weights-only export is not a resume point
    rotation.save(2, {"model": {}})
    rotation.path(4).write_bytes(rotation.path(2).read_bytes()[:100])  # truncated by a crash
    assert rotation.newest() == rotation.path(2)


def test_rotation_removes_only_its_partial_writes(tmp_path: Path) -> None:
    rotation = CheckpointRotation(tmp_path, prefix="model")
    kept = rotation.save(1, {"model": {}})
    partial = tmp_path / ".model_0000002.pth.tmp.4242"  # the name save_checkpoint writes to before the rename
    partial.write_bytes(b"half a file")
    foreign = tmp_path / ".checkpoint_0000002.pth.tmp.4242"
    foreign.write_bytes(b"another prefix")
    assert rotation.remove_partial_writes() == [partial]
    assert not partial.exists() and foreign.exists() and kept.exists()


@pytest.mark.parametrize(("model", "described"), [
    ([torch.zeros(1)], "a list"),
    ({"w": [1.0, 2.0]}, "a dict whose entry 'w' is list"),
])  # fmt: skip
def test_checkpoint_whose_model_is_not_a_state_dict_is_refused(tmp_path: Path, model: object, described: str) -> None:
    path = tmp_path / "odd.pth"
    torch.save({"model": model}, path)
    with pytest.raises(CheckpointError, match=f"its 'model' entry is not a state dict \\(names → tensors\\) but "
                                              f"{described}"):
        load_checkpoint(path)


def test_write_failure_names_the_file_and_the_os_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.save turns a failing write into RuntimeError("...unexpected pos..."); the cause is reported instead."""

    def full_disk(obj: object, f: object) -> None:
        try:
            raise OSError(28, "No space left on device")
        except OSError as exc:
            raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0") from exc

    monkeypatch.setattr(torch, "save", full_disk)
    path = tmp_path / "model_0000003.pth"
    with pytest.raises(OSError, match=f"^cannot write checkpoint {path}: No space left on device$"):
        save_checkpoint(path, {"model": {}})
    assert list(tmp_path.iterdir()) == []
