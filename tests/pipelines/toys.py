"""Small stand-ins that follow the seqmodels and data-module contracts (docs/ARCHITECTURE.md), so
the tasks and the CLI plumbing are tested on their own; the real models are tested with them too."""

from __future__ import annotations

import dataclasses
from collections import namedtuple

import lightning.pytorch as pl
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

ForecastOutput = namedtuple("ForecastOutput", ["point", "quantiles"])


@dataclasses.dataclass
class ToyClassifierConfig:
    n_classes: int = 2
    d_model: int = 16


class ToyClassifier(nn.Module):
    """Embedding -> conv -> masked max pool -> norm -> linear; has A_log and D like Mamba."""

    def __init__(self, n_classes: int = 2, d_model: int = 16) -> None:
        super().__init__()
        self.config = ToyClassifierConfig(n_classes, d_model)
        self.embed = nn.Embedding(7, d_model)
        self.conv = nn.Conv1d(d_model, d_model, 7, padding=3)
        self.A_log = nn.Parameter(torch.zeros(d_model, 2))
        self.D = nn.Parameter(torch.ones(d_model))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, n_classes)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        h = self.embed(tokens).transpose(1, 2)  # (B, D, L)
        h = torch.relu(self.conv(h)).transpose(1, 2) * self.D + self.A_log.sum(-1)  # (B, L, D)
        if lengths is None:
            lengths = torch.full(tokens.shape[:1], tokens.shape[1], device=tokens.device)
        mask = (torch.arange(tokens.shape[1], device=tokens.device)[None] < lengths[:, None]).unsqueeze(-1)
        pooled = h.masked_fill(~mask, -1e4).amax(1)  # (B, D)
        return self.head(self.norm(pooled))


@dataclasses.dataclass
class ToyTaggerConfig:
    n_tracks: int = 2
    n_classes: int = 3


class ToyTagger(nn.Module):
    def __init__(self, n_tracks: int = 2, n_classes: int = 3) -> None:
        super().__init__()
        self.config = ToyTaggerConfig(n_tracks, n_classes)
        self.embed = nn.Embedding(7, 8)
        self.head = nn.Linear(8, n_tracks * n_classes)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        b, l = tokens.shape
        return self.head(self.embed(tokens)).view(b, l, self.config.n_tracks, self.config.n_classes)


@dataclasses.dataclass
class ToyForecasterConfig:
    input_len: int = 24
    horizon: int = 6
    quantiles: tuple[float, ...] = (0.1, 0.5, 0.9)


class ToyForecaster(nn.Module):
    """Channel-independent linear map input_len -> horizon, with monotone quantile offsets."""

    def __init__(self, input_len: int = 24, horizon: int = 6, quantiles: tuple[float, ...] = (0.1, 0.5, 0.9)) -> None:
        super().__init__()
        self.config = ToyForecasterConfig(input_len, horizon, tuple(quantiles))
        self.linear = nn.Linear(input_len, horizon)
        self.spread = nn.Parameter(torch.zeros(len(quantiles)))

    def forward(self, x: torch.Tensor) -> ForecastOutput:
        point = self.linear(x.transpose(1, 2)).transpose(1, 2)  # (B, H, C)
        offsets = torch.cumsum(nn.functional.softplus(self.spread), 0)
        offsets = offsets - offsets[len(offsets) // 2]
        return ForecastOutput(point, point.unsqueeze(-1) + offsets)  # (B, H, C, Q)


def planted_motif(n: int, length: int, seed: int, motif: str = "TATAAT") -> tuple[torch.Tensor, torch.Tensor]:
    """Random DNA; label 1 sequences carry ``motif`` at a random position. Tokens use the seqmodels
    vocabulary (A=2, C=3, G=4, T=5)."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(2, 6, size=(n, length))
    labels = rng.integers(0, 2, size=n)
    code = np.array(["ACGT".index(c) + 2 for c in motif])
    for i in np.flatnonzero(labels):
        start = rng.integers(0, length - len(motif) + 1)
        tokens[i, start : start + len(motif)] = code
    return torch.as_tensor(tokens, dtype=torch.long), torch.as_tensor(labels, dtype=torch.long)


class EpochShuffle(torch.utils.data.Sampler):
    """A permutation drawn from (seed, epoch): Lightning calls set_epoch, so order survives a resume."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        gen = torch.Generator().manual_seed(self.seed * 997 + self.epoch)
        return iter(torch.randperm(self.n, generator=gen).tolist())


class _DictDataset(torch.utils.data.Dataset):
    def __init__(self, **tensors: torch.Tensor) -> None:
        self.tensors = tensors

    def __len__(self) -> int:
        return len(next(iter(self.tensors.values())))

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[i] for k, v in self.tensors.items()}


class ToyDNADataModule(pl.LightningDataModule):
    """Planted-motif classification in memory, batches as the DNA data modules give them."""

    def __init__(self, n_train: int = 256, n_val: int = 64, length: int = 40, batch_size: int = 32, seed: int = 0):
        super().__init__()
        self.n_train, self.n_val, self.length, self.batch_size, self.seed = n_train, n_val, length, batch_size, seed
        self.class_names = ["negative", "positive"]

    def _loader(self, n: int, seed: int, shuffle: bool) -> DataLoader:
        tokens, labels = planted_motif(n, self.length, seed)
        lengths = torch.full((n,), self.length, dtype=torch.long)
        ds = _DictDataset(tokens=tokens, lengths=lengths, labels=labels)
        sampler = EpochShuffle(n, self.seed) if shuffle else None
        return DataLoader(ds, batch_size=self.batch_size, sampler=sampler, generator=torch.Generator().manual_seed(0))

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.n_train, self.seed, True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.n_val, self.seed + 1, False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.n_val, self.seed + 2, False)


class ToySineDataModule(pl.LightningDataModule):
    """Noisy sines (2 channels) in windows input_len -> horizon, z-scored with a known scaler."""

    def __init__(self, input_len: int = 24, horizon: int = 6, n: int = 600, batch_size: int = 32, seed: int = 0):
        super().__init__()
        self.input_len, self.horizon, self.batch_size = input_len, horizon, batch_size
        rng = np.random.default_rng(seed)
        t = np.arange(n)
        raw = np.stack([10 + 3 * np.sin(2 * np.pi * t / 20), 100 + 20 * np.sin(2 * np.pi * t / 13 + 1)], 1)
        raw = raw + rng.normal(0, 0.1, raw.shape) * raw.std(0)
        self.scaler_mean, self.scaler_scale = raw[: n // 2].mean(0), raw[: n // 2].std(0)
        self.channel_names = ["a", "b"]
        self.series = torch.as_tensor((raw - self.scaler_mean) / self.scaler_scale, dtype=torch.float32)

    def _loader(self, lo: int, hi: int, shuffle: bool) -> DataLoader:
        starts = range(lo, hi - self.input_len - self.horizon + 1)
        x = torch.stack([self.series[s : s + self.input_len] for s in starts])
        y = torch.stack([self.series[s + self.input_len : s + self.input_len + self.horizon] for s in starts])
        sampler = EpochShuffle(len(x), 0) if shuffle else None
        return DataLoader(_DictDataset(x=x, y=y), batch_size=self.batch_size, sampler=sampler)

    def train_dataloader(self) -> DataLoader:
        return self._loader(0, len(self.series) // 2, True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(len(self.series) // 2, 3 * len(self.series) // 4, False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(3 * len(self.series) // 4, len(self.series), False)


class KillAt(pl.Callback):
    """Kills its own process (SIGKILL: no cleanup, like an OOM killer or a lost node) after the
    training batch that reaches ``step`` optimiser steps."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step >= self.step:
            import os
            import signal

            os.kill(os.getpid(), signal.SIGKILL)
