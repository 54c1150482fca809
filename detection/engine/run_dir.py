"""One output folder, one training run: the folder is checked before any work, locked while a run trains in it, and
its checkpoints carry the identity (config hash) of the run that wrote them.

- :func:`prepare_output_dir`, :class:`RunLock` (``OUTPUT_DIR/train.lock`` held with ``flock``): the same for every
  trainer, so they live with the one training loop in ``backbones/loop_guard.py``; importable from here too.
- :func:`config_hash` / :func:`check_same_run`: the hash of the config a run trains with (everything except
  ``data.num_workers``, which does not change results), stored in each checkpoint; ``--resume`` compares it.
- :func:`refuse_foreign_checkpoints`: a new run (no ``--resume``) into a folder that already holds numbered
  checkpoints would prune them by number against its own and could later resume from them: refused.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from backbones.checkpoint import CheckpointRotation
from backbones.loop_guard import RunDirError, RunLock, prepare_output_dir
from detection.config import ConfigError, config_from_dict

__all__ = [
    "RunDirError",
    "RunLock",
    "check_same_run",
    "config_difference",
    "config_hash",
    "prepare_output_dir",
    "refuse_foreign_checkpoints",
]

logger = logging.getLogger(__name__)

# Results do not depend on the number of loading workers (docs/reliability.md), so changing it resumes the same run.
_NOT_IDENTITY = (("data", "num_workers"),)
_NOT_IDENTITY_SECTIONS = ("logging",)  # where the run is reported (Weights & Biases), not what it computes


def _identity(config: dict[str, Any]) -> dict[str, Any]:
    identity = json.loads(json.dumps(config))  # a deep copy of plain data
    for section, key in _NOT_IDENTITY:
        identity.get(section, {}).pop(key, None)
    for section in _NOT_IDENTITY_SECTIONS:
        identity.pop(section, None)
    return identity


def config_hash(config: dict[str, Any]) -> str:
    """16 hex digits identifying a run's config (``Config.to_dict()``), ignoring ``data.num_workers`` and
    ``logging``."""
    text = json.dumps(_identity(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(data, dict):
        return {prefix.rstrip("."): data}
    flat: dict[str, Any] = {}
    for key, value in data.items():
        flat.update(_flatten(value, f"{prefix}{key}."))
    return flat


def config_difference(old: dict[str, Any], new: dict[str, Any], limit: int = 4) -> str:
    """``"seed 0 → 7, solver.max_iter 400 → 60"``: the first ``limit`` keys whose values differ."""
    a, b = _flatten(_identity(old)), _flatten(_identity(new))
    keys = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    shown = ", ".join(f"{k} {a.get(k)!r} → {b.get(k)!r}" for k in keys[:limit])
    return shown + (f", … ({len(keys)} keys in all)" if len(keys) > limit else "")


def check_same_run(checkpoint: Path, stored_config: dict[str, Any] | None, config: dict[str, Any]) -> str | None:
    """None when the checkpoint's stored config is this run's (same :func:`config_hash`), else a one-line reason
    naming the differing keys. A checkpoint without a stored config cannot be checked and passes."""
    if stored_config is None:
        return None
    try:  # fill keys added since the checkpoint was written with their defaults, as loading it would
        stored_config = config_from_dict(stored_config).to_dict()
    except ConfigError:
        pass  # keys this version does not know: the hashes differ, as they should
    if config_hash(stored_config) == config_hash(config):
        return None
    return (f"{checkpoint} was written by a run with another config ({config_difference(stored_config, config)})")


def refuse_foreign_checkpoints(directory: Path, prefix: str = "model") -> None:
    """:class:`RunDirError` when ``directory`` already holds numbered checkpoints (a new run must not mix with them)."""
    found = CheckpointRotation(directory, prefix=prefix).numbered()
    if found:
        names = ", ".join(p.name for p in found[-3:])
        raise RunDirError(
            f"{directory} already holds checkpoints of another run ({names}); use --resume to continue that run, "
            "or pass a new --output-dir"
        )


# --- Result files: which model made them, and never another run's left behind -------------------------------------
# What an evaluation writes into its output folder (detection/engine/evaluate.py, submission.py), by name.
RESULT_FILES = ("metrics.json", "coco_results_*.json", "ilsvrc_det_*.txt", "detections_*_results.json",
                "detections_*_results.zip", "results.tar.gz", "results/VOC*/Main/comp4_det_*.txt")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def provenance(config: dict[str, Any], weights: list[Path]) -> dict[str, Any]:
    """What made a set of results: each checkpoint's path and sha256 (an ensemble has several), and the config hash
    (:func:`config_hash`); stored in ``metrics.json`` as ``provenance``."""
    return {"weights": [{"path": str(p), "sha256": file_sha256(p)} for p in weights if Path(p).is_file()],
            "config_hash": config_hash(config)}


def clear_previous_results(output_dir: Path) -> list[Path]:
    """Remove the result files a previous evaluation left in ``output_dir`` (:data:`RESULT_FILES`) before a new one
    writes its own, so that a run killed half-way never leaves another model's results and ``metrics.json`` looking
    like its own. Logs one warning naming the previous model (from its ``metrics.json``); returns what it removed."""
    found = sorted({p for pattern in RESULT_FILES for p in output_dir.glob(pattern) if p.is_file()})
    if not found:
        return []
    previous = "an earlier run"
    try:
        recorded = json.loads((output_dir / "metrics.json").read_text()).get("provenance", {}).get("weights", [])
        if recorded:
            previous = "the model " + ", ".join(f"{w['path']} (sha256 {w['sha256'][:12]})" for w in recorded)
    except (OSError, ValueError, AttributeError, TypeError, KeyError):
        pass
    for path in found:
        path.unlink()
    for folder in sorted({p.parent for p in found}, key=lambda p: len(p.parts), reverse=True):
        while folder != output_dir and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
            folder = folder.parent
    logger.warning("%s held %d result file(s) of %s; removed them before writing this run's", output_dir,
                   len(found), previous)
    return found
