"""User-facing errors: each names the file or option at fault and says what to do."""

from __future__ import annotations


class ClipgaugeError(Exception):
    """An error caused by the user's input, printed by the CLI without a traceback."""


class DataError(ClipgaugeError):
    """A dataset, image, manifest or mapping file is missing or malformed."""


class ModelError(ClipgaugeError):
    """A model path or id cannot be loaded as a CLIP checkpoint."""


class CacheError(ClipgaugeError):
    """An embedding cache file is unreadable or does not match its key."""
