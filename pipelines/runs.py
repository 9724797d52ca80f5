"""Run folders: what a training run records about itself, and crash-safe checkpoint files.

A run folder (the trainer's ``default_root_dir``) holds ``config.yaml`` (the resolved config,
written by LightningCLI), ``run.json`` (seed, git commit, library versions, command, one entry per
invocation), ``metrics.csv`` (training; ``validate``/``test``/``predict`` log to ``<run>/<subcommand>/``
so the training log stays whole), ``checkpoints/`` (``last.ckpt`` and the best), and after
``seqmamba test`` a ``test_metrics.json`` that ``seqmamba export`` copies into the package.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins.io import TorchCheckpointIO

from pipelines.atomic import write_json_atomic

log = logging.getLogger(__name__)

RUN_JSON, TEST_METRICS = "run.json", "test_metrics.json"
_LIBRARIES = ("torch", "lightning", "triton", "numpy", "pandas", "torchmetrics", "jsonargparse", "safetensors",
              "seqmamba")
REPO_ROOT = Path(__file__).resolve().parents[1]




def git_state(root: Path = REPO_ROOT) -> dict[str, Any]:
    """The source tree's commit and whether it has uncommitted changes (None outside git).

    Only a checkout whose top level is ``root`` itself counts: a copy of the tree inside another
    repository (say, a snapshot in an ignored folder) would otherwise report that repository's
    commit, which says nothing about the code that ran."""
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != Path(root).resolve():
        return {"commit": None, "dirty": None}
    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def library_versions() -> dict[str, str | None]:
    """Versions of the libraries that change results, plus Python, CUDA and the GPU name."""
    versions: dict[str, str | None] = {}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    versions["python"] = platform.python_version()
    versions["cuda"] = torch.version.cuda
    versions["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return versions


def _seed() -> int | None:
    seed = os.environ.get("PL_GLOBAL_SEED")
    return int(seed) if seed is not None else None


class RunMetadata(pl.Callback):
    """Writes ``run.json`` when a stage starts (appending an invocation on resume) and
    ``test_metrics.json`` when testing ends; rank zero only."""

    def __init__(self, command: list[str] | None = None) -> None:
        self.command = list(sys.argv if command is None else command)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if not trainer.is_global_zero or trainer.fast_dev_run:
            return
        path = Path(trainer.default_root_dir) / RUN_JSON
        record = json.loads(path.read_text()) if path.is_file() else {"created": _now(), "invocations": []}
        record.update(seed=_seed(), git=git_state(), versions=library_versions())
        record["invocations"].append({
            "stage": stage, "started": _now(), "command": self.command, "host": platform.node(),
            "devices": trainer.num_devices, "nodes": trainer.num_nodes, "precision": str(trainer.precision),
            "deterministic": torch.are_deterministic_algorithms_enabled(),
        })
        write_json_atomic(path, record)

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero or trainer.fast_dev_run:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
        ckpt = getattr(trainer, "ckpt_path", None)
        write_json_atomic(Path(trainer.default_root_dir) / TEST_METRICS,
                          {"metrics": metrics, "checkpoint": None if ckpt is None else str(ckpt), "seed": _seed(),
                           "command": self.command, "finished": _now()})


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, but through a temporary file renamed into place: a run killed
    while saving keeps its previous ``last.ckpt`` intact instead of a truncated one."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None) -> None:
        fs = get_filesystem(path)
        if type(fs).__name__ != "LocalFileSystem":  # remote stores: keep Lightning's own writer
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                torch.save(checkpoint, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def find_checkpoint(run_dir: str | os.PathLike, which: str = "best") -> Path:
    """A run folder's ``best`` checkpoint (the monitored best recorded in ``last.ckpt``, else the
    newest ``best*.ckpt``, else ``last.ckpt``) or its ``last`` one; ``FileNotFoundError`` if none."""
    if which not in ("best", "last"):
        raise ValueError(f"which must be 'best' or 'last', got {which!r}")
    folder = Path(run_dir) / "checkpoints"
    last = folder / "last.ckpt"
    if which == "best":
        if last.is_file():
            state = torch.load(last, map_location="cpu", weights_only=True).get("callbacks", {})
            for key, value in state.items():
                best = value.get("best_model_path") if isinstance(value, dict) else None
                if "ModelCheckpoint" in key and value.get("monitor") and best and Path(best).is_file():
                    return Path(best)
        candidates = sorted(folder.glob("best*.ckpt"), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []
        if candidates:
            return candidates[-1]
    if last.is_file():
        return last
    raise FileNotFoundError(f"no checkpoint in {folder} (train first: seqmamba fit ...)")
