"""Padding helpers: right-padded batches described by ``lengths``.

Every model here takes right-padded batches (real tokens first, padding after), so reversing a
row "by its length" keeps padding at the end and causal scans never see padding before a real token.
"""

from __future__ import annotations

import torch


def check_lengths(lengths: torch.Tensor | None, batch: int, seqlen: int, name: str = "lengths") -> None:
    """Raise ``ValueError`` unless ``lengths`` is a (batch,) integer tensor with values in [1, seqlen]."""
    if lengths is None:
        return
    if not isinstance(lengths, torch.Tensor) or lengths.dtype.is_floating_point or lengths.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor of shape (batch,), got {lengths!r:.80}")
    if tuple(lengths.shape) != (batch,):
        raise ValueError(f"{name} must have shape (batch,) = ({batch},), got {tuple(lengths.shape)}")
    if batch and (int(lengths.min()) < 1 or int(lengths.max()) > seqlen):
        raise ValueError(f"{name} must lie in [1, {seqlen}] (the padded length), got "
                         f"min {int(lengths.min())}, max {int(lengths.max())}")


def lengths_to_mask(lengths: torch.Tensor | None, seqlen: int) -> torch.Tensor | None:
    """(batch,) lengths -> (batch, seqlen) bool mask, True at real positions; None stays None."""
    if lengths is None:
        return None
    return torch.arange(seqlen, device=lengths.device)[None, :] < lengths[:, None]


def reverse_index(lengths: torch.Tensor | None, seqlen: int, device: torch.device) -> torch.Tensor:
    """(batch or 1, seqlen) gather index reversing each row within its length; padding stays put."""
    pos = torch.arange(seqlen, device=device)
    if lengths is None:
        return pos.flip(0)[None, :]
    rev = lengths[:, None] - 1 - pos[None, :]  # (batch, seqlen)
    return torch.where(rev >= 0, rev, pos[None, :])


def reverse_by_length(x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """Reverse (batch, seqlen, ...) along seqlen, each row within its own length. An involution."""
    batch, seqlen = x.shape[:2]
    index = reverse_index(lengths, seqlen, x.device).expand(batch, seqlen)
    index = index.reshape(batch, seqlen, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(1, index)


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over dim 1 of (batch, seqlen, dim) counting only real positions. ``where`` rather than a
    product, so a NaN or inf in the padding cannot reach the result."""
    if mask is None:
        return x.mean(1)
    m = mask[..., None]
    total = torch.where(m, x, torch.zeros((), dtype=x.dtype, device=x.device)).sum(1)
    return total / m.sum(1).clamp(min=1).to(x.dtype)


def masked_max(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Max over dim 1 of (batch, seqlen, dim) over real positions only."""
    if mask is None:
        return x.amax(1)
    low = torch.finfo(x.dtype).min
    return torch.where(mask[..., None], x, torch.full((), low, dtype=x.dtype, device=x.device)).amax(1)


def gather_last(x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """(batch, seqlen, dim) -> (batch, dim): each row's last real position."""
    if lengths is None:
        return x[:, -1]
    index = (lengths - 1).view(-1, 1, 1).expand(-1, 1, x.shape[-1])
    return x.gather(1, index).squeeze(1)
