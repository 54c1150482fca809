"""The Trainer in-process: non-finite losses and gradients, resuming past corrupt or weights-only checkpoints, and
refusing checkpoints that would run code."""

from __future__ import annotations

import logging
from collections.abc import Callable, Container
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from backbones.checkpoint import CheckpointError, load_checkpoint
from detection.build import build_detector, load_backbone_weights
from detection.config import Config
from detection.engine.trainer import NonFiniteLossError, Trainer, step_seed

ConfigFactory = Callable[..., Config]


def make_trainer(cfg: Config, dataset: Any, output_dir: Path, **kwargs: Any) -> Trainer:
    torch.manual_seed(cfg.seed)
    return Trainer(
        model=build_detector(cfg), cfg=cfg, dataset=dataset, output_dir=output_dir, device=torch.device("cpu"),
        classes=dataset.classes, progress=False, **kwargs,
    )  # fmt: skip


class _NaNGradient(torch.autograd.Function):
    """Identity forward, NaN backward: a finite loss whose gradient is not."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return grad * float("nan")


class FaultAt(nn.Module):
    """Wraps the detector; at the iterations ``at`` makes every loss NaN (``"loss"``) or the gradient NaN
    (``"grad"``). Records a copy of the parameters before each call so a test can see what a step changed."""

    def __init__(self, trainer: Trainer, at: Container[int], kind: str) -> None:
        super().__init__()
        self.trainer, self.at, self.kind = trainer, at, kind
        self.model = trainer.model
        self.before: dict[int, dict[str, Tensor]] = {}

    def forward(self, images: list[Tensor], targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        it = self.trainer.state.iteration
        self.before[it] = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        losses = self.model(images, targets)
        if it in self.at and self.kind == "loss":
            losses = {k: v * float("nan") for k, v in losses.items()}
        if it in self.at and self.kind == "grad":
            losses["loss_cls"] = _NaNGradient.apply(losses["loss_cls"])
        return losses


def assert_same_state(a: dict[str, Tensor], b: dict[str, Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_nonfinite_loss_stops_naming_iteration_and_losses_keeping_the_last_checkpoint(
    shapes_train: Any, tiny_config: ConfigFactory, tmp_path: Path
) -> None:
    cfg = tiny_config("solver.max_iter=8", "solver.checkpoint_period=2")
    trainer = make_trainer(cfg, shapes_train, tmp_path)
    trainer.ddp_model = FaultAt(trainer, at={5}, kind="loss")
    with pytest.raises(NonFiniteLossError) as info:
        trainer.run()
    message = str(info.value)
    assert "non-finite loss at iteration 5:" in message
    for name in ("loss_rpn_cls=nan", "loss_rpn_box=nan", "loss_cls=nan", "loss_box=nan"):
        assert name in message
    assert f"Last good checkpoint: {tmp_path / 'model_0000004.pth'}" in message
    assert sorted(p.name for p in tmp_path.glob("model_*.pth")) == ["model_0000002.pth", "model_0000004.pth"]
    ckpt = load_checkpoint(tmp_path / "model_0000004.pth")
    assert ckpt["iteration"] == 4
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    assert_same_state(trainer.model.state_dict(), trainer.ddp_model.before[5])  # the bad step changed nothing


def test_nonfinite_gradient_is_caught_before_the_weights_change(
    shapes_train: Any, tiny_config: ConfigFactory, tmp_path: Path
) -> None:
    cfg = tiny_config("solver.max_iter=6", "solver.checkpoint_period=1")
    trainer = make_trainer(cfg, shapes_train, tmp_path)
    trainer.ddp_model = FaultAt(trainer, at={3}, kind="grad")
    with pytest.raises(NonFiniteLossError, match=r"non-finite gradient at iteration 3: loss_rpn_cls=\d"):
        trainer.run()
    # Without the gradient check the NaN weights would have been saved as model_0000004.pth.
    assert sorted(p.name for p in tmp_path.glob("model_*.pth"))[-1] == "model_0000003.pth"
    assert_same_state(trainer.model.state_dict(), trainer.ddp_model.before[3])
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


@pytest.mark.parametrize("kind", ["loss", "grad"])
def test_skip_nonfinite_skips_the_batch_and_finishes(
    shapes_train: Any, tiny_config: ConfigFactory, tmp_path: Path, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = tiny_config("solver.max_iter=8", "solver.checkpoint_period=4", "solver.steps=[6]")
    trainer = make_trainer(cfg, shapes_train, tmp_path, skip_nonfinite=True)
    trainer.ddp_model = FaultAt(trainer, at={5}, kind=kind)
    with caplog.at_level(logging.WARNING):
        state = trainer.run()
    assert state.iteration == 8 and state.skipped_batches == 1
    assert f"non-finite {'loss' if kind == 'loss' else 'gradient'} at iteration 5" in caplog.text
    assert "batch skipped" in caplog.text
    assert_same_state(trainer.ddp_model.before[6], trainer.ddp_model.before[5])  # the skipped step did nothing
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    assert (tmp_path / "model_final.pth").is_file()
    # The learning rate follows the iteration count through a skipped batch: the decay still lands at step 6.
    assert trainer.scheduler.last_epoch == 8
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(cfg.solver.base_lr * cfg.solver.gamma)


def test_skipping_stops_when_every_batch_is_nonfinite(
    shapes_train: Any, tiny_config: ConfigFactory, tmp_path: Path
) -> None:
    cfg = tiny_config("solver.max_iter=30", "solver.checkpoint_period=2")
    trainer = make_trainer(cfg, shapes_train, tmp_path, skip_nonfinite=True, max_consecutive_skips=4)
    trainer.ddp_model = FaultAt(trainer, at={1, 4, 5, 6, *range(8, 30)}, kind="loss")
    with pytest.raises(NonFiniteLossError) as info:
        trainer.run()
    assert "non-finite loss at iteration 11: " in str(info.value)
    assert "4 non-finite batches in a row: training has diverged" in str(info.value)
    assert str(info.value).endswith(f"Last good checkpoint: {tmp_path / 'model_0000010.pth'}")
    assert trainer.state.skipped_batches == 1 + 3 + 3  # isolated and shorter runs of bad batches were skipped


def test_resume_falls_back_past_a_truncated_newest_checkpoint(
    shapes_train: Any, tiny_config: ConfigFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = tiny_config("solver.max_iter=6", "solver.checkpoint_period=3")
    make_trainer(cfg, shapes_train, tmp_path).run()
    newest = tmp_path / "model_0000006.pth"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    half_written = tmp_path / ".model_0000009.pth.tmp.12345"  # what save_checkpoint leaves when killed mid-write
    half_written.write_bytes(b"PK\x03\x04")

    trainer = make_trainer(cfg, shapes_train, tmp_path)
    with caplog.at_level(logging.WARNING):
        assert trainer.resume()
    assert trainer.state.iteration == 3 and trainer.last_checkpoint == tmp_path / "model_0000003.pth"
    assert "model_0000006.pth" in caplog.text and "truncated or corrupt" in caplog.text
    assert_same_state(trainer.model.state_dict(), load_checkpoint(tmp_path / "model_0000003.pth")["model"])
    assert not half_written.exists()


def test_resume_never_picks_the_weights_only_final_file(
    shapes_train: Any, tiny_config: ConfigFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = tiny_config("solver.max_iter=3", "solver.checkpoint_period=0")
    make_trainer(cfg, shapes_train, tmp_path).run()
    (tmp_path / "model_0000003.pth").unlink()  # only model_final.pth (model, config, classes) is left
    trainer = make_trainer(cfg, shapes_train, tmp_path)
    with caplog.at_level(logging.WARNING):
        assert not trainer.resume()
    assert "no usable checkpoint" in caplog.text and trainer.state.iteration == 0

    # A numbered file without training state (e.g. an exported model) is a clear error, not a KeyError.
    (tmp_path / "model_final.pth").rename(tmp_path / "model_0000003.pth")
    with pytest.raises(CheckpointError, match=r"model_0000003.pth.*no training state.*optimizer"):
        trainer.resume()


class _RunsCode:
    """Pickles as a call to ``exec``: loading it with plain ``torch.load`` writes ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return exec, (f"open({str(self.marker)!r}, 'w').write('code ran')",)


def write_code_carrying_checkpoint(path: Path, marker: Path) -> Path:
    torch.save({"model": {"conv1.weight": torch.zeros(1)}, "iteration": 99, "payload": _RunsCode(marker)}, path)
    return path


def test_code_carrying_pickles_are_refused_by_resume_and_weight_loading(
    shapes_train: Any, tiny_config: ConfigFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = tiny_config("solver.max_iter=3", "solver.checkpoint_period=3")
    make_trainer(cfg, shapes_train, tmp_path).run()
    marker = tmp_path / "pwned"
    evil = write_code_carrying_checkpoint(tmp_path / "model_0000009.pth", marker)

    trainer = make_trainer(cfg, shapes_train, tmp_path)
    with caplog.at_level(logging.WARNING):
        assert trainer.resume()
    assert trainer.state.iteration == 3  # the crafted newest file was skipped
    assert "model_0000009.pth" in caplog.text and "weights_only" in caplog.text and "exec" in caplog.text

    bad_cfg = tiny_config(f"model.backbone.weights={evil}")
    with pytest.raises(CheckpointError, match=r"model_0000009.pth.*refuses.*untrusted"):
        load_backbone_weights(build_detector(bad_cfg), bad_cfg)
    assert not marker.exists()

    # The file really is dangerous: an unsafe load runs its code.
    torch.load(evil, weights_only=False)
    assert marker.read_text() == "code ran"


def test_weights_file_that_is_truncated_is_a_clear_error(tmp_path: Path, tiny_config: ConfigFactory) -> None:
    cfg = tiny_config()
    good = tmp_path / "weights.pth"
    torch.save({"model": build_detector(cfg).state_dict()}, good)
    good.write_bytes(good.read_bytes()[:1000])
    cfg = tiny_config(f"model.backbone.weights={good}")
    with pytest.raises(CheckpointError, match=r"cannot load checkpoint .*weights.pth: the file is truncated"):
        load_backbone_weights(build_detector(cfg), cfg)


def test_step_seed_differs_by_iteration_rank_and_seed() -> None:
    seeds = {step_seed(s, i, r) for s in range(3) for i in range(100) for r in range(4)}
    assert len(seeds) == 3 * 100 * 4
    assert all(0 <= s < 2**63 for s in seeds)
