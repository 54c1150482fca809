"""Training plumbing shared by both trainers: device choice, the process group, mixed precision, logging set-up."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from backbones import runtime


# ------------------------------------------------------------------------------------------------------ devices
@pytest.mark.parametrize(
    ("name", "cuda", "expected"),
    [
        ("auto", False, "cpu"),
        (None, False, "cpu"),
        ("auto", True, "cuda:1"),  # this worker's GPU: LOCAL_RANK
        ("cuda", True, "cuda:1"),
        ("cuda:3", True, "cuda:3"),  # an explicit index is kept
        ("cpu", True, "cpu"),
    ],
)
def test_pick_device(name: str | None, cuda: bool, expected: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert runtime.pick_device(name) == torch.device(expected)


def test_without_torchrun_everything_is_a_one_process_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert runtime.init_distributed(torch.device("cpu")) == (0, 1)
    assert not torch.distributed.is_initialized()
    assert (runtime.get_rank(), runtime.get_world_size()) == (0, 1)
    assert runtime.all_reduce_mean({"loss": 2.5}) == {"loss": 2.5}
    assert runtime.any_true(True) and not runtime.any_true(False)
    model = nn.Linear(2, 2)
    assert runtime.data_parallel(model, torch.device("cpu")) is model
    runtime.barrier()
    runtime.cleanup()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gloo_worker(rank: int, port: int, results: dict[int, tuple]) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE="2")  # fmt: skip
    torch.set_num_threads(1)
    try:
        got = runtime.init_distributed(runtime.pick_device("cpu"))
        backend = torch.distributed.get_backend()
        mean = runtime.all_reduce_mean({"a": float(rank), "b": 10.0 * rank})
        anyone = runtime.any_true(rank == 1)
        nobody = runtime.any_true(False)
        wrapped = runtime.data_parallel(nn.Linear(2, 2), torch.device("cpu"))
        runtime.barrier()
        results[rank] = (got, backend, mean, anyone, nobody, isinstance(wrapped, nn.parallel.DistributedDataParallel))
    finally:
        runtime.cleanup()


def test_two_gloo_workers_agree_on_means_and_flags() -> None:
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_gloo_worker, args=(_free_port(), results), nprocs=2, join=True)
        results = dict(results)
    for rank in (0, 1):
        got, backend, mean, anyone, nobody, wrapped = results[rank]
        assert got == (rank, 2) and backend == "gloo"
        assert mean == {"a": 0.5, "b": 5.0}
        assert anyone and not nobody  # one worker's flag reaches every worker
        assert wrapped


# ----------------------------------------------------------------------------------------------- mixed precision
def test_amp_dtype_is_fp16_on_cuda_and_bf16_elsewhere() -> None:
    assert runtime.amp_dtype(torch.device("cuda", 0)) == torch.float16
    assert runtime.amp_dtype(torch.device("cpu")) == torch.bfloat16


def test_autocast_uses_the_amp_dtype_only_when_enabled() -> None:
    a = torch.randn(4, 4)
    with runtime.autocast(torch.device("cpu"), True):
        assert (a @ a).dtype == torch.bfloat16
    with runtime.autocast(torch.device("cpu"), False):
        assert (a @ a).dtype == torch.float32


def test_grad_scaler_scales_only_fp16() -> None:
    assert not runtime.grad_scaler(torch.device("cpu"), True).is_enabled()  # bf16 needs no loss scaling
    assert not runtime.grad_scaler(torch.device("cpu"), False).is_enabled()
    assert runtime.grad_scaler(torch.device("cpu"), True).state_dict() == {}
    if torch.cuda.is_available():
        assert runtime.grad_scaler(torch.device("cuda", 0), True).is_enabled()
        assert not runtime.grad_scaler(torch.device("cuda", 0), False).is_enabled()


# ------------------------------------------------------------------------------------------------------- logging
@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    """The root logger, restored (handlers and level) after the test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    root.handlers = [h for h in handlers if not getattr(h, "_resdet", False)]
    yield root
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers, root.level = handlers, level


def _ours(root: logging.Logger) -> list[logging.Handler]:
    return [h for h in root.handlers if getattr(h, "_resdet", False)]


def test_setup_logging_writes_log_txt_on_rank_0(root_logger: logging.Logger, tmp_path: Path) -> None:
    runtime.setup_logging(tmp_path / "run", rank=0)
    runtime.setup_logging(tmp_path / "run", rank=0)  # again: no second console or file handler
    assert len(_ours(root_logger)) == 2 and root_logger.level == logging.INFO
    logging.getLogger("resdet.test").info("iteration 7 done")
    text = (tmp_path / "run" / "log.txt").read_text()
    assert text.count("iteration 7 done") == 1 and "INFO resdet.test]" in text


def test_setup_logging_on_other_ranks_writes_no_file_and_only_warnings(
    root_logger: logging.Logger, tmp_path: Path
) -> None:
    runtime.setup_logging(tmp_path / "run", rank=1)
    assert root_logger.level == logging.WARNING
    assert not (tmp_path / "run").exists()
    assert [type(h) for h in _ours(root_logger)] == [logging.StreamHandler]


def test_setup_logging_moves_log_txt_to_the_next_run(root_logger: logging.Logger, tmp_path: Path) -> None:
    runtime.setup_logging(tmp_path / "first")
    logging.getLogger("resdet.test").info("first run")
    runtime.setup_logging(tmp_path / "second")
    logging.getLogger("resdet.test").info("second run")
    assert "second run" not in (tmp_path / "first" / "log.txt").read_text()
    assert "first run" not in (tmp_path / "second" / "log.txt").read_text()
    assert "second run" in (tmp_path / "second" / "log.txt").read_text()
    assert len(_ours(root_logger)) == 2
