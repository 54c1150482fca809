"""tools/test_det.py's result files: written atomically (a full disk is one line naming the file, nothing partial
under its name), tied to their model (``metrics.json`` records each checkpoint's path and sha256 and the config
hash), and a new run into a folder holding another run's results removes them before it starts."""

from __future__ import annotations

import errno
import hashlib
import json
import os
from pathlib import Path

import pytest

from detection.engine.run_dir import config_hash
from detection.files import ResultWriteError, write_json
from tests.tools.test_test_det import checkpoint, load_main, run
from tests.tools.test_test_det import shapes_root as shapes_root  # noqa: F401 - the module-scoped fixture


def test_write_json_is_atomic_and_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_json(tmp_path / "m.json", {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1}

    def full_disk(_: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("detection.files.os.fsync", full_disk)
    with pytest.raises(ResultWriteError, match=f"cannot write {path}: No space left on device"):
        write_json(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 1}  # the previous file intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]  # no temporary left


def test_full_disk_while_writing_results_is_one_line_naming_the_file(
    tmp_path: Path, shapes_root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]  # noqa: F811
) -> None:
    weights = checkpoint(tmp_path / "a.pth")

    def full_disk(_: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("detection.files.os.fsync", full_disk)
    out = tmp_path / "out"
    assert run(load_main(), shapes_root, out, [weights]) == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error == f"error: cannot write {out / 'coco_results_val.json'}: No space left on device"
    assert not [p.name for p in out.iterdir() if p.name != "log.txt"]  # no truncated JSON, no temporary


def test_metrics_name_their_model_and_a_reused_folder_is_cleared(
    tmp_path: Path, shapes_root: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture  # noqa: F811
) -> None:
    first, second = checkpoint(tmp_path / "a.pth"), checkpoint(tmp_path / "b.pth", seed=1)
    out = tmp_path / "out"
    assert run(load_main(), shapes_root, out, [first]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    import torch

    stored = torch.load(first, weights_only=True)["config"]
    assert metrics["provenance"] == {
        "weights": [{"path": str(first), "sha256": hashlib.sha256(first.read_bytes()).hexdigest()}],
        "config_hash": config_hash(stored)}
    assert (out / "coco_results_val.json").is_file()

    def killed(*_: object, **__: object) -> None:
        raise KeyboardInterrupt  # the second run dies during inference, before writing anything

    monkeypatch.setattr("detection.engine.run.run_inference", killed)
    assert run(load_main(), shapes_root, out, [second]) == 130
    left = sorted(p.name for p in out.iterdir())
    assert left == ["log.txt"]  # the first model's results and metrics are gone, not passed off as the second's
    assert any("held 2 result file(s) of the model " + str(first) in r.getMessage() for r in caplog.records)
