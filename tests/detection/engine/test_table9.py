"""Table 9 as a command (detection/engine/table9.py, ``tools/tables.py table9``): its rows are the shipped row
configs, and each row is evaluated with its own switches and timed."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from backbones.checkpoint import save_checkpoint
from detection import build_detector
from detection.config import load_config
from detection.engine.run import RunOptions
from detection.engine.table9 import ROW_OVERRIDES, run_table9, table9_rows
from detection.evaluation.tables import PAPER_TABLE9, table9

ROOT = Path(__file__).resolve().parents[3]
COCO = ROOT / "configs" / "coco"
CONTEXT = "model.roi_heads.global_context=true"
PYRAMID = "test.pyramid_min_sizes=[200,400,600,800,1000]"


@pytest.mark.parametrize(
    "row_config, overrides",
    [
        ("faster_rcnn_r101_c4_refinement.yaml", ROW_OVERRIDES["+box refinement"]),
        ("faster_rcnn_r101_c4_context.yaml", [*ROW_OVERRIDES["+context"], CONTEXT]),
        ("faster_rcnn_r101_c4_multiscale.yaml", [*ROW_OVERRIDES["+multi-scale testing"], CONTEXT, PYRAMID]),
    ],
)
def test_each_row_config_is_the_baseline_plus_the_rows_switches(row_config: str, overrides: list[str]) -> None:
    expected = load_config(COCO / "faster_rcnn_r101_c4.yaml", overrides).to_dict()
    assert load_config(COCO / row_config).to_dict() == expected


def test_the_imagenet_det_config_is_the_coco_system() -> None:
    det = load_config(ROOT / "configs" / "imagenet_det" / "faster_rcnn_r101_c4.yaml").to_dict()
    coco = load_config(COCO / "faster_rcnn_r101_c4_multiscale.yaml").to_dict()
    assert det["model"] == coco["model"] and det["input"] == coco["input"] and det["test"] == coco["test"]
    assert det["num_classes"] == 200 and det["data"]["test_split"] == "val2"


def test_rows_follow_the_checkpoints_given(tmp_path: Path) -> None:
    base, ctx = tmp_path / "b.pth", tmp_path / "c.pth"
    assert [r.label for r in table9_rows(base)] == ["baseline", "+box refinement"]
    rows = table9_rows(base, ctx, [tmp_path / "d.pth"], pyramid=[48, 64])
    assert [r.label for r in rows] == list(PAPER_TABLE9)
    assert rows[3].overrides[-1] == "test.pyramid_min_sizes=[48,64]" and rows[4].weights == [ctx, tmp_path / "d.pth"]


def tiny_checkpoint(path: Path, tiny_config, *overrides: str, seed: int = 0) -> Path:
    import torch

    cfg = tiny_config(*overrides)
    torch.manual_seed(seed)
    model = build_detector(cfg)
    classes = ["circle", "square", "triangle", "star", "cross"][: cfg.num_classes]
    return save_checkpoint(path, {"model": model.state_dict(), "config": cfg.to_dict(), "classes": classes})


def test_run_table9_on_shapes_and_the_command(tmp_path: Path, shapes_root: Path, tiny_config) -> None:
    base = tiny_checkpoint(tmp_path / "base.pth", tiny_config)
    ctx = tiny_checkpoint(tmp_path / "ctx.pth", tiny_config, CONTEXT)
    ctx2 = tiny_checkpoint(tmp_path / "ctx2.pth", tiny_config, CONTEXT, seed=1)
    opts = RunOptions(dataset="shapes", data_root=shapes_root, output_dir=tmp_path / "t9", device="cpu",
                      progress=False)  # fmt: skip
    rows = table9_rows(base, ctx, [ctx2], pyramid=[48, 64, 96])
    results = run_table9(rows, opts, "val", ["model.roi_heads.score_thresh=0.0"])
    assert [label for label, _ in results] == list(PAPER_TABLE9)
    for label, metrics in results:
        assert metrics["images"] == 4 and metrics["seconds_per_image"] > 0
        assert (tmp_path / "t9" / label.strip("+").replace(" ", "_").replace("-", "_") / "metrics.json").is_file()
    stored = json.loads((tmp_path / "t9" / "box_refinement" / "metrics.json").read_text())
    assert stored["coco_stats"] == results[1][1]["coco_stats"]
    assert [w["path"] for w in stored["provenance"]["weights"]] == [str(p) for p in rows[1].weights]  # its model
    rendered = table9(results)
    assert "| +multi-scale testing |" in rendered and "| 53.8 | 32.5 |" in rendered

    tool = importlib.import_module("tools.tables")
    argv = ["table9", "--baseline", str(base), "--dataset", "shapes", "--data-root", str(shapes_root), "--split",
            "val", "--output-dir", str(tmp_path / "cmd"), "--device", "cpu", "--no-progress", "--json",
            str(tmp_path / "t9.json"), "model.roi_heads.score_thresh=0.0"]  # fmt: skip
    assert tool.main(argv) == 0
    assert [r["row"] for r in json.loads((tmp_path / "t9.json").read_text())] == ["baseline", "+box refinement"]


@pytest.mark.parametrize(
    "config, system, train_split, test_split",
    [  # the paper's Table 9 right column; Detectron's trainval35k → minival (not the paper's)
        ("faster_rcnn_r101_c4_trainval.yaml", "faster_rcnn_r101_c4_multiscale.yaml", ["train2014", "val2014"],
         "test-dev2015"),
        ("faster_rcnn_r101_c4_trainval35k.yaml", "faster_rcnn_r101_c4.yaml", ["train2014", "valminusminival2014"],
         "minival2014"),
    ],
)  # fmt: skip
def test_the_split_configs_are_a_row_system_on_other_splits(config, system, train_split, test_split) -> None:
    cfg, row = load_config(COCO / config).to_dict(), load_config(COCO / system).to_dict()
    assert (cfg["data"]["train_split"], cfg["data"]["test_split"]) == (train_split, test_split)
    assert {k: v for k, v in cfg.items() if k != "data"} == {k: v for k, v in row.items() if k != "data"}
    assert (row["data"]["train_split"], row["data"]["test_split"]) == ("train2014", "val2014")  # Table 9, left


def test_the_command_evaluates_only_the_rows_named(tmp_path: Path, shapes_root: Path, tiny_config) -> None:
    base = tiny_checkpoint(tmp_path / "base.pth", tiny_config)
    tool = importlib.import_module("tools.tables")
    common = ["table9", "--baseline", str(base), "--dataset", "shapes", "--data-root", str(shapes_root), "--split",
              "val", "--output-dir", str(tmp_path / "cmd"), "--device", "cpu", "--no-progress"]  # fmt: skip
    assert tool.main([*common, "--rows", "+box refinement", "--json", str(tmp_path / "t9.json")]) == 0
    assert [r["row"] for r in json.loads((tmp_path / "t9.json").read_text())] == ["+box refinement"]
    assert not (tmp_path / "cmd" / "baseline").exists()
    with pytest.raises(SystemExit) as exc:  # no context checkpoint: no ensemble row to evaluate
        tool.main([*common, "--rows", "+ensemble"])
    assert exc.value.code == 2
