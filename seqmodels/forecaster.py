"""MambaForecaster: multi-horizon point and quantile forecasts from a causal Mamba stack.

Channel-independent by default (Nie et al. 2023's PatchTST finding, used by most strong
long-horizon forecasters): every series is a separate sequence through the same weights, so a
model trained on one dataset forecasts a CSV with any number of columns. Each series is
normalised by its own history (RevIN) and the forecast de-normalised with the same numbers.

Two options make it a stronger long-horizon forecaster (both off by default, which is the
original model, weight for weight):
- patch tokens (``patch_len``/``patch_stride``, PatchTST): the Mamba reads one token per patch of
  steps instead of one per step, and the head may read every token (``head="flatten"``) instead of
  the last one only;
- a linear path (``linear_skip``, the RLinear/DLinear idea): a per-series linear map of the
  normalised history plus the Mamba branch, whose output layer starts at zero, so training starts
  from the linear forecaster (by default one that repeats the last value, ``linear_init``) and the
  Mamba learns what the linear map misses.
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

HEADS = ("last", "flatten")


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
    patch_len: int = 1  # steps per token; 1: one token per step
    patch_stride: int | None = None  # steps between consecutive tokens; None: patch_len (no overlap)
    head: Literal["last", "flatten"] = "last"  # read the last token, or every token of the input_len window
    linear_skip: bool = False  # add a per-series linear map of the normalised history
    # The linear map's starting point: "repeat_last" (the last value for every step, the random-walk
    # forecast that is hard to beat on exchange rates) or "random" (nn.Linear's default, as DLinear).
    linear_init: Literal["repeat_last", "random"] = "repeat_last"

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
        if not 1 <= self.patch_len <= self.input_len:
            raise ValueError(f"patch_len must be between 1 and input_len={self.input_len}, got {self.patch_len}")
        if not 1 <= self.stride <= self.patch_len:
            # A stride above patch_len would leave steps that no token reads.
            raise ValueError(f"patch_stride must be between 1 and patch_len={self.patch_len}, got {self.patch_stride}")
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {self.head!r}")
        if self.linear_init not in ("repeat_last", "random"):
            raise ValueError(f"linear_init must be 'repeat_last' or 'random', got {self.linear_init!r}")

    @property
    def stride(self) -> int:
        return self.patch_len if self.patch_stride is None else self.patch_stride

    @property
    def fixed_window(self) -> bool:
        """True when a layer reads all input_len steps at once, so histories must be input_len long."""
        return self.linear_skip or self.head == "flatten"

    def n_tokens(self, seqlen: int) -> int:
        """Tokens cut from ``seqlen`` steps (at least patch_len): patches end-anchored, ``stride`` apart."""
        return (seqlen - self.patch_len) // self.stride + 1


@register
class MambaForecaster(PackagedModel):
    """forward(x (batch, seqlen, channels), mask=None) -> ForecastOutput(point (batch, horizon, channels),
    quantiles (batch, horizon, channels, n_quantiles)).

    ``mask`` (batch, seqlen) or (batch, seqlen, channels) bool marks observed steps of left-padded
    shorter histories; padded values (even NaN) never change the forecast. With the default
    ``head="last"`` and no ``linear_skip`` the model reads histories of any length (at least one
    patch) and a padded history's forecast equals the forecast from the unpadded history. With
    ``linear_skip`` or ``head="flatten"`` a layer reads the whole window, so x must have input_len
    steps and padding reads as each series' first observed value repeated (DLinear's rule).

    Patches are anchored at the end of the history, so the latest steps always fill the last token;
    when (seqlen - patch_len) is not a multiple of the stride, the oldest few steps feed RevIN only.
    """

    task = "forecasting"
    config_class = ForecasterConfig

    def __init__(self, input_len: int = 96, horizon: int = 24, quantiles: tuple[float, ...] = (0.1, 0.5, 0.9),
                 channel_mixing: bool = False, n_channels: int | None = None,
                 channel_names: tuple[str, ...] | None = None, revin: bool = True,
                 d_model: int = 64, n_layer: int = 2, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 bidirectional: bool = False, weight_sharing: Literal["shared", "separate"] = "shared",
                 norm_eps: float = 1e-5, checkpointing: bool = False, dropout: float = 0.0,
                 patch_len: int = 1, patch_stride: int | None = None, head: Literal["last", "flatten"] = "last",
                 linear_skip: bool = False, linear_init: Literal["repeat_last", "random"] = "repeat_last"):
        super().__init__()
        self.config = cfg = ForecasterConfig(
            d_model=d_model, n_layer=n_layer, d_state=d_state, d_conv=d_conv, expand=expand,
            bidirectional=bidirectional, weight_sharing=weight_sharing, norm_eps=norm_eps,
            checkpointing=checkpointing, dropout=dropout, input_len=input_len, horizon=horizon,
            quantiles=tuple(quantiles),
            channel_mixing=channel_mixing, n_channels=n_channels,
            channel_names=None if channel_names is None else tuple(channel_names), revin=revin,
            patch_len=patch_len, patch_stride=patch_stride, head=head, linear_skip=linear_skip,
            linear_init=linear_init)
        width = cfg.n_channels if channel_mixing else 1  # series read together
        outputs = horizon * width * (1 + len(cfg.quantiles))  # point + quantiles
        self.embedding = nn.Linear(width * patch_len, d_model)
        self.stack = MambaStack(cfg)
        head_in = d_model * (cfg.n_tokens(input_len) if head == "flatten" else 1)
        self.head = nn.Linear(head_in, outputs)
        if linear_skip:
            # One map for every series (channel-independent even with channel_mixing, as DLinear).
            self.linear = nn.Linear(input_len, horizon * (1 + len(cfg.quantiles)))
            if linear_init == "repeat_last":
                repeat_last_(self.linear, horizon, cfg.quantiles)
            # The Mamba branch starts silent: at initialisation the model is the linear forecaster.
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    @classmethod
    def from_config(cls, config: ForecasterConfig) -> MambaForecaster:
        return cls(**config_kwargs(config))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> ForecastOutput:
        cfg = self.config
        mask = check_series(x, mask, cfg.n_channels if cfg.channel_mixing else None,
                            cfg.input_len if cfg.fixed_window else None)
        batch, seqlen, channels = x.shape
        x = fill_padding(x, mask)
        if cfg.fixed_window:
            mask = None  # padding now reads as the first observed value (DLinear's rule), everywhere
        else:
            observed = seqlen if mask is None else int(mask.sum(1).min())
            if observed < cfg.patch_len:
                raise ValueError(f"a history has {observed} observed steps; this model needs at least "
                                 f"patch_len={cfg.patch_len}")
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
        tokens, token_mask = self._patches(series, time_mask)  # (rows, n_tokens, width * patch_len)
        hidden = self.stack(self.embedding(tokens), token_mask)  # (rows, n_tokens, d_model)
        # The last token is always observed (left padding only, at least one full patch).
        out = self.head(hidden.flatten(1) if cfg.head == "flatten" else hidden[:, -1])
        q = len(cfg.quantiles)
        if cfg.channel_mixing:
            out = out.view(batch, cfg.horizon, channels, 1 + q)
        else:
            out = out.view(batch, channels, cfg.horizon, 1 + q).transpose(1, 2)  # (batch, horizon, channels, 1 + q)
        if cfg.linear_skip:
            linear = self.linear(x.transpose(1, 2))  # (batch, channels, horizon * (1 + q))
            out = out + linear.view(batch, channels, cfg.horizon, 1 + q).transpose(1, 2)
        return head_output(out, cfg.quantiles, mean if cfg.revin else None, std if cfg.revin else None)

    def _patches(self, series: torch.Tensor, mask: torch.Tensor | None):
        """(rows, seqlen, width) -> tokens (rows, n_tokens, width * patch_len), end-anchored, and the
        token mask (rows, n_tokens): a token is observed only when every step of its patch is."""
        cfg = self.config
        if cfg.patch_len == 1 and cfg.stride == 1:
            return series, mask  # one token per step: the original model, unchanged
        rows, seqlen, width = series.shape
        start = seqlen - cfg.patch_len - (cfg.n_tokens(seqlen) - 1) * cfg.stride
        tokens = series[:, start:].unfold(1, cfg.patch_len, cfg.stride)  # (rows, n_tokens, width, patch_len)
        tokens = tokens.reshape(rows, -1, width * cfg.patch_len)
        if mask is not None:
            mask = mask[:, start:].unfold(1, cfg.patch_len, cfg.stride).all(-1)  # (rows, n_tokens)
        return tokens, mask

    def package_fields(self) -> dict:
        return forecast_package_fields(self.config)


def repeat_last_(linear: nn.Linear, horizon: int, levels: tuple[float, ...]) -> None:
    """Set ``linear`` (input_len -> horizon * (1 + q)) to forecast the last value at every step: the point
    and the median-anchored quantile read the last input with weight 1; the other quantiles start at
    softplus(0) = 0.69 normalised units from it (see ``monotone_quantiles``)."""
    anchor = min(range(len(levels)), key=lambda i: abs(levels[i] - 0.5))
    with torch.no_grad():
        linear.weight.zero_()
        linear.bias.zero_()
        weight = linear.weight.view(horizon, 1 + len(levels), -1)  # (horizon, 1 + q, input_len)
        weight[:, 0, -1] = 1.0
        weight[:, 1 + anchor, -1] = 1.0
