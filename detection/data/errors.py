"""Errors raised by the dataset loaders."""

from __future__ import annotations


class DatasetError(ValueError):
    """A dataset's files are missing, malformed or inconsistent. The message names the file (and object)."""


class UnreadableImageError(DatasetError):
    """An image file is missing, empty, truncated or not an image. Datasets skip such samples unless ``strict``."""
