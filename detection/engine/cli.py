"""The command-line convention every tool under ``tools/`` follows, defined once (docs/tools.md has the table):

``--config FILE`` (YAML), ``--data-root DIR`` (dataset root), ``--output-dir DIR`` (a tool writing several files) or
``--output FILE`` (one file), ``--weights FILE`` (a checkpoint to load), ``--device auto|cpu|cuda[:N]``, ``--amp``,
``--no-progress``, ``--json FILE`` (machine-readable result), ``--split NAME``, trailing ``key=value`` config
overrides; ``--help`` starts with a working example (``tool_parser``).

Old spellings keep working as hidden aliases: extra option strings of the same action (``add_flag(...,
old=("--voc-root",))``), which ``HelpFormatter`` leaves out of ``--help``.

Also the options ``tools/train_det.py`` and ``tools/test_det.py`` share (``add_run_arguments``) and the
``RunOptions`` they become. Heavy imports stay inside the functions that need them, so that every tool can build
its parser from this module cheaply.
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from detection.engine.run import RunOptions


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's layout (the example first) and shows each option under its conventional name only."""

    def _format_action_invocation(self, action: argparse.Action) -> str:
        old = getattr(action, "old_spellings", ())
        if old:
            action = copy.copy(action)
            action.option_strings = [s for s in action.option_strings if s not in old]
        return super()._format_action_invocation(action)


def tool_parser(doc: str | None, example: str, **kwargs: Any) -> argparse.ArgumentParser:
    """A tool's parser whose ``--help`` begins (after the usage line) with ``example:`` and one working command,
    then the tool's docstring."""
    description = f"example:\n  {example}\n\n{doc or ''}".rstrip()
    return argparse.ArgumentParser(description=description, formatter_class=HelpFormatter, **kwargs)


def add_flag(parser: argparse.ArgumentParser, name: str, *, old: Sequence[str] = (), **kwargs: Any) -> argparse.Action:
    """``parser.add_argument(name, ...)`` that also accepts the ``old`` spellings, hidden from ``--help``."""
    action = parser.add_argument(name, *old, **kwargs)
    action.old_spellings = tuple(old)  # type: ignore[attr-defined]  (read by HelpFormatter)
    return action


# The help text of each conventional flag; a tool adds its specifics in parentheses (``_help``).
HELP = {
    "--config": "YAML config overriding the defaults",
    "--data-root": "dataset root",
    "--output-dir": "where the tool writes its files",
    "--output": "the file to write",
    "--weights": "checkpoint to load",
    "--device": "auto, cpu, cuda or cuda:N; auto: this rank's GPU if there is one, else the CPU",
    "--amp": "mixed precision (fp16 on CUDA, bf16 on CPU)",
    "--no-progress": "no progress bar (log lines only)",
    "--json": "also write the result as JSON here",
    "--split": "dataset split",
    "overrides": "config overrides, e.g. solver.base_lr=0.01",
}


def _help(flag: str, detail: str | None) -> str:
    return f"{HELP[flag]} ({detail})" if detail else HELP[flag]


def add_config(parser: argparse.ArgumentParser, detail: str | None = None, *, default: Path | None = None,
               **kwargs: Any) -> argparse.Action:
    return add_flag(parser, "--config", **{"type": Path, "default": default, "metavar": "FILE",
                                           "help": _help("--config", detail), **kwargs})


def add_data_root(parser: argparse.ArgumentParser, detail: str | None = None, *, old: Sequence[str] = (),
                  **kwargs: Any) -> argparse.Action:
    return add_flag(parser, "--data-root", old=old, **{"type": Path, "default": None, "metavar": "DIR",
                                                       "help": _help("--data-root", detail), **kwargs})


def add_output_dir(parser: argparse.ArgumentParser, default: str | None, detail: str | None = None,
                   **kwargs: Any) -> argparse.Action:
    kind = kwargs.pop("type", Path)
    said = f"default {default}" + (f"; {detail}" if detail else "")
    return add_flag(parser, "--output-dir", **{"type": kind, "default": None if default is None else kind(default),
                                               "metavar": "DIR", "help": _help("--output-dir", said), **kwargs})


def add_output(parser: argparse.ArgumentParser, detail: str, **kwargs: Any) -> argparse.Action:
    """``--output FILE``: the one file a tool writes."""
    return add_flag(parser, "--output", **{"type": Path, "metavar": "FILE", "help": _help("--output", detail),
                                           **kwargs})


def add_weights(parser: argparse.ArgumentParser, detail: str, *, old: Sequence[str] = (),
                **kwargs: Any) -> argparse.Action:
    return add_flag(parser, "--weights", old=old, **{"type": Path, "metavar": "FILE",
                                                     "help": _help("--weights", detail), **kwargs})


def add_device(parser: argparse.ArgumentParser, *, default: str = "auto") -> argparse.Action:
    return add_flag(parser, "--device", default=default, help=_help("--device", f"default {default}"))


def add_amp(parser: argparse.ArgumentParser) -> argparse.Action:
    return add_flag(parser, "--amp", action="store_true", help=HELP["--amp"])


def add_no_progress(parser: argparse.ArgumentParser) -> argparse.Action:
    return add_flag(parser, "--no-progress", action="store_true", help=HELP["--no-progress"])


def add_json(parser: argparse.ArgumentParser, detail: str | None = None, *, old: Sequence[str] = (),
             **kwargs: Any) -> argparse.Action:
    return add_flag(parser, "--json", old=old, **{"type": Path, "metavar": "FILE", "help": _help("--json", detail),
                                                  **kwargs})


def add_split(parser: argparse.ArgumentParser, detail: str | None = None, *, default: str = "",
              **kwargs: Any) -> argparse.Action:
    said = f"default {default}" if default else "default: the dataset's test split"
    if detail:
        said = f"{detail}; {said}" if default else detail
    return add_flag(parser, "--split", **{"default": default, "metavar": "NAME", "help": _help("--split", said),
                                          **kwargs})


def add_overrides(parser: argparse.ArgumentParser, detail: str | None = None, *, dest: str = "overrides") -> None:
    """Trailing ``key=value`` config overrides (``dest``: the attribute the tool reads them from)."""
    parser.add_argument(dest, nargs="*", metavar="key=value", help=_help("overrides", detail))


def add_run_arguments(parser: argparse.ArgumentParser, *, output_dir: str) -> None:
    """The options ``tools/train_det.py`` and ``tools/test_det.py`` share; ``run_options`` reads them back."""
    from detection.data import DATASETS

    parser.add_argument("--dataset", required=True, choices=sorted(DATASETS))
    add_data_root(parser, "its standard layout; default datasets/<dataset>; shapes: generated there if missing")
    add_output_dir(parser, output_dir)
    add_device(parser)
    add_amp(parser)
    parser.add_argument("--strict", action="store_true",
                        help="stop at the first unreadable image, or one the model fails on, instead of skipping it")
    parser.add_argument("--no-optimize", action="store_true",
                        help="run the model as built (default: frozen BNs folded into the convs, channels-last)")
    add_no_progress(parser)
    add_overrides(parser)


def run_options(args: argparse.Namespace, **tool_options: Any) -> RunOptions:
    """``RunOptions`` from the arguments ``add_run_arguments`` defined, plus the calling tool's own fields."""
    from detection.engine.run import RunOptions

    return RunOptions(
        dataset=args.dataset,
        data_root=args.data_root or Path("datasets") / args.dataset,
        output_dir=args.output_dir,
        device=args.device,
        amp=args.amp,
        strict=args.strict,
        progress=not args.no_progress,
        optimize=not args.no_optimize,
        **tool_options,
    )
