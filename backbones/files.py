"""Result files written atomically: a temporary name beside the target, fsync, then ``os.replace``.

A kill, a full disk or a file-size limit leaves the previous file (or none) under the final name, never half a
JSON or half a PNG; and the failure is one :class:`ResultWriteError` naming the file and the OS's reason (``No space
left on device`` alone says nothing about which file). Here, below ``detection``, so that the classifier's tools
write their results the same way; ``detection.files`` re-exports these. Checkpoints have their own writer,
``backbones.checkpoint.save_checkpoint``, built the same way. Logs and TensorBoard event files are streams, appended
to as a run goes, and are not written through here.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["ResultWriteError", "append_text", "atomic_open", "os_reason", "write_bytes", "write_json", "write_text"]


class ResultWriteError(OSError):
    """A result file could not be written; nothing partial is left under its name."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = Path(path)
        super().__init__(f"cannot write {self.path}: {reason}")

    def __str__(self) -> str:
        return str(self.args[0])


def os_reason(error: BaseException) -> str:
    """The OS's words for ``error`` (``No space left on device``), else its text, else its type."""
    return getattr(error, "strerror", None) or str(error) or type(error).__name__


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """``open(path, mode)`` whose content appears under ``path`` only when the block ends without an error.

    Writes go to ``.<name>.tmp.<pid>`` in the same folder (same file system, so the rename is atomic); on any
    error the temporary is removed and an ``OSError`` becomes :class:`ResultWriteError` naming ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    try:
        with open(tmp, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, ResultWriteError):
            raise
        raise ResultWriteError(path, os_reason(exc)) from exc
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (a PNG, an archive); returns the path."""
    with atomic_open(path, "wb") as f:
        f.write(data)
    return Path(path)


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return Path(path)


def write_json(path: str | os.PathLike[str], data: Any, *, indent: int | None = 2) -> Path:
    """``json.dumps(data)`` written atomically (a trailing newline when indented)."""
    return write_text(path, json.dumps(data, indent=indent) + ("\n" if indent is not None else ""))


def append_text(path: str | os.PathLike[str], text: str) -> Path:
    """``text`` added at the end of ``path`` (created if missing) by reading it and writing the whole file anew,
    atomically: a failure leaves the file as it was, never a half-appended table."""
    path = Path(path)
    try:
        old = path.read_text(encoding="utf-8") if path.exists() else ""
    except (OSError, UnicodeDecodeError) as exc:
        raise ResultWriteError(path, f"cannot read it to append: {os_reason(exc)}") from exc
    return write_text(path, old + text)
