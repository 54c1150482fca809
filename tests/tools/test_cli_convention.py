"""Every tool follows one command-line convention (detection/engine/cli.py, docs/tools.md): its ``--help`` starts
with a working example, the same flag names mean the same things with the same help text, old spellings still
parse (hidden from ``--help``), and each tool has a ``resdet-*`` console script."""

from __future__ import annotations

import importlib
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from detection.engine.cli import HELP

ROOT = Path(__file__).resolve().parents[2]
NOT_TOOLS = {"__init__", "entry_points"}  # the package, script wrappers
TOOLS = sorted(p.stem for p in (ROOT / "tools").glob("*.py") if p.stem not in NOT_TOOLS and not p.stem.startswith("_"))

OVERRIDES = "key=value"
# The conventional flags each tool has the concept of (a subcommand's after a colon).
EXPECTED = {
    "train_det": {"--config", "--data-root", "--output-dir", "--device", "--amp", "--no-progress", OVERRIDES},
    "test_det": {"--weights", "--config", "--data-root", "--output-dir", "--device", "--amp", "--no-progress",
                 "--json", "--split", OVERRIDES},
    "demo": {"--weights", "--config", "--output-dir", "--device", "--amp", "--no-progress", OVERRIDES},
    "browse_dataset": {"--config", "--data-root", "--output-dir", "--split", OVERRIDES},
    "eval_voc": {"--data-root", "--split", "--json", "--no-progress"},
    "eval_coco": {"--data-root", "--split", "--json"},
    "eval_imagenet:det": {"--data-root", "--split", "--json", "--no-progress"},
    "eval_imagenet:loc": {"--data-root", "--json", "--no-progress"},
    "eval_cls": {"--weights", "--data-root", "--device", "--amp", "--no-progress", "--json"},
    "train_cls": {"--data-root", "--output-dir", "--device", "--amp", "--no-progress"},
    "train_loc": {"--weights", "--config", "--data-root", "--output-dir", "--device", "--no-progress", OVERRIDES},
    "test_loc": {"--weights", "--data-root", "--output-dir", "--device", "--no-progress", "--json", "--split"},
    "convert_weights": {"--weights", "--config", "--output", OVERRIDES},
    "quickstart": {"--data-root", "--output-dir", "--device", "--no-progress", OVERRIDES},
    "quickstart_loc": {"--config", "--data-root", "--output-dir", "--device", "--no-progress", OVERRIDES},
    "benchmark": {"--config", "--device", "--json", OVERRIDES},
    "benchmark_loader": {"--data-root"},
    "benchmark_memory": {"--config", "--device"},
    "benchmark_system": {"--config", "--json", OVERRIDES},
    "export": {"--weights", "--output", OVERRIDES},
    "prepare_dataset": {"--data-root", "--no-progress"},
    "tables": {"--json"},
    "convert_dataset": {"--data-root", "--split", "--output"},
    "analyze_results": {"--data-root", "--output-dir", "--json", "--split", "--no-progress"},
    "plot_training": {"--output"},
    "benchmark_analysis": {"--json"},
}
OLD_SPELLINGS = {"--voc-root", "--ilsvrc-root", "--annotations", "--root", "--batch", "--rpn-weights", "--classifier",
                 "--input"}  # fmt: skip


def tool(name: str):  # noqa: ANN201  (a tool module)
    return importlib.import_module(f"tools.{name}")


def help_text(name: str, capsys: pytest.CaptureFixture[str]) -> str:
    """What ``tools/<name>.py [subcommand] --help`` prints, run in-process through the tool's ``main``."""
    module, _, sub = name.partition(":")
    try:
        code = tool(module).main([*([sub] if sub else []), "--help"])
    except SystemExit as exc:  # argparse's exit after the help; torchrun's @record turns exit 0 into a return
        code = exc.code
    assert code in (0, None)
    return capsys.readouterr().out


def options(text: str) -> dict[str, str]:
    """Each entry of ``--help``'s argument lists (``--flag``, or a positional's name) with its help text."""
    starts = [i for i in (text.find("\npositional arguments:\n"), text.find("\noptions:\n")) if i >= 0]
    shown: dict[str, str] = {}
    current = None
    for line in text[min(starts):].splitlines():
        if re.match(r"^  \S", line):  # "  --flag METAVAR   its help" (the help may start on the next line)
            invocation, _, rest = line.strip().partition("  ")
            current = invocation.split()[0].rstrip(",")
            shown[current] = rest.strip()
        elif current and re.match(r"^ {3,}\S", line):  # the help's continuation lines
            shown[current] = f"{shown[current]} {line.strip()}".strip()
        else:
            current = None
    return shown


def example(text: str) -> list[str]:
    lines = text.split("\n\n", 1)[1].splitlines()
    assert lines[0] == "example:", f"--help does not start with an example: {lines[:2]}"
    return shlex.split(lines[1], comments=True)


HELP_CASES = sorted(EXPECTED)


def test_every_tool_is_covered() -> None:
    assert {name.split(":")[0] for name in EXPECTED} == set(TOOLS)


@pytest.mark.parametrize("name", HELP_CASES)
def test_help_starts_with_a_working_example_and_uses_the_conventional_flags(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    text = help_text(name, capsys)
    module = name.split(":")[0]
    if ":" not in name:  # a subcommand's help has no example of its own: the tool's has it
        command = example(text)
        assert command[:2] == ["python", f"tools/{module}.py"]
        for word in command:  # the configs an example names are in the checkout
            if word.startswith("configs/"):
                assert (ROOT / word).is_file(), word
        parser = tool(module).build_parser()
        args = parser.parse_intermixed_args(command[2:]) if module in {"train_loc", "convert_weights"} else \
            parser.parse_args(command[2:])  # fmt: skip
        assert args is not None
    shown = options(text)
    flags = set(shown)
    missing = EXPECTED[name] - flags
    assert not missing, f"{name} --help lacks {sorted(missing)}"
    assert not flags & OLD_SPELLINGS, f"{name} --help shows old spellings {sorted(flags & OLD_SPELLINGS)}"
    for flag in EXPECTED[name] - {OVERRIDES}:  # one help text per flag, defined in detection/engine/cli.py
        assert shown[flag].startswith(HELP[flag]), f"{name} {flag}: {shown[flag]!r}"


# (tool, argv with the old spelling, the same with the conventional one)
OLD_AND_NEW = [
    ("eval_voc", ["--voc-root", "d", "--results", "r"], ["--data-root", "d", "--results", "r"]),
    ("eval_coco", ["--annotations", "a.json", "--results", "r"], ["--data-root", "a.json", "--results", "r"]),
    ("eval_imagenet", ["det", "--ilsvrc-root", "d", "--results", "r"], ["det", "--data-root", "d", "--results", "r"]),
    ("eval_imagenet", ["loc", "--ilsvrc-root", "d", "--results", "r"], ["loc", "--data-root", "d", "--results", "r"]),
    ("eval_cls", ["--arch", "a", "--weights", "w", "--data-root", "d", "--output", "o.json"],
     ["--arch", "a", "--weights", "w", "--data-root", "d", "--json", "o.json"]),
    ("train_loc", ["rcnn", "--data-root", "d", "--rpn-weights", "rpn.pth"],
     ["rcnn", "--data-root", "d", "--weights", "rpn.pth"]),
    ("test_loc", ["--data-root", "d", "--rpn-weights", "rpn.pth", "--classifier", "c.pth"],
     ["--data-root", "d", "--weights", "rpn.pth", "--cls-weights", "c.pth"]),
    ("convert_weights", ["--input", "x.npz", "--output", "y.pth"], ["--weights", "x.npz", "--output", "y.pth"]),
    ("benchmark", ["--batch", "3"], ["--batch-size", "3"]),
    ("benchmark_loader", ["--root", "d", "--batch", "3"], ["--data-root", "d", "--batch-size", "3"]),
    ("benchmark_memory", ["--batch", "3"], ["--batch-size", "3"]),
]


@pytest.mark.parametrize(("name", "old", "new"), OLD_AND_NEW, ids=[f"{c[0]}:{c[1][0]}" for c in OLD_AND_NEW])
def test_old_spellings_still_parse(name: str, old: list[str], new: list[str]) -> None:
    parser = tool(name).build_parser()
    parse = parser.parse_intermixed_args if name in {"train_loc", "convert_weights"} else parser.parse_args
    assert vars(parse(old)) == vars(parse(new))


def test_a_required_flag_given_by_its_old_spelling_satisfies_it(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        tool("eval_voc").build_parser().parse_args(["--results", "r"])
    assert "--data-root" in capsys.readouterr().err  # the error names the conventional flag


def test_every_tool_has_a_console_script() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert {f"resdet-{name.replace('_', '-')}" for name in TOOLS} <= set(scripts)
    for name, target in scripts.items():
        module, _, function = target.partition(":")
        assert callable(getattr(importlib.import_module(module), function)), f"{name} = {target}"


def test_a_tool_runs_as_a_script(tmp_path: Path) -> None:
    """``python tools/eval_cls.py --help`` from another folder: the file imports what it needs without the tests'
    path setup (only the installed or PYTHONPATH'd packages)."""
    env_path = {"PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "eval_cls.py"), "--help"], cwd=tmp_path,
                          capture_output=True, text=True, env=env_path, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n\n", 1)[1].startswith("example:\n  python tools/eval_cls.py ")


class StageCommands(Exception):
    """Raised by the patched runner once the quickstart has built its commands, so nothing is trained."""


@pytest.mark.parametrize("name", ["quickstart", "quickstart_loc"])
def test_quickstart_stage_commands_parse_with_the_stage_tools(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The quickstarts call the other tools by their conventional flags: every stage command they would run parses
    with that tool's own parser (the stages themselves run in tests/tools/test_quickstart.py)."""
    commands: list[list[str]] = []

    def record(cmd: list[str]) -> None:
        commands.append(cmd)

    quickstart = tool(name)
    monkeypatch.setattr(quickstart, "run", record)
    data = tmp_path / "data"
    if name == "quickstart":
        argv = ["--num-train", "2", "--num-val", "2", "--cls-iters", "10", "--device", "cpu"]
    else:
        from detection.localization.data import generate_cls_loc

        generate_cls_loc(data, num_classes=2, train_per_class=2, num_val=2, min_size=48, max_size=64)
        argv = ["--device", "cpu"]
    with pytest.raises(FileNotFoundError):  # the metrics the skipped stages would have written
        quickstart.main([*argv, "--data-root", str(data), "--output-dir", str(tmp_path / "out"), "--no-progress"])
    assert len(commands) == (2 if name == "quickstart" else 4)
    for cmd in commands:
        stage = Path(cmd[1]).stem
        parser = tool(stage).build_parser()
        args = parser.parse_intermixed_args(cmd[2:]) if stage == "train_loc" else parser.parse_args(cmd[2:])
        assert args.device == "cpu" and args.no_progress is True
