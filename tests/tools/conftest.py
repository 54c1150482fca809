"""Running the command-line tools as a user does, in a subprocess, on tiny generated data (see tiny_det.yaml)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from detection.data.shapes import generate_shapes

ROOT = Path(__file__).resolve().parents[2]
FAULT_INJECTION = Path(__file__).parent / "fault_injection"  # sitecustomize.py: RESDET_TEST_FAULT=rank:iter:action
TINY_CONFIG = ROOT / "tests" / "tiny_det.yaml"

Tool = Callable[..., subprocess.CompletedProcess]


def tool_env(fault: str | None = None) -> dict[str, str]:
    """One thread per process (2 shared cores), this checkout first on the path, optional fault injection."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("RESDET_TEST_FAULT", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    if fault is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(FAULT_INJECTION), env["PYTHONPATH"]])
        env["RESDET_TEST_FAULT"] = fault
    return env


def tool_command(name: str, *args: str | Path) -> list[str]:
    return [sys.executable, str(ROOT / "tools" / name), *map(str, args)]


def train_command(data_root: Path, output_dir: Path, *extra: str, dataset: str = "shapes") -> list[str]:
    """tools/train_det.py with the tiny config on the CPU; ``--flags`` and ``key=value`` overrides from ``extra``."""
    flags = [e for e in extra if e.startswith("--")]
    overrides = [e for e in extra if not e.startswith("--")]
    return tool_command(
        "train_det.py", "--dataset", dataset, "--data-root", data_root, "--output-dir", output_dir,
        "--config", TINY_CONFIG, "--device", "cpu", "--deterministic", "--no-progress", *flags, *overrides,
    )  # fmt: skip


@pytest.fixture(name="run_tool", scope="session")
def run_tool_fixture() -> Tool:
    """``run_tool(name, *args, fault=None, timeout=120, **popen_kwargs)``: run ``tools/<name>``, capture its output."""

    def run(name: str, *args: str | Path, fault: str | None = None, timeout: float = 120,
            **kwargs: object) -> subprocess.CompletedProcess:
        return subprocess.run(tool_command(name, *args), env=tool_env(fault), capture_output=True, text=True,
                              timeout=timeout, **kwargs)  # type: ignore[call-overload]

    return run


@pytest.fixture(name="run_train", scope="session")
def run_train_fixture() -> Tool:
    """``run_train(data_root, output_dir, *extra, fault=None, dataset="shapes")``: the tiny training run."""

    def run(data_root: Path, output_dir: Path, *extra: str, fault: str | None = None, dataset: str = "shapes",
            timeout: float = 300, **kwargs: object) -> subprocess.CompletedProcess:
        return subprocess.run(train_command(data_root, output_dir, *extra, dataset=dataset), env=tool_env(fault),
                              capture_output=True, text=True, timeout=timeout, **kwargs)  # type: ignore[call-overload]

    return run


@pytest.fixture(scope="module")
def tiny_shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 training and 4 validation shapes images of 64–96 px in COCO layout (read-only for the tests)."""
    root = tmp_path_factory.mktemp("shapes")
    generate_shapes(root, num_train=16, num_val=4, min_size=64, max_size=96)
    return root

