"""Weights & Biases beside TensorBoard for :class:`backbones.loop.TrainLoop` (optional: ``pip install wandb``).

With ``LoopOptions.wandb`` set, rank 0 starts a run when training starts (``wandb.init(project, entity, name,
config, dir=OUTPUT_DIR, id, resume="allow")``), logs what goes to TensorBoard under the same names with
``step=iteration`` (``train/<loss>``, ``train/lr``, ``<eval_tag>/<metric>``) and finishes the run when training
ends or stops. The run's id is kept in ``OUTPUT_DIR/wandb_run_id.txt``: a resumed training continues that run, a
fresh one starts a new run. Steps a resumed training logs again (those after its checkpoint) are below the run's
last step, so wandb ignores them; the resume being exact, they hold the values already logged.

Without wandb installed, one warning and training goes on as without it; a run that cannot start (not logged in,
no network in online mode) is one warning too: logging never stops a training.
"""

from __future__ import annotations

import logging
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backbones.files import write_text

__all__ = ["RUN_ID_FILE", "WandbLogger", "WandbOptions", "start_wandb"]

logger = logging.getLogger(__name__)

RUN_ID_FILE = "wandb_run_id.txt"
_RUN_ID = re.compile(r"[a-z0-9]{1,64}")


@dataclass
class WandbOptions:
    project: str
    entity: str = ""  # "": the user's default entity
    name: str = ""  # "": a name wandb picks
    config: dict[str, Any] = field(default_factory=dict)  # the run's config, shown and searchable in wandb
    setting: str = "logging.wandb_project"  # what asked for wandb, named in the not-installed warning


class WandbLogger:
    """One started wandb run: :meth:`log` scalars at an iteration, :meth:`finish` once."""

    def __init__(self, run: Any) -> None:
        self.run = run

    def log(self, scalars: dict[str, float], step: int) -> None:
        self.run.log(scalars, step=step)

    def finish(self) -> None:
        self.run.finish()


def _run_id(output_dir: Path, resumed: bool) -> tuple[str, bool]:
    """``(id, continued)``: the id of the run a resumed training continues (from ``OUTPUT_DIR/wandb_run_id.txt``),
    else a new one, written there atomically."""
    path = output_dir / RUN_ID_FILE
    if resumed and path.is_file():
        stored = path.read_text().strip()
        if _RUN_ID.fullmatch(stored):
            return stored, True
        logger.warning("%s: %r is not a wandb run id; starting a new run", path, stored[:80])
    run_id = secrets.token_hex(4)  # wandb's ids are [a-z0-9]; os.urandom, so no training RNG is drawn from
    output_dir.mkdir(parents=True, exist_ok=True)
    write_text(path, run_id + "\n")
    return run_id, False


def start_wandb(options: WandbOptions | None, output_dir: Path, *, rank: int, resumed: bool) -> WandbLogger | None:
    """The run of ``options`` on rank 0 (continuing the stored one when ``resumed``); None on other ranks, without
    ``options``, without wandb (one warning) or when wandb cannot start a run (one warning)."""
    if options is None or rank != 0:
        return None
    try:
        import wandb
    except ImportError:
        logger.warning("%s is set but wandb is not installed: pip install wandb", options.setting)
        return None
    run_id, continued = _run_id(output_dir, resumed)
    try:
        run = wandb.init(project=options.project, entity=options.entity or None, name=options.name or None,
                         config=options.config, dir=str(output_dir), id=run_id, resume="allow")  # fmt: skip
    except Exception as exc:  # wandb's own errors (login, network) have no common base class to catch
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        logger.warning("Weights & Biases could not start run %s (%s); training goes on without it", run_id, message)
        return None
    logger.info("Weights & Biases: %s run %s in project %s", "continuing" if continued else "new", run_id,
                options.project)
    return WandbLogger(run)
