"""tools/convert_weights.py: every failure is one ``error:`` line naming the input and the problem (exit code 1),
never a traceback, and nothing is written: object arrays, a truncated .npz, a missing layer, NaN weights, stored
anchors that disagree with the config, an output that cannot be written."""

from __future__ import annotations

import errno
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from backbones import build_resnet
from tests.backbones.test_msra import convert_tool, to_caffe
from tests.detection.weights.test_detectron2 import FIXTURE

D2_WEIGHTS = FIXTURE / "model_final.pkl"


def convert(capsys: pytest.CaptureFixture[str], *args: str | Path) -> str:
    rc = convert_tool().run([str(a) for a in args])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_unreadable_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    objects = tmp_path / "objects.npz"
    np.savez(objects, a=np.array([{"x": 1}], dtype=object))
    assert convert(capsys, "--weights", objects, "--depth", "50", "--output", tmp_path / "o.pth") == (
        f"error: {objects}: cannot read the .npz: Object arrays cannot be loaded when allow_pickle=False")
    whole = tmp_path / "whole.npz"
    np.savez(whole, conv1=np.zeros(3, np.float32))
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(whole.read_bytes()[:100])
    assert convert(capsys, "--weights", truncated, "--depth", "50", "--output", tmp_path / "o.pth").startswith(
        f"error: {truncated}: cannot read the .npz:")
    assert convert(capsys, "--weights", whole, "--depth", "50", "--output", tmp_path / "o.pth") == (
        f"error: {whole}: MSRA weights lack layer 'bn_conv1'")
    assert not (tmp_path / "o.pth").exists()


def test_nan_weights_are_not_converted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    arrays = to_caffe(build_resnet(50, style="msra"), 50)
    arrays["res3a_branch2b"][0] = arrays["res3a_branch2b"][0].copy()
    arrays["res3a_branch2b"][0].flat[0] = np.nan
    pkl = tmp_path / "nan.pkl"
    pkl.write_bytes(pickle.dumps(arrays))
    line = convert(capsys, "--weights", pkl, "--depth", "50", "--output", tmp_path / "o.pth")
    assert line.startswith(f"error: {pkl}: ") and "1 tensor holds NaN/inf: layer2.0.conv2.weight" in line
    assert not (tmp_path / "o.pth").exists()


def test_detectron2_bad_anchors_and_an_unwritable_output(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from detection.weights.detectron2 import read_detectron2_weights

    weights = dict(read_detectron2_weights(D2_WEIGHTS))
    weights["proposal_generator.anchor_generator.cell_anchors.0"] = torch.zeros(15, 4)
    bad = tmp_path / "bad_anchors.pth"
    torch.save({"model": weights}, bad)
    line = convert(capsys, "--from", "detectron2", "--weights", bad, "--output", tmp_path / "o.pth")
    assert line.startswith(f"error: {bad}") and "cell_anchors" in line.removeprefix(f"error: {bad}")

    def full_disk(*_: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("backbones.checkpoint.os.replace", full_disk)
    out = tmp_path / "out" / "r50.pth"
    line = convert(capsys, "--from", "detectron2", "--weights", D2_WEIGHTS, "--output", out)
    assert str(out) in line and "No space left on device" in line
    assert not out.exists() and not list(out.parent.glob("*"))  # no temporary left either
