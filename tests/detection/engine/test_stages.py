"""run_stage: SIGTERM to the parent is passed on to the running stage, which is waited for (it saves and exits);
the parent then stops with one line. It used to exit alone, leaving the trainer running at full CPU."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from detection.engine.stages import StageFailed, run_stage

ROOT = Path(__file__).resolve().parents[3]

# A stand-in trainer: announces its pid, then on SIGTERM takes a moment to "save a checkpoint" and exits 143.
CHILD = """
import os, signal, sys, time
from pathlib import Path
marker = Path(sys.argv[1])
def stop(signum, frame):
    time.sleep(0.5)
    marker.with_suffix(".saved").write_text("saved")
    sys.exit(143)
signal.signal(signal.SIGTERM, stop)
marker.write_text(str(os.getpid()))
while True:
    time.sleep(0.05)
"""

# The parent: tools/quickstart.py's stage runner and error wrapper around that child.
PARENT = """
import sys
from tools.quickstart import run, stage_errors
@stage_errors
def main(argv=None):
    run([sys.executable, "-c", sys.argv[1], sys.argv[2]])
    return 0
sys.exit(main())
"""


def test_sigterm_is_forwarded_to_the_stage_and_waited_for(tmp_path: Path) -> None:
    marker = tmp_path / "child.pid"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    parent = subprocess.Popen([sys.executable, "-c", PARENT, CHILD, str(marker)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not marker.exists() or not marker.read_text():
        assert time.monotonic() < deadline and parent.poll() is None, parent.communicate()
        time.sleep(0.05)
    child_pid = int(marker.read_text())
    parent.send_signal(signal.SIGTERM)
    _, err = parent.communicate(timeout=60)
    assert parent.returncode == 143
    assert marker.with_suffix(".saved").read_text() == "saved"  # the child finished its save before the parent left
    with pytest.raises(ProcessLookupError):
        os.kill(child_pid, 0)  # and is gone
    assert err.strip().splitlines()[-1] == ("stopped: SIGTERM passed on to the running stage, which exited with "
                                            "code 143")
    assert "Traceback" not in err


def test_a_failing_stage_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(StageFailed, match="stage failed with exit code 3: "):
        run_stage([sys.executable, "-c", "import sys; sys.exit(3)"])
