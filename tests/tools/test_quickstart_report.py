"""tools/quickstart.py ends with the error analysis of its held-out images: the training stages are replaced by
files like theirs (the stages themselves run in tests/tools/test_quickstart.py, marked slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from detection.evaluation.analysis.synthetic import noisy_detections
from tools import quickstart


def test_quickstart_writes_and_names_the_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture) -> None:
    data, out = tmp_path / "shapes", tmp_path / "out"

    def stage(cmd: list[str]) -> None:  # what tools/train_det.py leaves in the detector's folder
        if Path(cmd[1]).stem != "train_det":
            return
        detector = Path(cmd[cmd.index("--output-dir") + 1])
        detector.mkdir(parents=True)
        instances = json.loads((data / "annotations" / "instances_val.json").read_text())
        results = detector / "coco_results_val.json"
        results.write_text(json.dumps(noisy_detections(instances, dets_per_image=6)))
        (detector / "metrics.json").write_text(json.dumps({"mAP50": 0.5, "mAP": 0.3, "images": 3,
                                                           "results_file": str(results)}))
        (detector / "metrics.jsonl").write_text("".join(
            json.dumps({"iteration": it, "lr": 0.01, "loss_cls": 1 / it}) + "\n" for it in (10, 20, 30)))

    monkeypatch.setattr(quickstart, "run", stage)
    assert quickstart.main(["--num-train", "2", "--num-val", "3", "--cls-iters", "10", "--device", "cpu",
                            "--data-root", str(data), "--output-dir", str(out), "--no-progress"]) == 0
    report = out / "analysis" / "report.html"
    assert f"analysis report (open it in a browser): {report}" in capsys.readouterr().out
    page = report.read_text()
    assert "Training" in page and "Worst images" in page and "cannot read" not in page
