"""Run a pipeline stage (one of the command-line tools) as a child process the way a job scheduler expects.

``tools/quickstart.py`` and ``tools/quickstart_loc.py`` run each stage as a subprocess. A SIGTERM (what SLURM and
Kubernetes send) or Ctrl-C reaching the parent used to end the parent only, leaving the trainer running at full CPU
with no one waiting for it. Here the child runs in its own session, so a signal to the parent's process group
reaches it once, through the parent: :func:`run_stage` forwards SIGTERM and SIGINT to the child, waits for it (the
trainer saves a checkpoint and exits), then raises :class:`StageInterrupted`.
"""

from __future__ import annotations

import shlex
import signal
import subprocess
import sys
from collections.abc import Sequence
from types import FrameType

FORWARDED = (signal.SIGTERM, signal.SIGINT)


class StageFailed(RuntimeError):
    """A stage exited with a non-zero code (its own error line is above)."""

    def __init__(self, cmd: Sequence[str], returncode: int) -> None:
        self.returncode = returncode
        super().__init__(f"stage failed with exit code {returncode}: {shlex.join(cmd)}")


class StageInterrupted(RuntimeError):
    """The parent got SIGTERM / SIGINT; it was passed on to the stage, which has ended."""

    def __init__(self, signum: int, returncode: int) -> None:
        self.signum = signum
        self.returncode = returncode
        name = signal.Signals(signum).name
        super().__init__(f"{name} passed on to the running stage, which exited with code {returncode}")


def run_stage(cmd: Sequence[str]) -> None:
    """Print ``cmd``, run it and wait; SIGTERM / SIGINT meanwhile are forwarded to it (see the module docstring).

    Raises :class:`StageFailed` for a non-zero exit and :class:`StageInterrupted` after a forwarded signal."""
    print("\n$ " + shlex.join(cmd), flush=True)
    received: list[int] = []
    child = subprocess.Popen(list(cmd), start_new_session=True)

    def forward(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)
        if child.poll() is None:
            child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED}
    try:
        returncode = child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if child.poll() is None:  # an exception in the parent while waiting: do not leave the stage behind
            child.terminate()
            child.wait()
    sys.stdout.flush()
    if received:
        raise StageInterrupted(received[0], returncode)
    if returncode != 0:
        raise StageFailed(cmd, returncode)
