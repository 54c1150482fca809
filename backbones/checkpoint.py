"""Checkpoint files: atomic writes, safe (``weights_only``) reads, and recovery from corrupt files.

A toolkit checkpoint is a dict with ``"model"`` (a state dict) plus optional ``"optimizer"``, ``"scheduler"``,
``"iteration"``, ``"rng"`` (from ``get_rng_state``), ``"config"`` (plain dict) and ``"classes"`` (list of names).
Everything in it must be loadable with ``torch.load(weights_only=True)``: tensors, numbers, strings, None and
lists/tuples/dicts of those. ``CheckpointRotation`` names, rotates and finds the numbered checkpoints of a training
run (both trainers use it).
"""

from __future__ import annotations

import logging
import os
import pickle
import random
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "CheckpointError",
    "CheckpointRotation",
    "CheckpointWriteError",
    "get_rng_state",
    "latest_good_checkpoint",
    "load_array_pickle",
    "load_checkpoint",
    "safe_torch_load",
    "save_checkpoint",
    "set_rng_state",
]

logger = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be used: missing, truncated, corrupt, or containing code (untrusted pickle)."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"cannot load checkpoint {self.path}: {reason}")


def nonfinite_tensors(state: Any) -> str | None:
    """None when every floating-point tensor (or numpy array) of the mapping ``state`` is finite; else a short
    description naming the first few that hold NaN or inf, e.g. ``2 tensors hold NaN/inf: rpn.head.conv.weight,
    roi_heads.predictor.bbox_pred.bias``. A model with one NaN weight scores mAP 0 without another sign."""
    import numpy as np

    bad = []
    for key, value in state.items() if hasattr(state, "items") else ():
        if torch.is_tensor(value) and (value.is_floating_point() or value.is_complex()):
            finite = bool(torch.isfinite(value).all())
        elif isinstance(value, np.ndarray) and value.dtype.kind in "fc":
            finite = bool(np.isfinite(value).all())
        else:
            continue
        if not finite:
            bad.append(str(key))
    if not bad:
        return None
    shown = ", ".join(name[:80] for name in bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
    return f"{len(bad)} tensor{'s' if len(bad) > 1 else ''} hold{'' if len(bad) > 1 else 's'} NaN/inf: {shown}"


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (disk full, read-only folder, file-size limit); the previous file, if any,
    is intact."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = Path(path)
        super().__init__(f"cannot write checkpoint {self.path}: {reason}")


def _write_failure(error: BaseException, directory: Path) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    cause = error.__cause__ or error.__context__
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror
    try:
        free = shutil.disk_usage(directory).free
    except OSError:
        free = None
    if free is not None and free < 64 << 20:
        return f"no space left on device ({free >> 20} MiB free in {directory})"
    return f"the write failed ({type(error).__name__}: {_first_line(error)}; disk full or a file-size limit?)"


_TEMPORARY_SUFFIX = ".tmp."  # save_checkpoint writes ``.<name>.tmp.<pid>`` first


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically: a crash leaves either the old file or the new one, never half.

    The data go to a temporary file in the same directory (same filesystem, so the rename is atomic), which is
    fsynced before ``os.replace``. Parent directories are created. Returns the final path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}{_TEMPORARY_SUFFIX}{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:
        # torch.save reports a failed write as RuntimeError("...unexpected pos..."): say what happened instead.
        raise CheckpointWriteError(path, _write_failure(exc, path.parent)) from None
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_directory(path.parent)
    return path


def _fsync_directory(directory: Path) -> None:
    # Makes the rename itself durable; not supported on every platform/filesystem, where it is skipped.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def safe_torch_load(path: str | os.PathLike[str], map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with every failure turned into a ``CheckpointError`` naming the file."""
    path = Path(path)
    try:
        if path.is_dir():
            raise CheckpointError(path, "it is a folder; give the checkpoint file in it (e.g. model_final.pth)")
        if not path.is_file():
            raise CheckpointError(path, "file does not exist")
    except OSError as e:  # a name too long
        raise CheckpointError(path, e.strerror or str(e)) from None
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        # weights_only refuses any global it does not allow-list: that is how code-carrying pickles show up.
        raise CheckpointError(
            path,
            "it contains Python objects that weights_only loading refuses (an untrusted or non-tensor pickle; "
            f"only tensors, numbers, strings and containers are accepted; {_refused_global(e)}). "
            "Do not load it with weights_only=False unless you trust its origin.",
        ) from e
    except (
        RuntimeError,
        EOFError,
        zipfile.BadZipFile,
        ValueError,
        OSError,
        UnicodeDecodeError,
        IndexError,
        KeyError,
    ) as e:
        raise CheckpointError(path, f"the file is truncated or corrupt ({type(e).__name__}: {_first_line(e)})") from e


def _refused_global(error: BaseException) -> str:
    # torch's message opens with generic advice; the line naming the refused global is the useful part.
    lines = [line.strip() for line in str(error).splitlines() if "GLOBAL" in line or "Unsupported" in line]
    return lines[0] if lines else _first_line(error)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# Everything a pickle of numpy arrays, numbers, strings, lists and dicts needs (numpy 1 and 2 module names, pickle
# protocols 2–5); any other global (os.system, a class to instantiate) is refused before it can run.
_ARRAY_PICKLE_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),
}


class _ArraysOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ARRAY_PICKLE_GLOBALS:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: only numpy arrays, numbers, strings, lists and dicts are expected"
            )
        return super().find_class(module, name)


def load_array_pickle(path: str | os.PathLike[str]) -> Any:
    """A plain pickle of numpy arrays in containers (MSRA Caffe dumps, detectron2 model-zoo ``.pkl`` files),
    read without ever running pickled code. Python 2 era pickles are read with ``encoding="latin1"``.

    Raises ``CheckpointError(path, reason)`` for a missing, corrupt or code-carrying file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "file does not exist")
    try:
        with open(path, "rb") as f:
            return _ArraysOnlyUnpickler(f, encoding="latin1").load()
    except pickle.UnpicklingError as e:
        raise CheckpointError(path, str(e)) from e
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, UnicodeDecodeError) as e:
        raise CheckpointError(path, f"the file is truncated or corrupt ({type(e).__name__}: {_first_line(e)})") from e


def load_checkpoint(path: str | os.PathLike[str], map_location: Any = "cpu") -> dict[str, Any]:
    """Read a toolkit checkpoint (a dict with ``"model"``) with ``weights_only=True``.

    Raises ``CheckpointError(path, reason)`` for a missing, truncated, corrupt or untrusted file, or one that is
    not a toolkit checkpoint.
    """
    state = safe_torch_load(path, map_location=map_location)
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(path, "not a toolkit checkpoint (expected a dict with a 'model' entry)")
    model = state["model"]
    if not isinstance(model, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in model.items()):
        raise CheckpointError(path, f"its 'model' entry is not a state dict (names → tensors) but "
                                    f"{_describe(model)}")
    return state


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        bad = next((k for k, v in value.items() if not (isinstance(k, str) and torch.is_tensor(v))), None)
        return f"a dict whose entry {bad!r} is {type(value.get(bad)).__name__}"
    return f"a {type(value).__name__}"


def _iteration_of(path: Path) -> int | None:
    numbers = re.findall(r"\d+", path.stem)
    return int(numbers[-1]) if numbers else None


def latest_good_checkpoint(directory: str | os.PathLike[str], pattern: str = "model_*.pth") -> Path | None:
    """The newest checkpoint in ``directory`` matching ``pattern`` that loads, or ``None``.

    "Newest" is the largest iteration number in the file name (``model_0004999.pth``). Names without a number
    (``model_final.pth``, often a weights-only export) are only a fallback after all numbered ones, newest
    modification time first, so resuming picks the full iteration checkpoint. Files that fail to load are skipped
    with a logged warning, so a run killed mid-write resumes from the previous one.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return None

    def newness(p: Path) -> tuple[float, float]:
        iteration = _iteration_of(p)
        return (float("-inf") if iteration is None else float(iteration), p.stat().st_mtime)

    candidates = sorted((p for p in directory.glob(pattern) if p.is_file()), key=newness, reverse=True)
    for candidate in candidates:
        try:
            load_checkpoint(candidate)
        except CheckpointError as e:
            logger.warning("skipping unusable checkpoint: %s", e)
            continue
        return candidate
    return None


class CheckpointRotation:
    """The numbered checkpoints of one training run: ``directory/<prefix>_<iteration, 7 digits>.pth``.

    ``save`` writes atomically and then deletes all but the newest ``keep`` (``keep <= 0`` keeps every file);
    ``newest`` is the resume point: the newest one that loads (corrupt files are skipped with a warning), never an
    unnumbered file such as ``model_final.pth``. Call both on one process only (rank 0) under DDP.
    """

    def __init__(self, directory: str | os.PathLike[str], *, prefix: str, keep: int = 3) -> None:
        self.directory = Path(directory)
        self.prefix = prefix
        self.keep = keep

    def path(self, iteration: int) -> Path:
        return self.directory / f"{self.prefix}_{iteration:07d}.pth"

    def numbered(self) -> list[Path]:
        """The numbered checkpoints on disk, oldest (smallest iteration) first."""
        files = self.directory.glob(f"{self.prefix}_[0-9]*.pth")
        return sorted(files, key=lambda p: (_iteration_of(p) or 0, p.name))

    def save(self, iteration: int, state: dict[str, Any]) -> Path:
        path = save_checkpoint(self.path(iteration), state)
        for stale in self.numbered()[: -self.keep] if self.keep > 0 else []:
            stale.unlink(missing_ok=True)
        return path

    def newest(self) -> Path | None:
        return latest_good_checkpoint(self.directory, pattern=f"{self.prefix}_[0-9]*.pth")

    def remove_partial_writes(self) -> list[Path]:
        """Delete the temporaries ``save`` leaves when the process is killed mid-write; returns them."""
        partial = sorted(self.directory.glob(f".{self.prefix}_*.pth{_TEMPORARY_SUFFIX}*"))
        for path in partial:
            logger.info("removing %s, left by a run killed while saving a checkpoint", path)
            path.unlink(missing_ok=True)
        return partial


def get_rng_state() -> dict[str, Any]:
    """Python, NumPy, torch (and CUDA, if available) RNG states in a ``weights_only``-loadable form.

    NumPy's state array and Python's state tuple become int64 tensors (``torch.load(weights_only=True)``
    refuses numpy arrays).
    """
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": {"version": py_version, "state": torch.tensor(py_state, dtype=torch.int64), "gauss": py_gauss},
        "numpy": {
            "name": str(np_name),
            "keys": torch.from_numpy(np.asarray(np_keys).astype(np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore RNG states written by ``get_rng_state`` (missing entries are left alone)."""
    if "python" in state:
        py = state["python"]
        random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    if "numpy" in state:
        n = state["numpy"]
        keys = n["keys"].numpy().astype(np.uint32)
        np.random.set_state((n["name"], keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    if "torch" in state:
        torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states])
        else:
            logger.warning(
                "checkpoint has CUDA RNG states for %d devices, this machine has %d; CUDA RNG not restored",
                len(cuda_states),
                torch.cuda.device_count(),
            )
