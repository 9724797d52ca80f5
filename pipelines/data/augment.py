"""Sequence-level augmentation and batching helpers on token arrays (``(L,)`` int8, vocab ids).

Reverse complement, random or centred crops to a training length, sliding windows over long
sequences, and a sampler that groups similar lengths so padded batches waste little compute.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

from seqmodels.vocab import COMPLEMENT

_COMPLEMENT = np.asarray(COMPLEMENT, dtype=np.int8)


def reverse_complement_array(tokens: np.ndarray) -> np.ndarray:
    """Reverse complement of one token array ``(L,)`` (or ``(..., L)``: the last axis is reversed)."""
    return _COMPLEMENT[tokens[..., ::-1]]


def center_crop(tokens: np.ndarray, length: int) -> np.ndarray:
    """The middle ``length`` tokens (the sequence itself when it is no longer)."""
    extra = tokens.shape[0] - length
    if extra <= 0:
        return tokens
    start = extra // 2
    return tokens[start:start + length]


def random_crop(tokens: np.ndarray, length: int, rng) -> np.ndarray:
    """``length`` consecutive tokens from a uniformly random start (the sequence itself when shorter).

    ``rng`` is anything with numpy's ``integers(low, high)``."""
    extra = tokens.shape[0] - length
    if extra <= 0:
        return tokens
    start = int(rng.integers(0, extra + 1))
    return tokens[start:start + length]


def window_starts(total: int, window: int, stride: int) -> np.ndarray:
    """Start positions of windows of ``window`` covering ``[0, total)`` with step ``stride``.

    The last window is moved back to end exactly at ``total`` so the tail is always covered; a
    sequence no longer than ``window`` gets one window at 0.
    """
    if window <= 0 or stride <= 0:
        raise ValueError(f"window and stride must be positive, got window={window}, stride={stride}")
    if total <= window:
        return np.zeros(1, dtype=np.int64)
    starts = np.arange(0, total - window + 1, stride, dtype=np.int64)
    if starts[-1] != total - window:
        starts = np.append(starts, total - window)
    return starts


def sliding_windows(tokens: np.ndarray, window: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Windows over a long sequence: ``(starts (n,), windows (n, window))`` (views, no copy).

    A sequence shorter than ``window`` gives one window of its own length.
    """
    starts = window_starts(tokens.shape[0], window, stride)
    if tokens.shape[0] <= window:
        return starts, tokens[None, :]
    return starts, np.lib.stride_tricks.sliding_window_view(tokens, window)[starts]


class LengthGroupedSampler(Sampler[int]):
    """Random order in which neighbouring indices have similar lengths, to keep padding low.

    Each epoch the indices are shuffled, cut into groups of ``batch_size * group_batches`` and each
    group is sorted by length (longest first); consecutive ``batch_size`` indices then form batches
    of similar length. The order depends only on ``seed`` and the epoch (Lightning calls
    :meth:`set_epoch`). With DDP, Lightning's sampler wrapper deals the indices out round-robin, so
    each rank still receives neighbours of similar length.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, *, seed: int = 0, group_batches: int = 50):
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.group = batch_size * group_batches
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(len(self.lengths), generator=gen).numpy()
        for start in range(0, len(order), self.group):
            chunk = order[start:start + self.group]
            # Stable sort keeps the random order among equal lengths.
            yield from chunk[np.argsort(-self.lengths[chunk], kind="stable")].tolist()


class EpochSampler(Sampler[int]):
    """Shuffles (or, with ``inner``, delegates to another sampler) and passes the epoch on.

    Lightning calls ``set_epoch`` on the training sampler before each epoch; this forwards it to
    ``inner`` and to the dataset (``dataset.set_epoch``, if it has one) so that datasets drawing
    random crops or windows from ``(seed, epoch, index)`` change them every epoch. Without
    ``inner`` the order is a permutation drawn from ``(seed, epoch)``.
    """

    def __init__(self, dataset, *, seed: int = 0, inner: Sampler[int] | None = None):
        self.dataset, self.seed, self.inner, self.epoch = dataset, seed, inner, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        for target in (self.inner, self.dataset):
            if hasattr(target, "set_epoch"):
                target.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __iter__(self) -> Iterator[int]:
        if self.inner is not None:
            return iter(self.inner)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(len(self.dataset), generator=gen).tolist())
