"""backbones/loop_wandb.py through the one training loop, on a toy regression with a fake ``wandb`` module
(``fake_wandb``, tests/conftest.py): the run is started with the config in the output folder, gets the same
scalars as TensorBoard at their iterations, is finished once, and is continued by a resumed training; without
wandb (or when it cannot start) one warning and the training is unchanged."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from backbones.loop import LoopOptions, TrainLoop, WarmupStepLR
from backbones.loop_wandb import RUN_ID_FILE, WandbOptions, start_wandb

NOT_INSTALLED = "logging.wandb_project is set but wandb is not installed: pip install wandb"
TIMING = ("time", "data_time", "memory_mb", "eta_s")


class Regression(TrainLoop):
    """Least squares on batches that are a pure function of the iteration; ``fail_at`` raises in that step."""

    def __init__(self, out: Path, wandb: WandbOptions | None, fail_at: int = -1) -> None:
        torch.manual_seed(0)
        model = nn.Linear(3, 1)
        options = LoopOptions(max_iter=4, checkpoint_period=2, log_period=1, progress=False, seed=1, eval_period=2,
                              wandb=wandb)  # fmt: skip
        super().__init__(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                         lr_at=WarmupStepLR(0.1, [3], 0.1, 2, 0.5), device=torch.device("cpu"), output_dir=out,
                         options=options, eval_fn=self.mse)  # fmt: skip
        self.fail_at = fail_at

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for it in range(self.state.iteration, self.options.max_iter):
            x = torch.randn(4, 3, generator=torch.Generator().manual_seed(it))
            yield x, x.sum(1, keepdim=True)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.state.iteration == self.fail_at:
            raise RuntimeError("crash")
        return {"loss_mse": ((self.ddp_model(x) - y) ** 2).mean()}

    def mse(self, iteration: int) -> dict[str, float]:
        with torch.no_grad():
            return {"mse": float(((self.model(torch.ones(2, 3)) - 3) ** 2).mean())}


def wandb_options() -> WandbOptions:
    return WandbOptions(project="toy", config={"lr": 0.1, "steps": [3]})


def records(out: Path) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING} for r in lines]


def test_the_run_gets_the_config_and_tensorboards_scalars_at_their_iterations(tmp_path: Path, fake_wandb) -> None:
    out = tmp_path / "run"
    Regression(out, wandb_options()).run()
    run_id = (out / RUN_ID_FILE).read_text().strip()
    assert fake_wandb.inits == [{"project": "toy", "entity": None, "name": None, "config": {"lr": 0.1, "steps": [3]},
                                 "dir": str(out), "id": run_id, "resume": "allow"}]  # fmt: skip
    expected = []
    for record in records(out):  # metrics.jsonl holds what TensorBoard gets, by iteration
        if "eval" in record:
            expected.append(({f"eval/{k}": v for k, v in record["eval"].items()}, record["iteration"]))
        else:
            scalars = {f"train/{k}": v for k, v in record.items() if k != "iteration"}
            expected.append((scalars, record["iteration"]))
    assert fake_wandb.logs == expected
    assert [step for _, step in fake_wandb.logs] == [1, 2, 2, 3, 4, 4]
    assert set(fake_wandb.logs[0][0]) == {"train/loss", "train/loss_mse", "train/lr"}
    assert fake_wandb.finishes == 1


def test_a_resumed_training_continues_the_same_run(tmp_path: Path, fake_wandb) -> None:
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="crash"):
        Regression(out, wandb_options(), fail_at=3).run()  # checkpoint at 2, step 3 logged, killed in step 4
    assert fake_wandb.finishes == 1  # the crashed training still closes its run
    first_id = fake_wandb.inits[0]["id"]
    resumed = Regression(out, wandb_options())
    assert resumed.resume()
    resumed.run()
    assert fake_wandb.inits[1]["id"] == first_id and fake_wandb.inits[1]["resume"] == "allow"
    # The resumed training logs from 3 on: step 3 again, which wandb ignores (below the run's last step) and which
    # holds the values logged the first time (the resume is exact).
    assert [step for _, step in fake_wandb.logs] == [1, 2, 2, 3, 3, 4, 4]
    assert fake_wandb.logs[3] == fake_wandb.logs[4]
    Regression(tmp_path / "other", wandb_options()).run()
    assert fake_wandb.inits[2]["id"] != first_id  # a fresh training is a new run


def test_without_wandb_one_warning_and_the_training_is_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    Regression(tmp_path / "plain", None).run()
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError
    with caplog.at_level(logging.WARNING):
        Regression(tmp_path / "asked", wandb_options()).run()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [NOT_INSTALLED]
    assert records(tmp_path / "asked") == records(tmp_path / "plain")
    assert not (tmp_path / "asked" / RUN_ID_FILE).exists()


def test_a_run_that_cannot_start_is_one_warning(tmp_path: Path, fake_wandb, caplog: pytest.LogCaptureFixture) -> None:
    fake_wandb.init_error = RuntimeError("api_key not configured (no-tty). call wandb.login(key=[your_api_key])")
    with caplog.at_level(logging.WARNING):
        Regression(tmp_path, wandb_options()).run()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "could not start run" in warnings[0] and "api_key not configured" in warnings[0]
    assert (tmp_path / "model_final.pth").is_file() and not fake_wandb.logs


def test_only_rank_0_starts_a_run(tmp_path: Path, fake_wandb) -> None:
    assert start_wandb(wandb_options(), tmp_path, rank=1, resumed=False) is None
    assert start_wandb(None, tmp_path, rank=0, resumed=False) is None
    assert not fake_wandb.inits and not (tmp_path / RUN_ID_FILE).exists()
