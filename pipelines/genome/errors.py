"""The bad-input exception of the genome pipeline.

``pipelines.data.errors.InputError`` is the project's one exception for bad user input; while that
module is not importable (it is written in parallel), an equivalent ``ValueError`` subclass stands
in, so callers can always catch ``InputError`` (or ``ValueError``) from here.
"""

from __future__ import annotations

try:
    from pipelines.data.errors import InputError
except ImportError:  # pragma: no cover - only until pipelines.data.errors lands

    class InputError(ValueError):
        """Bad user input; the message names the file, record or line and what is wrong."""


__all__ = ["InputError"]
