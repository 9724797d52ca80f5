"""MambaForecaster: multi-horizon point and quantile forecasts from a causal Mamba stack.

Channel-independent by default (Nie et al. 2023's PatchTST finding, used by most strong
long-horizon forecasters): every series is a separate sequence through the same weights, so a
model trained on one dataset forecasts a CSV with any number of columns. Each series is
normalised by its own history (RevIN) and the forecast de-normalised with the same numbers.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
from torch import nn

from .backbone import BackboneConfig, MambaStack
from .forecasting import (
    ForecastOutput,
    check_quantile_levels,
    check_series,
    fill_padding,
    head_output,
    instance_stats,
)
from .forecasting import package_fields as forecast_package_fields
from .heads import config_kwargs
from .registry import PackagedModel, register

__all__ = ["ForecasterConfig", "MambaForecaster", "ForecastOutput"]


@dataclasses.dataclass
class ForecasterConfig(BackboneConfig):
    d_model: int = 64
    n_layer: int = 2
    input_len: int = 96  # the history length the model was trained on (recorded for the readers)
    horizon: int = 24
    quantiles: tuple[float, ...] = (0.1, 0.5, 0.9)
    channel_mixing: bool = False
    n_channels: int | None = None  # required with channel_mixing; otherwise any number of series works
    channel_names: tuple[str, ...] | None = None
    revin: bool = True

    def __post_init__(self):
        super().__post_init__()
        if self.bidirectional:
            raise ValueError("a forecaster reads the past causally: bidirectional must be false")
        if self.input_len < 1 or self.horizon < 1:
            raise ValueError(f"input_len and horizon must be at least 1, got {self.input_len}, {self.horizon}")
        check_quantile_levels(self.quantiles)
        if self.channel_mixing and (self.n_channels is None or self.n_channels < 1):
            raise ValueError("channel_mixing needs n_channels (the number of input series)")
        if self.channel_names is not None and self.n_channels is not None \
                and len(self.channel_names) != self.n_channels:
            raise ValueError(f"channel_names has {len(self.channel_names)} names for n_channels={self.n_channels}")


@register
class MambaForecaster(PackagedModel):
    """forward(x (batch, seqlen, channels), mask=None) -> ForecastOutput(point (batch, horizon, channels),
    quantiles (batch, horizon, channels, n_quantiles)).

    ``mask`` (batch, seqlen) or (batch, seqlen, channels) bool marks observed steps of left-padded
    shorter histories; padded values (even NaN) never change the forecast, which equals the
    forecast from the unpadded history.
    """

    task = "forecasting"
    config_class = ForecasterConfig

    def __init__(self, input_len: int = 96, horizon: int = 24, quantiles: tuple[float, ...] = (0.1, 0.5, 0.9),
                 channel_mixing: bool = False, n_channels: int | None = None,
                 channel_names: tuple[str, ...] | None = None, revin: bool = True,
                 d_model: int = 64, n_layer: int = 2, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 bidirectional: bool = False, weight_sharing: Literal["shared", "separate"] = "shared",
                 norm_eps: float = 1e-5, checkpointing: bool = False, dropout: float = 0.0):
        super().__init__()
        self.config = cfg = ForecasterConfig(
            d_model=d_model, n_layer=n_layer, d_state=d_state, d_conv=d_conv, expand=expand,
            bidirectional=bidirectional, weight_sharing=weight_sharing, norm_eps=norm_eps,
            checkpointing=checkpointing, dropout=dropout, input_len=input_len, horizon=horizon,
            quantiles=tuple(quantiles),
            channel_mixing=channel_mixing, n_channels=n_channels,
            channel_names=None if channel_names is None else tuple(channel_names), revin=revin)
        width = cfg.n_channels if channel_mixing else 1  # series read together
        self.embedding = nn.Linear(width, d_model)
        self.stack = MambaStack(cfg)
        self.head = nn.Linear(d_model, horizon * width * (1 + len(cfg.quantiles)))  # point + quantiles

    @classmethod
    def from_config(cls, config: ForecasterConfig) -> MambaForecaster:
        return cls(**config_kwargs(config))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> ForecastOutput:
        cfg = self.config
        mask = check_series(x, mask, cfg.n_channels if cfg.channel_mixing else None)
        batch, seqlen, channels = x.shape
        x = fill_padding(x, mask)
        if cfg.revin:
            mean, std = instance_stats(x, mask)  # (batch, 1, channels)
            x = (x - mean) / std
        if cfg.channel_mixing:
            if mask is not None and not bool((mask == mask[:, :, :1]).all()):
                raise ValueError("with channel_mixing every channel must share one mask (batch, seqlen)")
            series, time_mask = x, None if mask is None else mask[:, :, 0]  # (batch, seqlen, channels)
        else:
            series = x.transpose(1, 2).reshape(batch * channels, seqlen, 1)  # (batch * channels, seqlen, 1)
            time_mask = None if mask is None else mask.transpose(1, 2).reshape(batch * channels, seqlen)
        hidden = self.stack(self.embedding(series), time_mask)  # (rows, seqlen, d_model)
        out = self.head(hidden[:, -1])  # the last step is always observed (left padding only)
        q = len(cfg.quantiles)
        if cfg.channel_mixing:
            out = out.view(batch, cfg.horizon, channels, 1 + q)
        else:
            out = out.view(batch, channels, cfg.horizon, 1 + q).transpose(1, 2)  # (batch, horizon, channels, 1 + q)
        return head_output(out, cfg.quantiles, mean if cfg.revin else None, std if cfg.revin else None)

    def package_fields(self) -> dict:
        return forecast_package_fields(self.config)
