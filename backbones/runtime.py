"""Training plumbing shared by the classifier trainer (`backbones/train.py`) and the detector trainer
(`detection/engine/`): device choice, the torchrun process group, mixed precision, and logging set-up.

Without torchrun's environment (``WORLD_SIZE`` unset or 1) every distributed helper is a one-process no-op, so
the same code runs under ``python`` and under ``torchrun``. Checkpoint files and their rotation live next door in
`backbones/checkpoint.py`.
"""

from __future__ import annotations

import datetime
import logging
import os
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "all_reduce_mean",
    "amp_dtype",
    "any_true",
    "autocast",
    "barrier",
    "cleanup",
    "data_parallel",
    "get_rank",
    "get_world_size",
    "grad_scaler",
    "init_distributed",
    "pick_device",
    "setup_logging",
    "summary_writer",
]

# A finite timeout: if a peer dies, the survivors fail instead of waiting forever.
PROCESS_GROUP_TIMEOUT = datetime.timedelta(minutes=10)


# --------------------------------------------------------------------------------------------- devices, workers
def _local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def pick_device(name: str | None = "auto") -> torch.device:
    """``"auto"`` / ``None``: this worker's GPU (``cuda:LOCAL_RANK``) when CUDA is available, else the CPU.
    ``"cuda"`` without an index also means ``cuda:LOCAL_RANK``; anything else is taken as given."""
    if name is None or name == "auto":
        return torch.device("cuda", _local_rank()) if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", _local_rank())
    return device


def init_distributed(device: torch.device) -> tuple[int, int]:
    """Join the process group torchrun describes (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``…): nccl for a CUDA
    ``device`` (made the current one), gloo otherwise. Returns ``(rank, world_size)``; ``(0, 1)`` without torchrun."""
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=PROCESS_GROUP_TIMEOUT)
    return get_rank(), get_world_size()


def get_rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def data_parallel(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` wrapped in DistributedDataParallel when a process group is running, else ``model`` itself.
    Train through the returned module; save and load the state of ``model`` (its keys have no ``module.`` prefix)."""
    if get_world_size() == 1:
        return model
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def cleanup() -> None:
    """Leave the process group (if any), so the process exits without gloo/nccl complaints."""
    if dist.is_initialized():
        dist.destroy_process_group()


def _reduce_device() -> torch.device:
    # nccl reduces CUDA tensors only; gloo reduces CPU tensors.
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def all_reduce_mean(values: dict[str, float]) -> dict[str, float]:
    """The mean of each scalar over all workers (for logging); ``values`` unchanged without a process group."""
    if not dist.is_initialized() or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=_reduce_device())
    dist.all_reduce(t)
    return {k: float(v) / get_world_size() for k, v in zip(keys, t)}


def any_true(flag: bool) -> bool:
    """True on every worker if ``flag`` is true on any (keeps workers in step when one must skip or stop)."""
    if not dist.is_initialized():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=_reduce_device())
    dist.all_reduce(t)
    return bool(t.item() > 0)


# ---------------------------------------------------------------------------------------------- mixed precision
def amp_dtype(device: torch.device) -> torch.dtype:
    """The autocast dtype for ``--amp``: float16 on CUDA (tensor cores), bfloat16 elsewhere (the CPU has no fast
    float16, and bfloat16's float32-sized exponent needs no loss scaling)."""
    return torch.float16 if device.type == "cuda" else torch.bfloat16


def autocast(device: torch.device, enabled: bool) -> torch.autocast:
    """``torch.autocast`` on ``device`` with ``amp_dtype(device)``; a no-op context when not ``enabled``."""
    return torch.autocast(device.type, dtype=amp_dtype(device), enabled=enabled)


def grad_scaler(device: torch.device, enabled: bool) -> torch.amp.GradScaler:
    """The loss scaler for ``--amp``: active only where ``amp_dtype`` is float16 (CUDA); a pass-through otherwise.
    Its ``state_dict`` belongs in the checkpoint either way."""
    return torch.amp.GradScaler(device.type, enabled=enabled and amp_dtype(device) == torch.float16)


# -------------------------------------------------------------------------------------------------------- logging
LOG_FORMAT = "[%(asctime)s %(levelname)s %(name)s] %(message)s"


def setup_logging(output_dir: Path | None, rank: int = 0) -> None:
    """Log to the console and, on rank 0, to ``output_dir/log.txt``; other ranks log warnings and errors only.

    Safe to call again: the console handler is installed once, and a later call with another ``output_dir`` moves
    the log file there (each run's ``log.txt`` holds that run's messages, also when runs share a process).
    """
    root = logging.getLogger()
    root.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    fmt = logging.Formatter(LOG_FORMAT, "%H:%M:%S")
    ours = [h for h in root.handlers if getattr(h, "_resdet", False)]
    if not any(isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler) for h in ours):
        _add_handler(root, logging.StreamHandler(sys.stderr), fmt)
    if output_dir is None or rank != 0:
        return
    output_dir.mkdir(parents=True, exist_ok=True)
    path = os.path.abspath(output_dir / "log.txt")
    for old in (h for h in ours if isinstance(h, logging.FileHandler)):
        if old.baseFilename == path:
            return
        root.removeHandler(old)
        old.close()
    _add_handler(root, logging.FileHandler(path), fmt)


def _add_handler(root: logging.Logger, handler: logging.Handler, fmt: logging.Formatter) -> None:
    handler.setFormatter(fmt)
    handler._resdet = True  # type: ignore[attr-defined]
    root.addHandler(handler)


def summary_writer(output_dir: Path, rank: int = 0) -> Any:
    """A TensorBoard ``SummaryWriter`` on ``output_dir/tensorboard`` (rank 0), or None on other ranks and when
    TensorBoard is not importable (a warning then: the scalars still reach ``log.txt``)."""
    if rank != 0:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        logging.getLogger(__name__).warning(
            'tensorboard is not installed (pip install -e ".[tensorboard]"); scalars go to log.txt only')
        return None
    return SummaryWriter(log_dir=str(output_dir / "tensorboard"))
