"""Every result file the tools write goes through ``backbones.files`` / ``detection.files``: on a full disk
(fault-injected: ``fsync`` fails with ENOSPC) the tool says so in one line naming the file, leaves the previous file
(or none) under its name and no temporary; the analysis report's PNGs, report.html and JSON, plot_training's PNG,
``eval_cls --json``, ``benchmark_system --json`` / ``--markdown`` (an append: the whole table rewritten atomically),
``benchmark_analysis --json``, ``convert_dataset`` and ``tables.py``."""

from __future__ import annotations

import errno
import json
import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from backbones.checkpoint import save_checkpoint
from backbones.classify import build_classifier
from backbones.files import ResultWriteError, append_text
from detection.data.shapes import generate_shapes
from tests.tools.test_analyze_results import write_training_log
from tests.tools.test_train_cls import tiny_cifar as tiny_cifar  # noqa: F401 - the module-scoped fixture
from tools import analyze_results, benchmark_analysis, benchmark_system, convert_dataset, eval_cls, plot_training

ROOT = Path(__file__).resolve().parents[2]
NO_SPACE = os.strerror(errno.ENOSPC)


@pytest.fixture
def full_disk(monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """``full_disk()``: from then on every ``fsync`` fails with ENOSPC, as a write to a full disk does."""

    def fail(_: int) -> None:
        raise OSError(errno.ENOSPC, NO_SPACE)

    return lambda: monkeypatch.setattr(os, "fsync", fail)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp" in p.name)


def last_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    return err[-1] if err else ""


def test_append_text_rewrites_the_whole_file_atomically(tmp_path: Path, full_disk: Callable[[], None]) -> None:
    table = tmp_path / "benchmarks.md"
    append_text(table, "| a |\n")
    append_text(table, "| b |\n")
    assert table.read_text() == "| a |\n| b |\n"
    full_disk()
    with pytest.raises(ResultWriteError, match=f"^cannot write {table}: {NO_SPACE}$"):
        append_text(table, "| c |\n")
    assert table.read_text() == "| a |\n| b |\n" and leftovers(tmp_path) == []


def test_plot_training_on_a_full_disk(tmp_path: Path, full_disk: Callable[[], None], capsys) -> None:
    run = write_training_log(tmp_path / "run")
    full_disk()
    assert plot_training.main([str(run)]) == 1
    assert last_error(capsys) == f"error: cannot write {run / 'training_curves.png'}: {NO_SPACE}"
    assert sorted(p.name for p in run.iterdir()) == ["metrics.jsonl"]


def test_the_analysis_report_on_a_full_disk(tmp_path: Path, full_disk: Callable[[], None], capsys) -> None:
    root = generate_shapes(tmp_path / "shapes", num_train=1, num_val=3, min_size=64, max_size=80)
    instances = json.loads((root / "annotations" / "instances_val.json").read_text())
    results = tmp_path / "dets.json"
    results.write_text(json.dumps([{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
                                    "score": 0.9} for a in instances["annotations"]]))  # fmt: skip
    args = ["--data-root", str(root / "annotations" / "instances_val.json"), "--results", str(results),
            "--no-progress", "--gallery", "0"]  # fmt: skip
    assert analyze_results.main([*args, "--output-dir", str(tmp_path / "ok"), "--json", str(tmp_path / "a.json")]) == 0
    written = sorted(p.name for p in (tmp_path / "ok").iterdir())
    assert {"report.html", "analysis.json", "tide.png", "pr_curves.png"} <= set(written)
    assert leftovers(tmp_path / "ok") == []

    out = tmp_path / "out"
    full_disk()
    assert analyze_results.main([*args, "--output-dir", str(out)]) == 1
    assert last_error(capsys) == f"error: cannot write {out / 'tide.png'}: {NO_SPACE}"
    assert list(out.iterdir()) == []
    assert analyze_results.main([*args, "--output-dir", str(tmp_path / "ok"), "--json", str(tmp_path / "a.json")]) == 1
    assert last_error(capsys) == f"error: cannot write {tmp_path / 'ok' / 'tide.png'}: {NO_SPACE}"
    assert sorted(p.name for p in (tmp_path / "ok").iterdir()) == written  # the previous report intact


def test_benchmark_system_json_and_markdown_on_a_full_disk(tmp_path: Path, full_disk: Callable[[], None],
                                                           capsys) -> None:  # fmt: skip
    table = tmp_path / "benchmarks.md"
    table.write_text("# earlier measurements\n")
    args = ["--config", str(ROOT / "tests" / "tiny_det.yaml"), "--image-size", "64", "--pyramid", "48", "64",
            "--iters", "1", "--warmup", "0", "--threads", str(torch.get_num_threads()), "--markdown", str(table),
            "--json", str(tmp_path / "b.json")]  # fmt: skip
    benchmark_system.main(args)
    assert table.read_text().startswith("# earlier measurements\n\n") and "all together" in table.read_text()
    before = table.read_text()
    json.loads((tmp_path / "b.json").read_text())
    os.remove(tmp_path / "b.json")
    full_disk()
    with pytest.raises(SystemExit) as stop:
        benchmark_system.main(args)
    assert stop.value.code == 1
    assert last_error(capsys) == f"error: cannot write {tmp_path / 'b.json'}: {NO_SPACE}"
    assert table.read_text() == before and not (tmp_path / "b.json").exists() and leftovers(tmp_path) == []


def test_benchmark_analysis_on_a_full_disk(tmp_path: Path, full_disk: Callable[[], None], capsys) -> None:
    args = ["--images", "10", "--dets", "4", "--classes", "3", "--no-tidecv", "--json", str(tmp_path / "s.json")]
    assert benchmark_analysis.main(args) == 0 and json.loads((tmp_path / "s.json").read_text())["images"] == 10
    before = (tmp_path / "s.json").read_text()
    full_disk()
    assert benchmark_analysis.main(args) == 1  # its report (in a temporary folder) is written first
    assert re.fullmatch(rf"error: cannot write \S+/report/tide\.png: {NO_SPACE}", last_error(capsys))
    assert (tmp_path / "s.json").read_text() == before and leftovers(tmp_path) == []


def test_eval_cls_json_on_a_full_disk(tiny_cifar: Path, tmp_path: Path, full_disk: Callable[[], None]) -> None:  # noqa: F811
    torch.manual_seed(0)
    model = build_classifier("cifar_resnet8", num_classes=4)
    weights = save_checkpoint(tmp_path / "w.pth", {"model": model.state_dict()})
    args = ["--arch", "cifar_resnet8", "--weights", str(weights), "--data-root", str(tiny_cifar), "--dataset",
            "cifar10", "--mode", "center", "--workers", "0", "--no-progress", "--json", str(tmp_path / "e.json")]
    full_disk()
    with pytest.raises(ResultWriteError, match=f"^cannot write {tmp_path / 'e.json'}: {NO_SPACE}$"):
        eval_cls.main(args)
    assert not (tmp_path / "e.json").exists() and leftovers(tmp_path) == []


def test_convert_dataset_on_a_full_disk(tmp_path: Path, full_disk: Callable[[], None], capsys) -> None:
    root = generate_shapes(tmp_path / "shapes", num_train=2, num_val=1, min_size=64, max_size=80)
    out = tmp_path / "train.json"
    full_disk()
    assert convert_dataset.main(["--from", "coco", "--data-root", str(root), "--split", "train", "--output",
                                 str(out)]) == 1  # fmt: skip
    assert last_error(capsys) == f"error: cannot write {out}: {NO_SPACE}"
    assert not out.exists() and leftovers(tmp_path) == []


def test_tables_output_and_json_on_a_full_disk(tmp_path: Path, full_disk: Callable[[], None], capsys) -> None:
    from tools import tables

    results = tmp_path / "coco_r101.json"
    results.write_text(json.dumps({"stats": [0.272, 0.484] + [0.0] * 10, "per_class": {}}))
    table, rows = tmp_path / "table.md", tmp_path / "rows.json"
    assert tables.main([str(results), "--output", str(table), "--json", str(rows)]) == 0
    before = table.read_text()
    assert "| coco_r101 | 48.4 | 27.2 |" in before and json.loads(rows.read_text())[0]["row"] == "coco_r101"
    full_disk()
    assert tables.main([str(results), "--names", "other", "--output", str(table)]) == 2
    assert last_error(capsys) == f"error: cannot write {table}: {NO_SPACE}"
    assert table.read_text() == before and leftovers(tmp_path) == []
