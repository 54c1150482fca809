"""Errors for bad input files. Every message names the file and the line or object at fault.

They live here, outside ``detection.data`` and ``detection.evaluation``, because :mod:`detection.devkit` serves both
packages and must import neither.
"""

from __future__ import annotations


class DatasetError(ValueError):
    """A dataset's files are missing, malformed or inconsistent."""


class EvaluationInputError(ValueError):
    """Malformed or inconsistent evaluation input (result files, ground truth)."""


class DevkitError(DatasetError, EvaluationInputError):
    """A devkit file (PASCAL XML, split list, class map) is missing or malformed.

    It is both kinds above: the datasets read these files as their annotations and the evaluation readers as their
    ground truth, and each side's callers catch their own kind.
    """
