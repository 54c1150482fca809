"""Errors raised by the dataset loaders. ``DatasetError`` is defined in :mod:`detection.errors` (shared with the
devkit readers of :mod:`detection.devkit`, whose errors are dataset errors too)."""

from __future__ import annotations

from detection.errors import DatasetError

__all__ = ["DatasetError", "UnreadableImageError"]


class UnreadableImageError(DatasetError):
    """An image file is missing, empty, truncated or not an image. Datasets skip such samples unless ``strict``."""
