"""load_weights: file and checkpoint sources, mismatch errors, offline torchvision message, untrusted pickles."""

from __future__ import annotations

import os
import pickle
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch
import torch.hub
import torchvision

from backbones import WeightsError, build_resnet, load_weights
from backbones.checkpoint import CheckpointError
from backbones.weights import torchvision_weights_file


class RunsCode:
    """Unpickling this would call os.system: what a malicious checkpoint looks like."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def small_state(**kwargs: object) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return build_resnet(18, base_width=8, **kwargs).state_dict()


def test_toolkit_checkpoint_and_ddp_prefix_load(tmp_path: Path) -> None:
    state = small_state()
    path = tmp_path / "model_0000010.pth"
    torch.save({"model": {f"module.{k}": v for k, v in state.items()}, "iteration": 10}, path)
    model = build_resnet(18, base_width=8)
    load_weights(model, path)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


def test_mismatched_keys_are_listed(tmp_path: Path) -> None:
    state = small_state()
    state.pop("layer1.0.conv1.weight")
    state["head.extra"] = torch.zeros(1)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError) as info:
        load_weights(build_resnet(18, base_width=8), path)
    message = str(info.value)
    assert "missing in source:\n  layer1.0.conv1.weight" in message
    assert "unexpected in source (not in model):\n  head.extra" in message
    assert str(path) in message
    result = load_weights(build_resnet(18, base_width=8), path, strict=False)
    assert (result.missing, result.unexpected) == (["layer1.0.conv1.weight"], ["head.extra"])


def test_shape_mismatch_is_listed_and_fc_can_be_ignored() -> None:
    state = small_state()  # 1000 classes
    model = build_resnet(18, base_width=8, num_classes=21)
    fc_before = model.fc.weight.clone()
    with pytest.raises(WeightsError, match=r"fc.weight: checkpoint \(1000, 64\) vs model \(21, 64\)"):
        load_weights(model, state)
    result = load_weights(model, state, ignore=("fc.",))
    assert result.ignored == ["fc.bias", "fc.weight"] and result.missing == []
    assert torch.equal(model.fc.weight, fc_before)
    assert torch.equal(model.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])


def test_classifier_weights_load_into_c4_trunk() -> None:
    from backbones import split_c4

    trunk, _ = split_c4(build_resnet(18, base_width=8, frozen_bn=True))
    result = load_weights(trunk, small_state(), ignore=("fc.", "layer4."))
    assert result.missing == [] and result.unexpected == []


def test_offline_torchvision_error_names_file_and_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv("RESDET_CACHE", raising=False)

    def no_network(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("offline (test)")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    model = build_resnet(18)
    with pytest.raises(WeightsError) as info:
        load_weights(model, "torchvision")
    cache = tmp_path / "resdet" / "download.pytorch.org" / "models"  # backbones.hub's cache under TORCH_HOME
    message = str(info.value)
    assert "offline (test)" in message and str(cache / "resnet18-f37072fd.pth") in message and "\n" not in message
    assert torchvision_weights_file(50) == cache / "resnet50-0676ba61.pth"

    # Once the file is in place (in the resdet cache, or where torchvision caches it) it loads without network.
    reference = torchvision.models.resnet18()
    cache.mkdir(parents=True, exist_ok=True)
    torch.save(reference.state_dict(), cache / "resnet18-f37072fd.pth")
    load_weights(model, "torchvision")
    assert torch.equal(model.conv1.weight, reference.conv1.weight)
    (cache / "resnet18-f37072fd.pth").rename(tmp_path / "elsewhere.pth")
    torch_hub = tmp_path / "hub" / "checkpoints"
    torch_hub.mkdir(parents=True)
    (tmp_path / "elsewhere.pth").rename(torch_hub / "resnet18-f37072fd.pth")
    model = build_resnet(18)
    load_weights(model, "torchvision")
    assert torch.equal(model.conv1.weight, reference.conv1.weight)


def test_unknown_torchvision_variant() -> None:
    with pytest.raises(WeightsError, match="IMAGENET1K_V1"):
        load_weights(build_resnet(18), "torchvision:NOPE")


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_pickle_that_runs_code_is_refused(tmp_path: Path, writer: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    payload = {"model": RunsCode(marker)}
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(payload, f)
    with pytest.raises(CheckpointError) as info:
        load_weights(build_resnet(18, base_width=8), path)
    assert str(path) in str(info.value) and "weights_only" in str(info.value)
    assert not marker.exists()


def test_missing_and_non_state_dict_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_weights(build_resnet(18, base_width=8), tmp_path / "nope.pth")
    path = tmp_path / "list.pth"
    torch.save([1, 2, 3], path)
    with pytest.raises(WeightsError, match="neither a state dict"):
        load_weights(build_resnet(18, base_width=8), path)
