"""Small baselines for the results tables, with the task models' forward contracts:
a 3-layer CNN classifier trained from scratch, and DLinear (Zeng et al. 2023)."""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from . import vocab
from .classifier import vocabulary_fields
from .config import ModelConfig
from .dna import check_tokens
from .forecasting import (
    ForecastOutput,
    check_quantile_levels,
    check_series,
    fill_padding,
    head_output,
    instance_stats,
)
from .forecasting import package_fields as forecast_package_fields
from .heads import config_kwargs, pool
from .masking import lengths_to_mask
from .registry import PackagedModel, register


@dataclasses.dataclass
class CNNConfig(ModelConfig):
    n_classes: int = 2
    class_names: tuple[str, ...] | None = None
    d_model: int = 64
    kernel_size: int = 9
    pooling: Literal["mean", "max"] = "max"

    def __post_init__(self):
        if self.n_classes < 1 or self.d_model < 1:
            raise ValueError(f"n_classes and d_model must be at least 1, got {self.n_classes}, {self.d_model}")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (centred 'same' convolution), got {self.kernel_size}")
        if self.pooling not in ("mean", "max"):
            raise ValueError(f"pooling must be mean or max, got {self.pooling!r}")
        if self.class_names is not None and len(self.class_names) != self.n_classes:
            raise ValueError(f"class_names has {len(self.class_names)} names for n_classes={self.n_classes}")


@register
class CNNClassifier(PackagedModel):
    """Embedding -> 3 x (conv, ReLU) -> masked pooling -> linear. forward(tokens, lengths) -> (batch, n_classes).

    Padded positions are zeroed before every convolution, which is what the convolution's own
    zero padding feeds at a sequence end, so padding never changes the logits.
    """

    task = "classification"
    config_class = CNNConfig

    def __init__(self, n_classes: int = 2, class_names: tuple[str, ...] | None = None, d_model: int = 64,
                 kernel_size: int = 9, pooling: Literal["mean", "max"] = "max"):
        super().__init__()
        self.config = CNNConfig(n_classes, None if class_names is None else tuple(class_names), d_model,
                                kernel_size, pooling)
        self.embedding = nn.Embedding(vocab.VOCAB_SIZE, d_model)
        self.convs = nn.ModuleList(nn.Conv1d(d_model, d_model, kernel_size, padding=kernel_size // 2)
                                   for _ in range(3))
        self.head = nn.Linear(d_model, n_classes)

    @classmethod
    def from_config(cls, config: CNNConfig) -> CNNClassifier:
        return cls(**config_kwargs(config))

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        check_tokens(tokens, lengths)
        mask = lengths_to_mask(lengths, tokens.shape[1])
        h = self.embedding(tokens.long()).transpose(1, 2)  # (batch, d_model, seqlen)
        for conv in self.convs:
            if mask is not None:
                h = h.masked_fill(~mask[:, None, :], 0.0)
            h = F.relu(conv(h))
        return self.head(pool(h.transpose(1, 2), lengths, self.config.pooling))

    def package_fields(self) -> dict:
        names = self.config.class_names or tuple(str(i) for i in range(self.config.n_classes))
        return {"class_names": list(names), "vocabulary": vocabulary_fields()}


@dataclasses.dataclass
class DLinearConfig(ModelConfig):
    input_len: int = 96
    horizon: int = 24
    quantiles: tuple[float, ...] = (0.1, 0.5, 0.9)
    moving_avg: int = 25
    channel_names: tuple[str, ...] | None = None
    revin: bool = False

    def __post_init__(self):
        if self.input_len < 1 or self.horizon < 1:
            raise ValueError(f"input_len and horizon must be at least 1, got {self.input_len}, {self.horizon}")
        if self.moving_avg < 1 or self.moving_avg % 2 == 0:
            raise ValueError(f"moving_avg must be an odd window length, got {self.moving_avg}")
        check_quantile_levels(self.quantiles)


@register
class DLinear(PackagedModel):
    """Trend (moving average) + remainder, each mapped input_len -> horizon by a linear layer shared
    across channels. forward(x (batch, input_len, channels), mask=None) -> ForecastOutput.

    Leading padding (``mask``) is filled with each series' first observed value before the
    decomposition, so padded values never change the forecast.
    """

    task = "forecasting"
    config_class = DLinearConfig

    def __init__(self, input_len: int = 96, horizon: int = 24, quantiles: tuple[float, ...] = (0.1, 0.5, 0.9),
                 moving_avg: int = 25, channel_names: tuple[str, ...] | None = None, revin: bool = False):
        super().__init__()
        self.config = cfg = DLinearConfig(input_len, horizon, tuple(quantiles), moving_avg,
                                          None if channel_names is None else tuple(channel_names), revin)
        outputs = horizon * (1 + len(cfg.quantiles))  # point + quantiles per step
        self.seasonal = nn.Linear(input_len, outputs)
        self.trend = nn.Linear(input_len, outputs)

    @classmethod
    def from_config(cls, config: DLinearConfig) -> DLinear:
        return cls(**config_kwargs(config))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> ForecastOutput:
        cfg = self.config
        mask = check_series(x, mask, input_len=cfg.input_len)
        batch, _, channels = x.shape
        x = fill_padding(x, mask)
        if cfg.revin:
            mean, std = instance_stats(x, mask)  # (batch, 1, channels)
            x = (x - mean) / std
        series = x.transpose(1, 2)  # (batch, channels, input_len)
        trend = moving_average(series, cfg.moving_avg)
        out = self.seasonal(series - trend) + self.trend(trend)  # (batch, channels, outputs)
        out = out.view(batch, channels, cfg.horizon, -1).transpose(1, 2)  # (batch, horizon, channels, 1 + q)
        return head_output(out, cfg.quantiles, mean if cfg.revin else None, std if cfg.revin else None)

    def package_fields(self) -> dict:
        return forecast_package_fields(self.config)


def moving_average(series: torch.Tensor, window: int) -> torch.Tensor:
    """Centred moving average over the last axis of (..., length), ends padded by repeating the end
    values (DLinear's decomposition), same length out."""
    half = window // 2
    shape = series.shape
    flat = series.reshape(-1, 1, shape[-1])
    padded = F.pad(flat, (half, half), mode="replicate")
    return F.avg_pool1d(padded, window, stride=1).reshape(shape)
