"""What keeps a training run safe from its surroundings: one run per output folder (a writable-folder check and a
``flock``-held ``train.lock``) and preemption (SIGTERM / SIGINT turned into "finish this step, save, stop").

- :func:`prepare_output_dir`: the output path must be (or become) a writable folder; one clear error otherwise.
- :class:`RunLock`: ``OUTPUT_DIR/train.lock`` held with ``flock`` for the whole run. The kernel drops the lock when
  the process ends, however it ends, so a crashed or SIGKILLed run never leaves the folder locked; the file itself
  stays (it only records the last holder's pid and host, for the error message). :func:`locked_output_dir` does
  both on rank 0 for the three trainers.
- :func:`stop_signals`: inside it, SIGTERM (what SLURM and Kubernetes send before killing a job) and SIGINT
  (Ctrl-C) only set ``loop.stop_signal``; :class:`backbones.loop.TrainLoop` checks it after each step (all DDP
  workers agree through one all-reduce), saves a checkpoint at the current iteration and raises
  :class:`TrainingInterrupted`. Data-loading workers ignore both signals (:func:`ignore_stop_signals`), so the
  batch in flight is not broken under the trainer.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "STOP_SIGNALS",
    "RunDirError",
    "RunLock",
    "TrainingInterrupted",
    "ignore_stop_signals",
    "signal_safe_worker_init",
    "locked_output_dir",
    "prepare_output_dir",
    "stop_signals",
]

logger = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


# ------------------------------------------------------------------------------------------------ the run folder
class RunDirError(RuntimeError):
    """The output folder cannot hold this run: not a writable folder, locked by another run, or holding another
    run's checkpoints."""


def prepare_output_dir(path: Path) -> Path:
    """Create ``path`` (and parents) and check that files can be written in it; :class:`RunDirError` otherwise."""
    try:
        if path.exists() and not path.is_dir():
            raise RunDirError(f"output path {path} exists and is not a folder; pass a folder to --output-dir")
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise RunDirError(f"cannot write to output folder {path}: {exc.strerror or exc}") from None
    return path


class RunLock:
    """An exclusive ``flock`` on ``directory/train.lock``; use as a context manager or ``acquire``/``release``."""

    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / "train.lock"
        self._file: Any = None

    def acquire(self) -> RunLock:
        try:
            import fcntl
        except ImportError:  # not POSIX (Windows): no flock; the folder checks still apply
            logger.warning("no file locking on this platform; %s is not protected against a second run", self.path)
            return self
        try:
            handle = open(self.path, "a+")  # noqa: SIM115 - held open for the whole run on purpose
        except OSError as exc:
            raise RunDirError(f"cannot create lock file {self.path}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown process"
            handle.close()
            raise RunDirError(
                f"another training run ({holder}) is using {self.path.parent}; wait for it to finish or pass a new "
                "--output-dir"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        self._file = handle
        return self

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing the descriptor drops the flock
            self._file = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextlib.contextmanager
def locked_output_dir(path: Path, rank: int) -> Iterator[Path]:
    """On rank 0: :func:`prepare_output_dir` and hold :class:`RunLock` for the block (other ranks write nothing)."""
    lock = RunLock(path)
    if rank == 0:
        prepare_output_dir(path)
        lock.acquire()
    try:
        yield path
    finally:
        lock.release()


# --------------------------------------------------------------------------------------------------- preemption
class TrainingInterrupted(RuntimeError):
    """Training stopped on SIGTERM or SIGINT after saving a checkpoint at the current iteration.
    ``exit_code`` is the shell's convention for death by that signal (143 for SIGTERM, 130 for Ctrl-C)."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum


@contextlib.contextmanager
def stop_signals(loop: Any) -> Iterator[None]:
    """Inside the block, SIGTERM and SIGINT only set ``loop.stop_signal`` (and log what happens next). A second
    signal acts at once (its default action: no save). Previous handlers are restored afterwards; only the main
    thread can install them, elsewhere this is a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        loop.stop_signal = signum
        signal.signal(signum, signal.SIG_DFL)
        logger.warning("%s received: finishing iteration %d, then saving a checkpoint (send it again to stop at "
                       "once, without saving)", signal.Signals(signum).name, loop.state.iteration)

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def ignore_stop_signals(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: Ctrl-C reaches the whole process group and SLURM signals every process of a
    job step; a loading worker that died of it would break the batch the trainer finishes before saving."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def _ignore_then(init: Callable[[int], None] | None, worker_id: int) -> None:
    ignore_stop_signals(worker_id)
    if init is not None:
        init(worker_id)


def signal_safe_worker_init(init: Callable[[int], None] | None = None) -> Callable[[int], None]:
    """A DataLoader ``worker_init_fn`` that ignores the stop signals, then runs ``init`` (picklable)."""
    return functools.partial(_ignore_then, init)
