"""Preemption: SIGTERM (what SLURM and Kubernetes send before killing a job) and SIGINT (Ctrl-C) turned into "finish
this step, save a checkpoint at the current iteration, stop" for the detector trainer.

``tools/train_det.py`` trains inside :func:`stop_signals` (``engine/run.py``): the handler only records the signal
on the trainer (``trainer.stop_signal``); ``Trainer.run`` checks it after each step (all DDP workers agree through one
all-reduce), and ``Trainer.stop`` saves and raises :class:`TrainingInterrupted`. Data-loading workers ignore both
signals (:func:`ignore_stop_signals`), so the batch in flight is not broken under the trainer.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from typing import Any

logger = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class TrainingInterrupted(RuntimeError):
    """Training stopped on SIGTERM or SIGINT after saving a checkpoint at the current iteration.
    ``exit_code`` is the shell's convention for death by that signal (143 for SIGTERM, 130 for Ctrl-C)."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum


@contextlib.contextmanager
def stop_signals(trainer: Any) -> Iterator[None]:
    """Inside the block, SIGTERM and SIGINT only set ``trainer.stop_signal`` (and log what happens next). A second
    signal acts at once (its default action: no save). Previous handlers are restored afterwards; only the main
    thread can install them, elsewhere this is a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        trainer.stop_signal = signum
        signal.signal(signum, signal.SIG_DFL)
        logger.warning("%s received: finishing iteration %d, then saving a checkpoint (send it again to stop at "
                       "once, without saving)", signal.Signals(signum).name, trainer.state.iteration)

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
