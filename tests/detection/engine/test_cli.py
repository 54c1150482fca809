"""The command-line options the two detection tools share, and the RunOptions they become."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from detection.engine.cli import add_run_arguments, run_options


def parser(output_dir: str = "output/x") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    p.add_argument("--resume", action="store_true")  # a tool's own option
    add_run_arguments(p, output_dir=output_dir)
    return p


def test_defaults_and_overrides_become_run_options() -> None:
    args = parser("output/test").parse_args(["--dataset", "shapes", "--amp", "solver.max_iter=5", "test.x=[1,2]"])
    assert args.overrides == ["solver.max_iter=5", "test.x=[1,2]"]
    opts = run_options(args, resume=args.resume)
    assert opts.dataset == "shapes" and opts.data_root == Path("datasets/shapes")
    assert opts.output_dir == Path("output/test") and opts.device == "auto"
    assert opts.amp and not opts.strict and opts.progress and opts.optimize and not opts.resume


def test_every_shared_flag_reaches_run_options() -> None:
    argv = ["--dataset", "voc", "--data-root", "/data/VOCdevkit", "--output-dir", "out", "--device", "cpu", "--strict",
            "--no-optimize", "--no-progress", "--resume"]  # fmt: skip
    args = parser().parse_args(argv)
    opts = run_options(args, resume=args.resume, skip_nonfinite=True)
    assert (opts.dataset, opts.data_root, opts.output_dir, opts.device) == ("voc", Path("/data/VOCdevkit"),
                                                                            Path("out"), "cpu")  # fmt: skip
    assert opts.strict and not opts.optimize and not opts.progress and opts.resume and opts.skip_nonfinite


def test_unknown_dataset_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parser().parse_args(["--dataset", "imagenet1k"])
    assert "invalid choice: 'imagenet1k'" in capsys.readouterr().err


def test_tool_parser_puts_the_example_first_and_hides_old_spellings() -> None:
    from detection.engine.cli import add_data_root, add_output_dir, tool_parser

    p = tool_parser("Does a thing.", "python tools/x.py --data-root d")
    add_data_root(p, "x layout", old=("--x-root",), required=True)
    add_output_dir(p, "output/x", type=str)
    text = p.format_help()
    assert text.split("\n\n", 1)[1].startswith("example:\n  python tools/x.py --data-root d\n\nDoes a thing.")
    assert "--data-root DIR" in text and "--x-root" not in text and "dataset root (x layout)" in text
    args = p.parse_args(["--x-root", "d"])
    assert args.data_root == Path("d") and args.output_dir == "output/x"  # the tool's own type for the default too
