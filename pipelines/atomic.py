"""Atomic file writing, kept free of heavy imports so scoring and the CLI start fast."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def chmod_like_open(path: str | os.PathLike) -> None:
    """Give a ``mkstemp`` file (mode 0600) the mode ``open`` would have created it with, 0666 less
    the umask, so a file renamed into place is as readable as any other output."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def write_json_atomic(path: str | os.PathLike, value: Any) -> None:
    """Write JSON to a temporary file beside ``path`` and rename it into place: readers never see a
    half-written file, whatever kills the process."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(value, fh, indent=2, allow_nan=False)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        chmod_like_open(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
