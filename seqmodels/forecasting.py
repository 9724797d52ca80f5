"""What every forecaster shares: the output type, input checks, RevIN and monotone quantiles."""

from __future__ import annotations

import typing

import torch
import torch.nn.functional as F


class ForecastOutput(typing.NamedTuple):
    """point (batch, horizon, channels); quantiles (batch, horizon, channels, n_quantiles), increasing
    along the last axis, in the input's units."""

    point: torch.Tensor
    quantiles: torch.Tensor


def check_quantile_levels(quantiles: tuple[float, ...]) -> None:
    if not quantiles:
        raise ValueError("quantiles must list at least one level")
    if any(not 0.0 < q < 1.0 for q in quantiles) or any(b <= a for a, b in zip(quantiles, quantiles[1:])):
        raise ValueError(f"quantiles must be strictly increasing levels in (0, 1), got {tuple(quantiles)}")


def check_series(x: torch.Tensor, mask: torch.Tensor | None, n_channels: int | None = None,
                 input_len: int | None = None) -> torch.Tensor | None:
    """Validate x (batch, seqlen, channels) and an observed-mask; return the mask as (batch, seqlen,
    channels) bool (or None). Masks mark leading padding only: each series' observed values must be
    contiguous and end at the last position, as when shorter histories are left-padded."""
    if not isinstance(x, torch.Tensor) or x.dim() != 3 or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be a float tensor of shape (batch, seqlen, channels), got {shape}")
    batch, seqlen, channels = x.shape
    if seqlen == 0 or channels == 0:
        raise ValueError(f"x must have at least one time step and one channel, got {tuple(x.shape)}")
    if n_channels is not None and channels != n_channels:
        raise ValueError(f"x has {channels} channels; this model was built for n_channels={n_channels}")
    if input_len is not None and seqlen != input_len:
        raise ValueError(f"x has {seqlen} time steps; this model reads input_len={input_len}")
    if mask is None:
        return None
    if mask.dtype != torch.bool or mask.dim() not in (2, 3) or tuple(mask.shape[:2]) != (batch, seqlen):
        raise ValueError(f"mask must be bool (batch, seqlen) or (batch, seqlen, channels) = ({batch}, {seqlen}"
                         f"[, {channels}]), got {mask.dtype} {tuple(mask.shape)}")
    if mask.dim() == 2:
        mask = mask[:, :, None].expand(batch, seqlen, channels)
    elif mask.shape[2] != channels:
        raise ValueError(f"mask has {mask.shape[2]} channels, x has {channels}")
    if not bool(mask[:, -1].all()) or bool((mask[:, 1:] < mask[:, :-1]).any()):
        raise ValueError("mask must mark leading padding only: False before each series' first observed "
                         "value, True from there to the last time step")
    return mask


def fill_padding(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Replace leading padding by each series' first observed value (NaN-safe: ``where``, not a product)."""
    if mask is None:
        return x
    first = mask.float().argmax(dim=1, keepdim=True)  # (batch, 1, channels): first observed index
    return torch.where(mask, x, x.gather(1, first).expand_as(x))


def instance_stats(x: torch.Tensor, mask: torch.Tensor | None, eps: float = 1e-5):
    """RevIN (Kim et al. 2022) statistics per series over observed steps: mean, std (batch, 1, channels)."""
    if mask is None:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
    else:
        count = mask.sum(1, keepdim=True).clamp(min=1)
        zero = torch.zeros((), dtype=x.dtype, device=x.device)
        mean = torch.where(mask, x, zero).sum(1, keepdim=True) / count
        var = torch.where(mask, x - mean, zero).pow(2).sum(1, keepdim=True) / count
    return mean, torch.sqrt(var + eps)


def monotone_quantiles(raw: torch.Tensor, levels: tuple[float, ...]) -> torch.Tensor:
    """(..., Q) unconstrained -> (..., Q) strictly increasing: the level nearest 0.5 is the anchor;
    the others sit at cumulative softplus offsets above and below it."""
    anchor = min(range(len(levels)), key=lambda i: abs(levels[i] - 0.5))
    mid = raw[..., anchor:anchor + 1]
    gaps = F.softplus(raw)
    above = mid + gaps[..., anchor + 1:].cumsum(-1)
    below = mid - gaps[..., :anchor].flip(-1).cumsum(-1).flip(-1)
    return torch.cat([below, mid, above], dim=-1)


def head_output(out: torch.Tensor, levels: tuple[float, ...], mean: torch.Tensor | None,
                std: torch.Tensor | None) -> ForecastOutput:
    """(batch, horizon, channels, 1 + q) head values -> point and monotone quantiles, de-normalised
    with RevIN's ``mean``/``std`` (batch, 1, channels) when given; std > 0 keeps the quantiles increasing."""
    point, quantiles = out[..., 0], monotone_quantiles(out[..., 1:], levels)
    if mean is not None:
        point = point * std + mean
        quantiles = quantiles * std[..., None] + mean[..., None]
    return ForecastOutput(point, quantiles)


def package_fields(cfg) -> dict:
    """The package's forecasting fields from a forecaster config (horizon, input length, quantiles, channels)."""
    return {"horizon": cfg.horizon, "input_len": cfg.input_len, "quantiles": list(cfg.quantiles),
            "input_channels": None if cfg.channel_names is None else list(cfg.channel_names)}
