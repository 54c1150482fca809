"""Helpers shared by the evaluation tests: PASCAL-style XML writing and loading the tools/ scripts."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[3]


def _write_pascal_xml(path: Path, objects: Sequence[tuple], filename: str = "x.jpg") -> Path:
    """Write ``objects`` ``[(name, (xmin, ymin, xmax, ymax)[, difficult])]`` as a VOC/ILSVRC annotation."""
    parts = [
        f"<annotation><filename>{filename}</filename><size><width>500</width><height>400</height></size>"
    ]
    for obj in objects:
        name, box = obj[0], obj[1]
        difficult = f"<difficult>{int(obj[2])}</difficult>" if len(obj) > 2 else ""
        coords = "".join(f"<{k}>{v:g}</{k}>" for k, v in zip(("xmin", "ymin", "xmax", "ymax"), box))
        parts.append(f"<object><name>{name}</name>{difficult}<bndbox>{coords}</bndbox></object>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts) + "\n</annotation>\n")
    return path


@pytest.fixture
def write_xml() -> Callable[..., Path]:
    return _write_pascal_xml


@pytest.fixture
def load_tool() -> Callable[[str], ModuleType]:
    """Import ``tools/<name>.py`` as a module (its ``main(argv)`` is then called in-process)."""

    def load(name: str) -> ModuleType:
        spec = importlib.util.spec_from_file_location(f"tools_{name}", REPO / "tools" / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
