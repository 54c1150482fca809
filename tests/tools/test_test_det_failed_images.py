"""``tools/test_det.py``: an image the model fails on (fault-injected: the forward raises on images of one size) is
skipped with a warning naming its file and listed in ``metrics.json`` (``failed_images``), in one process and
sharded over two gloo ranks (the lists gathered); ``--strict`` stops with one ``error:`` line naming the file, on
every rank, without a traceback or a hang."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from detection.data import build_dataset, build_transforms
from detection.modeling.faster_rcnn import FasterRCNN
from tests.tools.conftest import ROOT, tool_env
from tests.tools.test_test_det import checkpoint, load_main, run

FAULT = '''
import os
from detection.modeling.faster_rcnn import FasterRCNN
_forward, _size = FasterRCNN.forward, tuple(int(v) for v in os.environ["FAIL_ON_SIZE"].split(","))
def forward(self, images, *args, **kwargs):
    if tuple(images[0].shape[-2:]) == _size:
        raise RuntimeError("injected failure\\nsecond line")
    return _forward(self, images, *args, **kwargs)
FasterRCNN.forward = forward
'''


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from detection.data.shapes import generate_shapes

    root = tmp_path_factory.mktemp("shapes")
    generate_shapes(root, num_train=1, num_val=5, min_size=64, max_size=96)
    return root


def odd_image(shapes_root: Path) -> tuple[tuple[int, int], str]:
    """The (H, W) the model is given for one validation image that no other shares, and that image's file."""
    dataset = build_dataset("shapes", shapes_root, "val", build_transforms(train=False))
    sizes = [tuple(dataset[i][0].shape[-2:]) for i in range(len(dataset))]
    index = next(i for i, size in enumerate(sizes) if sizes.count(size) == 1 and i > 0)
    part, local = dataset.locate(index) if hasattr(dataset, "locate") else (dataset, index)
    return sizes[index], str(part.image_path(local))


def test_an_image_the_model_fails_on_is_skipped_and_named(tmp_path: Path, shapes_root: Path,
                                                        monkeypatch: pytest.MonkeyPatch, capsys) -> None:  # fmt: skip
    size, name = odd_image(shapes_root)
    forward = FasterRCNN.forward

    def failing(self, images, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if tuple(images[0].shape[-2:]) == size:
            raise RuntimeError("injected failure\nsecond line")
        return forward(self, images, *args, **kwargs)

    monkeypatch.setattr(FasterRCNN, "forward", failing)
    weights = checkpoint(tmp_path / "a.pth")
    main = load_main()
    assert run(main, shapes_root, tmp_path / "out", [weights]) == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["failed_images"] == [name]
    assert (metrics["images"], metrics["skipped_images"]) == (4, 0)
    results = json.loads((tmp_path / "out" / "coco_results_val.json").read_text())
    assert len({r["image_id"] for r in results}) == 4  # the other images are all scored
    out = capsys.readouterr().out
    assert "(4 images, 0 unreadable, 1 the model failed on)" in out

    assert run(main, shapes_root, tmp_path / "strict", [weights], "--strict") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"error: {name}: detection failed: injected failure"
    assert not (tmp_path / "strict" / "metrics.json").exists()


def test_sharded_testing_gathers_the_failed_images_and_stops_every_rank_under_strict(
    tmp_path: Path, shapes_root: Path
) -> None:
    size, name = odd_image(shapes_root)
    (tmp_path / "fault").mkdir()
    (tmp_path / "fault" / "sitecustomize.py").write_text(FAULT)
    env = tool_env()
    env.update(FAIL_ON_SIZE=f"{size[0]},{size[1]}", PYTHONPATH=f"{tmp_path / 'fault'}:{env['PYTHONPATH']}")
    weights = checkpoint(tmp_path / "a.pth")

    def torchrun(out: Path, *extra: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(ROOT / "tools" / "test_det.py"), "--weights", str(weights), "--dataset", "shapes", "--data-root",
               str(shapes_root), "--split", "val", "--output-dir", str(out), "--device", "cpu", "--no-progress",
               *extra]  # fmt: skip
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)

    done = torchrun(tmp_path / "two")
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert (metrics["world_size"], metrics["failed_images"], metrics["images"]) == (2, [name], 4)

    done = torchrun(tmp_path / "strict", "--strict")
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors and set(errors) == {f"error: {name}: detection failed: injected failure"}
    # torchrun's own report of the failed workers is the only traceback: none from the tool on either rank
    assert done.stderr.count("Traceback") == 1 and "ChildFailedError" in done.stderr
