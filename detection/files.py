"""Result files written atomically (``atomic_open``, ``write_text``, ``write_json``, ``write_bytes``, ``append_text``:
from :mod:`backbones.files`, a temporary name beside the target, fsync, then ``os.replace``; a failure is one
:class:`ResultWriteError` naming the file) and JSON / YAML / text inputs read with one line's error naming the file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml

# The atomic writers live in backbones (the classifier's tools write results too); this is their home for detection.
from backbones.files import ResultWriteError, append_text, atomic_open, write_bytes, write_json, write_text
from backbones.files import os_reason as _reason

__all__ = ["ResultWriteError", "append_text", "atomic_open", "output_file_problem", "parse_yaml", "read_json",
           "read_text_file", "read_yaml", "short_repr", "write_bytes", "write_json", "write_text"]


def output_file_problem(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` cannot be written as an output file (one line: a folder, a name too long, a folder that cannot be
    created or written), checked before any work by creating and removing it; None when it can."""
    path = Path(path)
    try:
        if path.is_dir():
            return f"{path} is a folder; give a file name"
        path.parent.mkdir(parents=True, exist_ok=True)
        existed = path.exists()
        with open(path, "ab"):
            pass
        if not existed:
            path.unlink()
    except OSError as exc:
        return f"cannot write {path}: {_reason(exc)}"
    return None


def short_repr(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, for error lines; never fails (a 5,000-digit int has no repr)."""
    try:
        text = repr(value)
    except ValueError:  # int too large to convert to a string
        text = f"<an integer of about {int(value.bit_length() * 0.30103)} digits>"
    return text if len(text) <= limit else text[: limit - 15] + f"… ({len(text)} chars)"


def read_text_file(path: str | os.PathLike[str], error: type[Exception] = ValueError, *,
                   what: str = "text file") -> str:
    """A file's UTF-8 text, or one ``error(message)`` naming the file: missing or unreadable, a folder, UTF-16 or
    other non-UTF-8 bytes (result files and annotations are UTF-8; a byte-order mark is allowed)."""
    path = Path(path)
    if path.is_dir():
        raise error(f"{path}: is a folder, not a {what}")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {_reason(exc)}") from None
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise error(f"{path}: UTF-16 text; a {what} must be UTF-8")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text (byte {exc.start}); a {what} must be UTF-8") from None


def read_json(path: str | os.PathLike[str], error: type[Exception] = ValueError, *, what: str = "JSON file") -> Any:
    """The parsed content of a JSON file, or one ``error(message)`` naming the file and the problem: those of
    :func:`read_text_file`, invalid JSON (with the line), a number of over 4,300 digits, nesting too deep for the
    parser. Never a traceback from the json module."""
    text = read_text_file(path, error, what=what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None
    except RecursionError:
        raise error(f"{path}: JSON nested too deeply to read") from None
    except ValueError as exc:  # "Exceeds the limit (4300 digits) for integer string conversion"
        raise error(f"{path}: {str(exc).split(';')[0]}") from None


# A config has ~100 values; a YAML "billion laughs" (nested aliases, ×10 per level) expands 400 bytes into gigabytes
# in whatever walks it next. Documents whose aliases expand beyond this many nodes are refused before constructing.
MAX_YAML_NODES = 100_000
MAX_YAML_BYTES = 1 << 20


def _expanded_nodes(root: yaml.Node, error: type[Exception]) -> int:
    """How many nodes ``root`` has with every alias expanded (shared nodes counted per reference), stopping as soon
    as the count passes :data:`MAX_YAML_NODES`; ``error`` for a document that refers to itself."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise error("a YAML alias refers to its own anchor (a recursive document)")
        active.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        else:
            children = []
        for child in children:
            total += size(child)
            if total > MAX_YAML_NODES:
                break
        active.discard(key)
        sizes[key] = total
        return total

    return size(root)


def parse_yaml(text: str, error: type[Exception] = ValueError) -> Any:
    """``yaml.safe_load(text)``, refusing documents whose aliases expand beyond :data:`MAX_YAML_NODES` nodes (one
    ``error``, before anything is built from them); YAML errors become ``error`` too."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_nodes(node, error) > MAX_YAML_NODES:
            raise error(f"YAML aliases expand to more than {MAX_YAML_NODES} values; refused (a config has about 100)")
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        text = " ".join(str(exc).split())
        raise error(f"invalid YAML: {text if len(text) <= 300 else text[:300] + '…'}") from None
    except RecursionError:
        raise error("YAML nested too deeply; refused") from None
    finally:
        loader.dispose()


def read_yaml(path: str | os.PathLike[str], error: type[Exception] = ValueError, *, what: str = "YAML file") -> Any:
    """A YAML file's document (:func:`parse_yaml`), or one ``error`` naming the file: those of
    :func:`read_text_file`, over 1 MiB, invalid YAML, or aliases that expand without bound."""
    path = Path(path)
    try:
        too_big = path.is_file() and path.stat().st_size > MAX_YAML_BYTES
    except OSError:
        too_big = False
    if too_big:
        raise error(f"{path}: {path.stat().st_size} bytes, over the {MAX_YAML_BYTES}-byte limit for a {what}")
    text = read_text_file(path, error, what=what)
    try:
        return parse_yaml(text, error)
    except error as exc:
        raise error(f"{path}: {exc}") from None
