"""The layout by role (docs/DESIGN.md, "The tree"): which package may import which, checked on every import
statement in the source (function-level ones included), and that no tool edits ``sys.path``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# package (a dotted prefix) → prefixes it must never import
FORBIDDEN = {
    "backbones": ("detection", "tools"),
    "detection.modeling": ("detection.fast", "detection.testtime", "detection.deploy", "detection.weights",
                           "detection.engine", "detection.build", "detection.data", "detection.evaluation",
                           "detection.localization", "tools"),
    "detection.fast": ("detection.testtime", "detection.deploy", "detection.weights", "detection.engine",
                       "detection.build", "detection.localization", "tools"),
    "detection.testtime": ("detection.fast", "detection.deploy", "detection.weights", "detection.engine",
                           "detection.build", "detection.localization", "tools"),
    "detection.weights": ("detection.fast", "detection.testtime", "detection.deploy", "detection.engine",
                          "detection.localization", "tools"),
    "detection.deploy": ("detection.engine", "detection.localization", "tools"),
    "detection.data": ("detection.engine", "detection.fast", "detection.testtime",
                       "detection.deploy", "detection.weights", "detection.localization", "tools"),
    "detection.evaluation": ("detection.engine", "detection.modeling", "detection.fast", "detection.testtime",
                             "detection.deploy", "detection.weights", "detection.localization", "tools"),
    "detection.localization": ("detection.engine", "detection.fast", "detection.testtime", "detection.deploy",
                               "tools"),
    "detection": ("detection.engine", "tools"),  # the rest of detection/ (build, config, devkit, errors)
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def rule_for(module: str) -> tuple[str, tuple[str, ...]] | None:
    for package in sorted(FORBIDDEN, key=len, reverse=True):
        if module == package or module.startswith(package + "."):
            return package, FORBIDDEN[package]
    return None


def under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def source_files() -> list[Path]:
    return sorted(p for folder in ("backbones", "detection") for p in (ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize("path", source_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_follow_the_layout(path: Path) -> None:
    module = module_name(path)
    if under(module, "detection.engine") or module == "detection._moved":
        return  # the engine may import anything below it; _moved names old paths as strings only
    rule = rule_for(module)
    assert rule is not None, f"{module} is in no package of the layout (tests/test_layout.py FORBIDDEN)"
    package, forbidden = rule
    wrong = [
        f"line {line}: {name}" for line, name in imported_modules(path)
        if any(under(name, prefix) for prefix in forbidden)
        and not (package == "detection" and module == "detection" and name == "detection.deploy.predictor")
    ]
    assert not wrong, f"{module} ({package}) imports what its role may not: {wrong}"


def test_old_module_paths_still_import() -> None:
    import importlib
    import warnings

    from detection._moved import MOVED

    for old, new in MOVED.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            assert importlib.import_module(old) is importlib.import_module(new)


def test_nothing_inside_uses_the_old_paths() -> None:
    from detection._moved import MOVED

    folders = ("backbones", "detection", "tools", "tests")
    users = [
        f"{path.relative_to(ROOT)}:{line}: {name}"
        for folder in folders for path in sorted((ROOT / folder).rglob("*.py"))
        if path.name != "test_layout.py"
        for line, name in imported_modules(path)
        if any(under(name, old) for old in MOVED)
    ]
    assert not users, users


def test_tools_do_not_edit_sys_path() -> None:
    editing = [str(p.relative_to(ROOT)) for p in sorted((ROOT / "tools").rglob("*.py"))
               if "sys.path" in p.read_text()]
    assert not editing, f"tools edit sys.path (tools is a package: python tools/x.py and resdet-x): {editing}"
