"""Pieces shared by the task models: the sequence pooling and the constructor plumbing."""

from __future__ import annotations

import dataclasses

import torch

from .masking import gather_last, lengths_to_mask, masked_max, masked_mean, reverse_index

POOLINGS = ("mean", "max", "last", "cls")


def pool(features: torch.Tensor, lengths: torch.Tensor | None, how: str) -> torch.Tensor:
    """(batch, seqlen, dim) -> (batch, dim) over real positions only ('cls' reads the last one,
    where the classifier puts its CLS token)."""
    mask = lengths_to_mask(lengths, features.shape[1])
    if how == "mean":
        return masked_mean(features, mask)
    if how == "max":
        return masked_max(features, mask)
    if how in ("last", "cls"):
        return gather_last(features, lengths)
    raise ValueError(f"pooling must be one of {POOLINGS}, got {how!r}")


def mirror_symmetric_mean(features: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """Masked mean over positions, bit-for-bit unchanged when each row is reversed within its length:
    position t is first added to its mirror image (a + b == b + a exactly), then all are summed in
    one fixed order. Plain sums differ in the last bits when the order of terms is reversed."""
    batch, seqlen, _ = features.shape
    index = reverse_index(lengths, seqlen, features.device).expand(batch, seqlen)
    mirrored = features.gather(1, index[..., None].expand_as(features))
    return masked_mean(features + mirrored, lengths_to_mask(lengths, seqlen)) / 2


def config_kwargs(config) -> dict:
    """A config dataclass -> the keyword arguments of its model's constructor."""
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
