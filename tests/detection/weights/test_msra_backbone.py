"""``model.backbone.weights`` given detectron2's MSRA ImageNet ResNet (``detectron2://ImageNetPretrained/MSRA/R-50.pkl``:
a pickle of numpy arrays in caffe2 names, BN folded into an affine channel) or any http(s) URL of such a ``.pkl``:
downloaded once from a 127.0.0.1 server standing in for the zoo, read without running pickled code, converted once
(cached beside it) and loaded into the detector's trunk and conv5 head; a second run touches no network. The same
file converts with ``tools/convert_weights.py --from msra`` (the depth read off the file)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from backbones import WeightsError, build_resnet, hub, load_weights
from backbones.checkpoint import CheckpointError, load_checkpoint
from detection import build_detector, load_backbone_weights, load_config
from detection.modeling.box_head import conv5_of
from detection.weights.msra import BN_EPS
from detection.weights.zoo import fetch_backbone_weights
from tools import convert_weights

TINY = Path(__file__).resolve().parents[2] / "tiny_det.yaml"
WIDTH, CLASSES = 8, 10
R50 = "ImageNetPretrained/MSRA/R-50.pkl"
MSRA = ["model.backbone.depth=50", "model.backbone.style=msra", "input.channel_order=BGR", "input.pixel_scale=255",
        "input.pixel_mean=[103.53,116.28,123.675]", "input.pixel_std=[1.0,1.0,1.0]"]  # backbones.MSRA_INPUT


def caffe2_r50(seed: int = 0) -> dict[str, np.ndarray]:
    """A ResNet-50 of width 8 in the published caffe2 names and shapes (written out here by hand, not by the
    converter's table): conv1_w, res_conv1_bn_s/_b, res<stage>_<block>_branch2{a,b,c}_w (+ _bn_s, _bn_b),
    res<stage>_0_branch1_w (+ _bn_s, _bn_b), fc1000_w/_b; random values, BN scales around 1."""
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {}

    def conv(name: str, shape: tuple[int, ...]) -> None:
        arrays[f"{name}_w"] = rng.normal(0, 0.1, shape).astype(np.float32)
        arrays[f"{name}_bn_s"] = rng.uniform(0.5, 1.5, shape[0]).astype(np.float32)
        arrays[f"{name}_bn_b"] = rng.normal(0, 0.1, shape[0]).astype(np.float32)

    arrays["conv1_w"] = rng.normal(0, 0.1, (WIDTH, 3, 7, 7)).astype(np.float32)
    arrays["res_conv1_bn_s"] = rng.uniform(0.5, 1.5, WIDTH).astype(np.float32)
    arrays["res_conv1_bn_b"] = rng.normal(0, 0.1, WIDTH).astype(np.float32)
    channels = WIDTH
    for stage, blocks in zip((2, 3, 4, 5), (3, 4, 6, 3)):
        planes = WIDTH * 2 ** (stage - 2)
        for block in range(blocks):
            name = f"res{stage}_{block}"
            conv(f"{name}_branch2a", (planes, channels, 1, 1))
            conv(f"{name}_branch2b", (planes, planes, 3, 3))
            conv(f"{name}_branch2c", (4 * planes, planes, 1, 1))
            if block == 0:
                conv(f"{name}_branch1", (4 * planes, channels, 1, 1))
            channels = 4 * planes
    arrays["fc1000_w"] = rng.normal(0, 0.1, (CLASSES, channels)).astype(np.float32)
    arrays["fc1000_b"] = np.zeros(CLASSES, np.float32)
    return arrays


def assert_is_the_caffe2_net(resnet: torch.nn.Module, arrays: dict[str, np.ndarray]) -> None:
    """The converted net's tensors are the arrays; each BN computes the affine channel x * s + b."""
    state = resnet.state_dict()
    pairs = {"conv1.weight": "conv1_w", "bn1.weight": "res_conv1_bn_s", "bn1.bias": "res_conv1_bn_b",
             "layer1.0.conv1.weight": "res2_0_branch2a_w", "layer1.2.bn3.bias": "res2_2_branch2c_bn_b",
             "layer2.0.downsample.0.weight": "res3_0_branch1_w", "layer2.0.downsample.1.weight": "res3_0_branch1_bn_s",
             "layer3.5.conv2.weight": "res4_5_branch2b_w", "layer3.5.bn2.weight": "res4_5_branch2b_bn_s",
             "layer4.2.conv3.weight": "res5_2_branch2c_w", "layer4.2.bn3.bias": "res5_2_branch2c_bn_b"}  # fmt: skip
    for key, name in pairs.items():
        assert torch.equal(state[key], torch.from_numpy(arrays[name])), key
    assert torch.equal(state["layer3.5.bn2.running_mean"], torch.zeros(4 * WIDTH))
    assert torch.equal(state["layer3.5.bn2.running_var"], torch.full((4 * WIDTH,), 1 - BN_EPS))
    bn = resnet.layer3[5].bn2.eval()
    x = torch.randn(2, 4 * WIDTH, 3, 3)
    s, b = (torch.from_numpy(arrays[f"res4_5_branch2b_bn_{k}"]).view(1, -1, 1, 1) for k in "sb")
    torch.testing.assert_close(bn(x), x * s + b, atol=1e-6, rtol=1e-6)
    assert resnet.layer2[0].conv1.stride == (2, 2)  # MSRA style: the stride in the first 1x1


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RESDET_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("RESDET_ZOO_URL", raising=False)
    return tmp_path / "cache"


def serve(file_server, path: str, content: object) -> None:  # noqa: ANN001 - the conftest's Server
    target = file_server.root / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(pickle.dumps(content, protocol=2))


def test_detectron2_imagenet_msra_weights_by_zoo_path_are_downloaded_converted_and_loaded_once(
    file_server, monkeypatch: pytest.MonkeyPatch, cache: Path  # noqa: ANN001
) -> None:
    arrays = caffe2_r50()
    serve(file_server, R50, {"blobs": arrays})  # Detectron's files wrap the arrays in "blobs"
    monkeypatch.setenv("RESDET_ZOO_URL", file_server.url)
    cfg = load_config(TINY, [*MSRA, f"model.backbone.weights=detectron2://{R50}"])
    model = build_detector(cfg)
    load_backbone_weights(model, cfg)
    assert file_server.requests == {f"/{R50}": 1}
    resnet = build_resnet(50, num_classes=CLASSES, base_width=WIDTH, style="msra")
    download = hub.cached_file(f"{file_server.url}/{R50}")
    assert download.is_file() and str(download).startswith(str(cache))
    converted = load_checkpoint(download.with_name("R-50.backbone.pth"))  # cached beside the download
    assert converted["config"]["style"] == "msra"
    load_weights(resnet, converted["model"])
    assert_is_the_caffe2_net(resnet, arrays)
    # The detector holds the same tensors: conv1…conv4_x in the trunk, conv5_x in the box head.
    assert torch.equal(model.trunk.body.conv1.weight, torch.from_numpy(arrays["conv1_w"]))
    assert torch.equal(model.trunk.body.layer3[5].conv2.weight, torch.from_numpy(arrays["res4_5_branch2b_w"]))
    conv5 = conv5_of(model.roi_heads.box_head).layer4
    assert torch.equal(conv5[2].conv3.weight, torch.from_numpy(arrays["res5_2_branch2c_w"]))

    again = build_detector(cfg)
    load_backbone_weights(again, cfg)  # from the cache: no request
    assert file_server.requests == {f"/{R50}": 1}
    assert torch.equal(again.trunk.body.layer1[0].conv1.weight, model.trunk.body.layer1[0].conv1.weight)


def test_any_url_of_such_a_pkl_and_the_convert_tool(file_server, tmp_path: Path) -> None:  # noqa: ANN001
    arrays = caffe2_r50(seed=1)
    serve(file_server, "weights/R-50.pkl", arrays)  # a flat dict of arrays
    local = fetch_backbone_weights(f"{file_server.url}/weights/R-50.pkl", progress=False)
    assert Path(local).name == "R-50.backbone.pth"
    assert fetch_backbone_weights(f"{file_server.url}/weights/R-50.pkl", progress=False) == local
    assert file_server.requests == {"/weights/R-50.pkl": 1}
    resnet = build_resnet(50, num_classes=CLASSES, base_width=WIDTH, style="msra")
    load_weights(resnet, local)
    assert_is_the_caffe2_net(resnet, arrays)
    # Offline files and other sources pass through untouched.
    assert fetch_backbone_weights("torchvision") == "torchvision"
    assert fetch_backbone_weights(str(tmp_path / "mine.pth")) == str(tmp_path / "mine.pth")

    pkl = tmp_path / "R-50.pkl"
    pkl.write_bytes(pickle.dumps(arrays))
    out = convert_weights.main(["--from", "msra", str(pkl), "--output", str(tmp_path / "r50.pth")])  # no --depth
    tool = build_resnet(50, num_classes=CLASSES, base_width=WIDTH, style="msra")
    load_weights(tool, out)
    assert_is_the_caffe2_net(tool, arrays)


def test_unreachable_bad_or_torchvision_style_weights_are_one_line(file_server, monkeypatch: pytest.MonkeyPatch,
                                                                   cache: Path) -> None:  # noqa: ANN001
    monkeypatch.setenv("RESDET_ZOO_URL", "http://127.0.0.1:1/mirror")  # nothing listens there
    with pytest.raises(CheckpointError, match=rf"could not download http://127.0.0.1:1/mirror/{R50}.*put it at "
                                              rf"{cache}/127.0.0.1_1/mirror/{R50}"):
        fetch_backbone_weights(f"detectron2://{R50}", progress=False)

    arrays = caffe2_r50()
    del arrays["res4_5_branch2b_bn_s"]
    serve(file_server, "cut/R-50.pkl", arrays)
    with pytest.raises(CheckpointError, match="cannot convert it into backbone weights: .*lack res4_5_branch2b_bn_s"):
        fetch_backbone_weights(f"{file_server.url}/cut/R-50.pkl", progress=False)
    with_statistics = {**caffe2_r50(), "res2_0_branch2a_bn_rm": np.zeros(WIDTH, np.float32)}
    serve(file_server, "stats/R-50.pkl", with_statistics)  # not an affine channel: reading _s/_b alone would be wrong
    with pytest.raises(CheckpointError, match="BN running statistics \\(res2_0_branch2a_bn_rm"):
        fetch_backbone_weights(f"{file_server.url}/stats/R-50.pkl", progress=False)
    serve(file_server, "other/R-50.pkl", {"conv1": [np.zeros(3, np.float32)]})
    with pytest.raises(CheckpointError, match="neither MSRA ImageNet weights in caffe2 names"):
        fetch_backbone_weights(f"{file_server.url}/other/R-50.pkl", progress=False)

    serve(file_server, R50, caffe2_r50())
    monkeypatch.setenv("RESDET_ZOO_URL", file_server.url)
    cfg = load_config(TINY, ["model.backbone.depth=50", f"model.backbone.weights=detectron2://{R50}"])  # torchvision
    with pytest.raises(WeightsError, match="msra-style but the model is torchvision-style"):
        load_backbone_weights(build_detector(cfg), cfg)
