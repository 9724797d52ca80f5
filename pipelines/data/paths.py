"""Where the benchmark data lives: a setting (``root``), defaulting to ``../shared/data`` beside the
repository (or the folder named by ``SEQMAMBA_DATA``) when it exists."""

from __future__ import annotations

import os
from pathlib import Path

from pipelines.data.errors import InputError

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLES = REPO_ROOT / "data" / "samples"


def default_root() -> Path | None:
    """``$SEQMAMBA_DATA``, else ``<repo>/../shared/data`` if it exists, else None."""
    env = os.environ.get("SEQMAMBA_DATA")
    if env:
        return Path(env)
    shared = REPO_ROOT.parent / "shared" / "data"
    return shared if shared.is_dir() else None


def resolve_root(root: str | os.PathLike | None) -> Path:
    """The data root to use, or :class:`InputError` saying how to set it."""
    path = Path(root) if root is not None else default_root()
    if path is None:
        raise InputError("no data root: pass root (--data.root) or set SEQMAMBA_DATA to the benchmark data folder")
    if not path.is_dir():
        raise InputError("data root is not a folder", file=str(path))
    return path


def find_split_file(folder: Path, names: tuple[str, ...]) -> Path | None:
    """The first ``<name>.fa.gz`` / ``.fa`` / ``.fasta(.gz)`` / ``.csv`` / ``.tsv`` in ``folder``."""
    for name in names:
        for ext in (".fa.gz", ".fa", ".fasta.gz", ".fasta", ".fna.gz", ".fna", ".csv", ".tsv"):
            path = folder / f"{name}{ext}"
            if path.is_file():
                return path
    return None
