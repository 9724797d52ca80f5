"""torch Datasets and collate functions behind the data modules.

Batches follow docs/ARCHITECTURE.md: DNA ``{"tokens": (B, L) long, "lengths": (B,) long,
"labels": (B,) long}``; tagging the same with ``"labels": (B, L, n_tracks) long`` (-100 = ignore);
forecasting ``{"x": (B, L, C) float, "y": (B, H, C) float}``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from pipelines.data.augment import center_crop, random_crop, reverse_complement_array, window_starts
from seqmodels.vocab import PAD

IGNORE_INDEX = -100  # label of padding and unlabelled positions (torch's cross-entropy default)


_MASK64 = (1 << 64) - 1


class ItemRandom:
    """A tiny counter-based generator for one item: SplitMix64 over ``(seed, epoch, index)``.

    numpy's ``default_rng([seed, epoch, index])`` costs ~50 us to build (seed hashing), which
    dominated the loader's time per item; this gives the same independence property (draws depend
    only on the key, not on the worker or the order of items) for ~1 us. Not for cryptography.
    """

    def __init__(self, *key: int):
        state = 0x9E3779B97F4A7C15
        for k in key:
            state = self._mix((state ^ (k & _MASK64)) + 0x9E3779B97F4A7C15)
        self._state = state

    @staticmethod
    def _mix(z: int) -> int:
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        return z ^ (z >> 31)

    def _next(self) -> int:
        self._state = (self._state + 0x9E3779B97F4A7C15) & _MASK64
        return self._mix(self._state)

    def random(self) -> float:
        """Uniform in [0, 1)."""
        return (self._next() >> 11) / float(1 << 53)

    def integers(self, low: int, high: int) -> int:
        """Uniform integer in [low, high) (bias below 2**-40 for ranges under 2**24)."""
        return low + (self._next() * (high - low) >> 64)


class ClassificationDataset(Dataset):
    """Token arrays with class ids. Sequences longer than ``max_len`` are cropped (``"random"`` for
    training, ``"center"`` for evaluation); with ``rc_prob`` a sequence is reverse-complemented at
    that probability (the label of a DNA element does not depend on the strand it was read from).

    Random choices come from ``(seed, epoch, index)`` alone, so they do not depend on the number of
    DataLoader workers; the data module's sampler calls :meth:`set_epoch` each epoch."""

    def __init__(self, tokens: Sequence[np.ndarray], labels: Sequence[int], *, max_len: int | None = None,
                 crop: str = "center", rc_prob: float = 0.0, seed: int = 0):
        if len(tokens) != len(labels):
            raise ValueError(f"{len(tokens)} sequences but {len(labels)} labels")
        if crop not in ("random", "center"):
            raise ValueError(f"crop must be 'random' or 'center', got {crop!r}")
        self.tokens, self.labels = list(tokens), np.asarray(labels, dtype=np.int64)
        self.max_len, self.crop, self.rc_prob = max_len, crop, rc_prob
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        """Draw fresh crops and strands for a new epoch."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.tokens)

    def lengths(self) -> np.ndarray:
        """Length of each item after cropping (for length-grouped batching)."""
        raw = np.fromiter((len(t) for t in self.tokens), dtype=np.int64, count=len(self.tokens))
        return raw if self.max_len is None else np.minimum(raw, self.max_len)

    def __getitem__(self, index: int) -> dict:
        tokens = self.tokens[index]
        needs_rng = self.rc_prob > 0 or (self.crop == "random" and self.max_len is not None)
        rng = ItemRandom(self.seed, self.epoch, index) if needs_rng else None
        if self.max_len is not None and self.crop == "random":
            tokens = random_crop(tokens, self.max_len, rng)
        elif self.max_len is not None:
            tokens = center_crop(tokens, self.max_len)
        if self.rc_prob > 0 and rng.random() < self.rc_prob:
            tokens = reverse_complement_array(tokens)
        return {"tokens": tokens, "label": int(self.labels[index])}  # tokens: (L,) int8 numpy, often a view


def collate_classification(items: list[dict]) -> dict[str, torch.Tensor]:
    """Pad to the longest item (PAD at the end): tokens (B, L), lengths (B,), labels (B,) long tensors.

    Items hold ``"tokens"`` (numpy or tensor, (L,)) and ``"label"``; padding is done in numpy, which
    is several times faster than row-by-row tensor copies for short sequences."""
    rows = [np.asarray(it["tokens"]) for it in items]
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    tokens = np.full((len(rows), int(lengths.max())), PAD, dtype=np.int64)  # (B, L)
    for i, r in enumerate(rows):
        tokens[i, : len(r)] = r
    labels = np.fromiter((it["label"] for it in items), dtype=np.int64, count=len(items))
    return {"tokens": torch.from_numpy(tokens), "lengths": torch.from_numpy(lengths),
            "labels": torch.from_numpy(labels)}


class TaggingWindows(Dataset):
    """Windows over long labelled sequences for per-position tagging.

    ``sequences`` holds ``(tokens (N,), labels (N, n_tracks))`` pairs (e.g. a genome and its per-base
    CDS tracks); each item is one window ``(tokens (W,), labels (W, n_tracks))`` as int64 tensors.
    Windows step by ``stride`` (default ``window``: no overlap) and the last one ends at the end.
    """

    def __init__(self, sequences: Sequence[tuple[np.ndarray, np.ndarray]], window: int, stride: int | None = None):
        self.sequences = list(sequences)
        for i, (tokens, labels) in enumerate(self.sequences):
            if labels.ndim != 2 or labels.shape[0] != tokens.shape[0]:
                raise ValueError(f"sequence {i}: labels must be (N, n_tracks) with N = {tokens.shape[0]}, "
                                 f"got {tuple(labels.shape)}")
        self.window = window
        self.index = [(i, int(s)) for i, (tokens, _) in enumerate(self.sequences)
                      for s in window_starts(tokens.shape[0], window, stride or window)]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        seq, start = self.index[index]
        tokens, labels = self.sequences[seq]
        stop = start + self.window
        return (torch.from_numpy(np.ascontiguousarray(tokens[start:stop], dtype=np.int64)),
                torch.from_numpy(np.ascontiguousarray(labels[start:stop], dtype=np.int64)))


def collate_tagging(items: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Pad windows: tokens (B, L) with PAD, labels (B, L, n_tracks) with -100, lengths (B,)."""
    lengths = torch.tensor([len(t) for t, _ in items], dtype=torch.long)
    batch, longest, n_tracks = len(items), int(lengths.max()), items[0][1].shape[-1]
    tokens = torch.full((batch, longest), PAD, dtype=torch.long)  # (B, L)
    labels = torch.full((batch, longest, n_tracks), IGNORE_INDEX, dtype=torch.long)  # (B, L, n_tracks)
    for row, (tok, lab) in enumerate(items):
        tokens[row, : len(tok)] = tok
        labels[row, : len(tok)] = lab
    return {"tokens": tokens, "lengths": lengths, "labels": labels}


class ForecastWindows(Dataset):
    """Stride-1 windows of a scaled series ``(T, C)`` within the row segment ``[start, stop)``:
    item ``i`` is ``{"x": rows s..s+L, "y": rows s+L..s+L+H}`` with ``s = start + i``."""

    def __init__(self, values: np.ndarray, segment: tuple[int, int], input_len: int, horizon: int):
        self.values = torch.as_tensor(np.ascontiguousarray(values, dtype=np.float32))  # (T, C)
        self.start, self.stop = segment
        self.input_len, self.horizon = input_len, horizon

    def __len__(self) -> int:
        return max(0, self.stop - self.start - self.input_len - self.horizon + 1)

    def target_start(self, index: int) -> int:
        """Row of the first target of window ``index``."""
        return self.start + index + self.input_len

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        s = self.start + index
        mid = s + self.input_len
        return {"x": self.values[s:mid], "y": self.values[mid:mid + self.horizon]}  # (L, C), (H, C)
