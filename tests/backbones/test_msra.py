"""MSRA Caffe weights: layer names, blob conventions (BN moving-average factor, conv bias), tools/convert_weights."""

from __future__ import annotations

import importlib.util
import os
import pickle
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from torch import nn

from backbones import WeightsError, build_resnet, load_weights
from backbones.weights import convert_msra_caffe, msra_caffe_names

ROOT = Path(__file__).resolve().parents[2]


def convert_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("convert_weights", ROOT / "tools" / "convert_weights.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def to_caffe(model: nn.Module, depth: int, factor: float = 2.0, conv1_bias: float = 0.0) -> dict[str, list]:
    """The Caffe blobs an MSRA release of ``model`` would contain (BN stats stored times ``factor``)."""
    modules = dict(model.named_modules())
    arrays: dict[str, list] = {}
    for prefix, layer in msra_caffe_names(depth).items():
        module = modules[prefix]
        if prefix == "fc":
            arrays[layer] = [module.weight.detach().numpy(), module.bias.detach().numpy()]
            continue
        bn = modules[prefix.replace("downsample.0", "downsample.1").replace("conv", "bn")]
        suffix = "_conv1" if layer == "conv1" else layer[3:]
        blobs = [module.weight.detach().numpy()]
        mean = bn.running_mean.numpy()
        if layer == "conv1" and conv1_bias:
            blobs.append(np.full(module.out_channels, conv1_bias, dtype=np.float32))
            mean = mean + conv1_bias  # so that conv + bias followed by this BN equals the original
        arrays[layer] = blobs
        arrays[f"bn{suffix}"] = [mean * factor, bn.running_var.numpy() * factor, np.array([factor], np.float32)]
        arrays[f"scale{suffix}"] = [bn.weight.detach().numpy(), bn.bias.detach().numpy()]
    return arrays


def randomize(model: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def test_layer_names_follow_the_release() -> None:
    names50, names101, names152 = msra_caffe_names(50), msra_caffe_names(101), msra_caffe_names(152)
    assert names50["layer1.0.conv1"] == "res2a_branch2a" and names50["layer1.0.downsample.0"] == "res2a_branch1"
    assert names50["layer3.5.conv3"] == "res4f_branch2c" and names50["fc"] == "fc1000"
    assert names101["layer2.3.conv2"] == "res3b3_branch2b" and names101["layer3.22.conv3"] == "res4b22_branch2c"
    assert names101["layer4.2.conv1"] == "res5c_branch2a"
    assert names152["layer2.7.conv1"] == "res3b7_branch2a" and names152["layer3.35.conv1"] == "res4b35_branch2a"
    with pytest.raises(ValueError):
        msra_caffe_names(34)


def test_conversion_reproduces_the_network() -> None:
    source = randomize(build_resnet(50, style="msra", base_width=8))
    arrays = to_caffe(source, 50, factor=2.0, conv1_bias=0.3)
    flat = {f"{layer}/{i}": blob for layer, blobs in arrays.items() for i, blob in enumerate(blobs)}  # npz layout
    for caffe in (arrays, flat):
        target = build_resnet(50, style="msra", base_width=8).eval()
        load_weights(target, convert_msra_caffe(caffe, 50))  # strict
        x = torch.randn(1, 3, 64, 64)
        with torch.no_grad():
            assert torch.allclose(target(x), source(x), rtol=1e-4, atol=1e-4)
    converted = convert_msra_caffe(arrays, 50)
    assert torch.allclose(converted["bn1.running_mean"], source.bn1.running_mean)  # 2*(m+0.3)/2 - 0.3


def test_missing_layer_is_named() -> None:
    arrays = to_caffe(build_resnet(50, style="msra", base_width=8), 50)
    del arrays["scale3a_branch1"]
    with pytest.raises(WeightsError, match="scale3a_branch1"):
        convert_msra_caffe(arrays, 50)


def test_convert_weights_cli(tmp_path: Path) -> None:
    source = randomize(build_resnet(50, style="msra"))
    pkl = tmp_path / "ResNet-50-model.pkl"
    with open(pkl, "wb") as f:
        pickle.dump(to_caffe(source, 50), f)
    out = convert_tool().main(["--weights", str(pkl), "--depth", "50", "--output", str(tmp_path / "r50.pth")])
    model = build_resnet(50, style="msra").eval()
    load_weights(model, out)
    assert torch.equal(model.layer4[2].conv3.weight, source.layer4[2].conv3.weight)
    # The checkpoint records its style: same keys and shapes as a torchvision-style net, yet refused there.
    with pytest.raises(WeightsError, match="msra-style but the model is torchvision-style"):
        load_weights(build_resnet(50), out)


def test_msra_style_is_required_of_the_model() -> None:
    with pytest.raises(WeightsError, match="torchvision-style but the model is msra-style"):
        load_weights(build_resnet(50, style="msra", base_width=8), "torchvision")  # refused before any download


class RunsCode:
    def __reduce__(self) -> tuple:
        return (os.system, ("echo should-not-run",))


def test_convert_weights_refuses_code_in_pickles(tmp_path: Path) -> None:
    pkl = tmp_path / "evil.pkl"
    with open(pkl, "wb") as f:
        pickle.dump({"conv1": [RunsCode()]}, f)
    with pytest.raises(SystemExit, match="refusing to load .*system"):
        convert_tool().read_arrays(pkl)
