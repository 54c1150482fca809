"""Preemption for the detector trainer: SIGTERM (what SLURM and Kubernetes send before killing a job) and SIGINT
(Ctrl-C) turned into "finish this step, save a checkpoint at the current iteration, stop".

The mechanism belongs to the one training loop and lives in ``backbones/loop_guard.py`` (``backbones`` never
imports ``detection``); :meth:`backbones.loop.TrainLoop.run` trains inside :func:`stop_signals` itself. The names
stay importable from here.
"""

from __future__ import annotations

from backbones.loop_guard import STOP_SIGNALS, TrainingInterrupted, ignore_stop_signals, stop_signals

__all__ = ["STOP_SIGNALS", "TrainingInterrupted", "ignore_stop_signals", "stop_signals"]
