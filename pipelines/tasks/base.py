"""What every task shares: the network, plain-data hyperparameters, the optimiser, the
preprocessing numbers carried in the checkpoint, and the per-epoch reseeding that makes a resumed
run identical to an uninterrupted one."""

from __future__ import annotations

import logging
import math
import os
import random
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch import nn

from .network_spec import network_spec
from .optim import adamw_warmup_cosine

log = logging.getLogger(__name__)

# Stages with their own metric objects; ModuleDict keys get a suffix because "train" is an
# nn.Module method name and cannot be a submodule name.
STAGES = ("train", "val", "test")


def _key(stage: str) -> str:
    return f"{stage}_"


# Key of our own section in Lightning checkpoints (plain data only).
CKPT_KEY = "seqmamba"


def _plain_numbers(value: Any) -> Any:
    """Arrays and tensors -> lists of Python floats/ints, recursively (checkpoint and JSON safe)."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().tolist()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _plain_numbers(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_numbers(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)  # e.g. a pandas Timedelta step


def describe_datamodule(datamodule: Any) -> dict[str, Any]:
    """The preprocessing numbers a model package needs, read from a data module after setup:
    ``class_names``, ``channels``, ``scaler_mean``/``scaler_scale``, ``input_len``, ``horizon``,
    ``max_len``, ``step``. A data module's ``export_config()`` (if any) is taken as is; the rest is
    looked up by attribute or hyperparameter name. Missing ones are omitted."""
    if datamodule is None:
        return {}
    out: dict[str, Any] = {}
    export = getattr(datamodule, "export_config", None)
    if callable(export):
        try:
            out.update(export())
        except RuntimeError:  # not set up yet
            pass
    hparams = getattr(datamodule, "hparams", {}) or {}
    aliases = {
        "class_names": ("class_names", "classes"),
        "channels": ("channels", "channel_names"),
        "track_names": ("track_names",),
        "input_len": ("input_len",),
        "horizon": ("horizon",),
        "max_len": ("max_len",),
    }
    for key, names in aliases.items():
        if key in out:
            continue
        for name in names:
            value = getattr(datamodule, name, None)
            if value is None or callable(value):
                value = hparams.get(name) if hasattr(hparams, "get") else None
            if value is not None and not callable(value):
                out[key] = value
                break
    if "scaler_mean" not in out:
        mean, scale = getattr(datamodule, "scaler_mean", None), getattr(datamodule, "scaler_scale", None)
        scaler = getattr(datamodule, "scaler", None)
        if mean is None and scaler is not None:  # a fitted scikit-learn StandardScaler
            mean, scale = getattr(scaler, "mean_", None), getattr(scaler, "scale_", None)
        if mean is None and isinstance(getattr(datamodule, "mean", None), np.ndarray):
            mean, scale = datamodule.mean, getattr(datamodule, "scale", None)
        if mean is not None and scale is not None:
            out["scaler_mean"], out["scaler_scale"] = mean, scale
    return _plain_numbers(out)


class SeqTask(pl.LightningModule):
    """Base LightningModule: owns the network, the optimiser and the schedule; subclasses add the
    loss and metrics. Hyperparameters are plain data: the network is stored as its spec."""

    def __init__(
        self,
        network: nn.Module,
        lr: float = 1e-3,
        weight_decay: float = 0.1,
        betas: tuple[float, float] = (0.9, 0.95),
        warmup_ratio: float = 0.05,
        min_lr_ratio: float = 0.01,
    ) -> None:
        super().__init__()
        if not isinstance(network, nn.Module):
            raise TypeError(f"network must be an nn.Module, got {type(network).__name__}")
        self.network = network
        self.save_hyperparameters(ignore=["network"])
        self.hparams["network"] = network_spec(network)
        if "_instantiator" not in self.hparams:
            # Built outside LightningCLI: record what the CLI records, so load_from_checkpoint rebuilds
            # the network from its spec through the same (allow-listed) jsonargparse instantiator.
            cls = type(self)
            self.hparams["_class_path"] = f"{cls.__module__}.{cls.__qualname__}"
            self.hparams["_instantiator"] = "lightning.pytorch.cli.instantiate_module"
        self.hparams["betas"] = [float(b) for b in betas]
        self.preprocessing: dict[str, Any] = {}

    # -- data description -------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        described = describe_datamodule(datamodule)
        if described:
            self.preprocessing = described

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CKPT_KEY] = {"task": type(self).__name__, "preprocessing": _plain_numbers(self.preprocessing)}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.preprocessing = dict(checkpoint.get(CKPT_KEY, {}).get("preprocessing", {}))

    # -- reproducibility ----------------------------------------------------------------------
    # Random streams are reseeded from (seed, epoch) before the training dataloader is iterated and
    # from (seed, step) before every batch: shuffling that draws from the global generator, dropout
    # and any other randomness then depend only on where training is, not on what ran before in
    # this process, so a run resumed from last.ckpt continues exactly as the uninterrupted run.
    # (PL_GLOBAL_SEED is set by seed_everything / LightningCLI's --seed_everything in every rank.)
    def _reseed(self, stream: int, position: int) -> None:
        seed = os.environ.get("PL_GLOBAL_SEED")
        if seed is None:
            return
        # Not seed_everything: it would overwrite PL_GLOBAL_SEED and chain the seeds.
        value = (int(seed) * 1_000_003 + stream * 7_919 + position) % 2**32
        random.seed(value)
        np.random.seed(value)  # noqa: NPY002 (the legacy global RNG is what other code draws from)
        torch.manual_seed(value)

    def on_train_epoch_start(self) -> None:
        self._reseed(1, self.current_epoch)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._reseed(2, self.global_step)

    # Each task defines ``_step(batch, stage)``: loss and metrics for one batch of one stage.
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    # -- optimisation ---------------------------------------------------------------------------
    def configure_optimizers(self) -> dict:
        total = self.trainer.estimated_stepping_batches
        if not math.isfinite(total):
            log.warning("no max_steps/max_epochs: learning rate stays constant after warm-up")
        hp = self.hparams
        return adamw_warmup_cosine(
            self.network,
            lr=hp.lr,
            weight_decay=hp.weight_decay,
            betas=tuple(hp.betas),
            warmup_ratio=hp.warmup_ratio,
            min_lr_ratio=hp.min_lr_ratio,
            total_steps=total,
        )
