"""Detector weights by URL and by model-zoo name (detection/weights/zoo.py) against a file server on 127.0.0.1
standing in for the zoo (``RESDET_ZOO_URL``): the detectron2 ``.pkl`` is downloaded once and converted once, as
tools/convert_weights.py converts it; a second load touches no network; failures are one line."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from backbones import hub
from backbones.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from detection import build_detector, load_config
from detection.build import load_detector
from detection.weights.detectron2 import detectron2_classes
from detection.weights.zoo import CONFIGS, MODELS, ZOO_URL, fetch_weights, resolve
from tools import test_det

ROOT = Path(__file__).resolve().parents[3]
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "detectron2_r50_c4"  # detectron2's R50-C4, width 6, VOC
VOC = MODELS["R50-C4-VOC"]


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RESDET_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("RESDET_ZOO_URL", raising=False)
    return tmp_path / "cache"


def test_names_resolve_to_the_published_urls_and_their_configs(monkeypatch: pytest.MonkeyPatch) -> None:
    r50 = "COCO-Detection/faster_rcnn_R_50_C4_3x/137849393/model_final_f97cb7.pkl"
    expected = (ZOO_URL + r50, CONFIGS / "faster_rcnn_R_50_C4_3x.yaml")
    assert resolve("detectron2:R50-C4-3x") == expected
    assert resolve("detectron2://" + r50) == expected
    assert resolve(Path("detectron2://" + r50)) == expected  # argparse's type=Path folds the "//"
    assert resolve(Path(ZOO_URL + r50)) == expected
    assert resolve("https://mirror.example/d2/" + r50) == ("https://mirror.example/d2/" + r50, expected[1])
    assert resolve("https://example.org/mine.pth") == ("https://example.org/mine.pth", None)
    for config in {m.config for m in MODELS.values()}:
        assert (CONFIGS / config).is_file()
    monkeypatch.setenv("RESDET_ZOO_URL", "http://127.0.0.1:1/mirror")
    assert resolve("detectron2:R50-C4-3x")[0] == "http://127.0.0.1:1/mirror/" + r50
    with pytest.raises(ValueError, match="unknown model-zoo name 'detectron2:R50-FPN'; known: detectron2:R50-C4-1x"):
        resolve("detectron2:R50-FPN")


def convert_with_tool(tmp_path: Path) -> dict:
    spec = importlib.util.spec_from_file_location("convert_weights", ROOT / "tools" / "convert_weights.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    width = np.load(FIXTURE / "outputs.npz")["width"]
    out = tool.main(["--from", "detectron2", str(FIXTURE / "model_final.pkl"), "--output", str(tmp_path / "t.pth"),
                     "--config", str(CONFIGS / VOC.config), f"model.backbone.base_width={int(width)}"])
    return load_checkpoint(out)


def test_a_zoo_name_is_downloaded_once_converted_once_and_loaded(
    file_server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, cache: Path
) -> None:
    served = file_server.root / VOC.path
    served.parent.mkdir(parents=True)
    served.write_bytes((FIXTURE / "model_final.pkl").read_bytes())
    monkeypatch.setenv("RESDET_ZOO_URL", file_server.url)

    model, cfg, classes = load_detector("detectron2:R50-C4-VOC")
    reference = convert_with_tool(tmp_path)
    assert classes == detectron2_classes(20) == reference["classes"] and cfg.model.backbone.style == "msra"
    assert cfg.to_dict() == reference["config"]  # the VOC config of configs/detectron2, at the checkpoint's width
    state = model.state_dict()
    assert state.keys() == reference["model"].keys()
    assert all(torch.equal(state[k], v) for k, v in reference["model"].items())

    # detectron2's spelling of the same file: from the cache, no second request, no second conversion.
    converted = fetch_weights("detectron2://" + VOC.path)
    stamp = converted.stat().st_mtime_ns
    load_detector(Path("detectron2://" + VOC.path))
    assert file_server.requests == {"/" + VOC.path: 1} and converted.stat().st_mtime_ns == stamp
    assert converted.is_relative_to(cache) and converted.name.startswith("model_final_b1acc2.faster_rcnn_R_50_C4_voc-")
    assert not list(cache.rglob("*.part")) and not list(cache.rglob("*.tmp*"))


def test_a_toolkit_checkpoint_by_url_tests_like_a_local_one(file_server, tmp_path: Path) -> None:
    from detection.data.shapes import SHAPE_CLASSES, generate_shapes

    cfg = load_config(ROOT / "tests" / "tiny_det.yaml", ["model.roi_heads.score_thresh=0.0"])
    torch.manual_seed(0)
    save_checkpoint(file_server.root / "tiny.pth", {"model": build_detector(cfg).state_dict(),
                                                    "config": cfg.to_dict(), "classes": list(SHAPE_CLASSES)})
    generate_shapes(tmp_path / "shapes", num_train=1, num_val=2, min_size=64, max_size=96)
    common = ["--dataset", "shapes", "--data-root", str(tmp_path / "shapes"), "--split", "val", "--device", "cpu",
              "--no-progress"]  # fmt: skip
    url = f"{file_server.url}/tiny.pth"
    assert test_det.main(["--weights", url, "--output-dir", str(tmp_path / "a"), *common]) == 0
    assert test_det.main(["--weights", str(file_server.root / "tiny.pth"), "--output-dir", str(tmp_path / "b"),
                          *common]) == 0  # fmt: skip
    a, b = ((tmp_path / d / "coco_results_val.json").read_text() for d in "ab")
    assert a == b and file_server.requests["/tiny.pth"] == 1


def test_unreachable_weights_are_one_line_naming_the_url_and_the_cache_path(
    file_server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RESDET_ZOO_URL", file_server.url)  # serves nothing: HTTP 404
    url = file_server.url + "/" + MODELS["R50-C4-3x"].path
    with pytest.raises(CheckpointError) as info:
        load_detector("detectron2:R50-C4-3x")
    message = str(info.value)
    assert url in message and str(hub.cached_file(url)) in message and "\n" not in message

    code = test_det.main(["--weights", "detectron2:R50-C4-3x", "--dataset", "shapes", "--data-root",
                          str(tmp_path), "--output-dir", str(tmp_path / "out"), "--device", "cpu"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and url in err and "Traceback" not in err
    assert not hub.cached_file(url).exists()
