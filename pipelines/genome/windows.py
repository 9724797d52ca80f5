"""Long windows of labelled genomes for training a per-base gene tagger.

A map-style dataset yielding ``(tokens (L,) long, labels (L, 2) long)``: tokens from
``seqmodels.vocab.encode``, labels from :mod:`pipelines.genome.labels`. It plugs into the tagging
data module as its dataset.

The split is data (:class:`SplitConfig`), stated in the run's config:
- ``mode="genome"``: ``train`` / ``val`` / ``test`` list genome files; a file may appear in one list
  only, so no sequence is seen in two splits. (Mind the data README: E. coli K-12 carries lambdoid
  prophages, so lambda is not an independent test genome for a model trained on E. coli.)
- ``mode="region"``: every genome in ``train`` is cut into three contiguous blocks by ``fractions``
  (train, val, test, in coordinate order); windows never cross a block boundary.

Training windows are drawn at random (``samples`` per epoch; reshuffled by :meth:`set_epoch`), a
window on a whole circular genome may run across the origin. Validation and test windows tile
their regions in order, the last one shorter, so every base is seen exactly once.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from pipelines.data.errors import InputError
from pipelines.genome.annotation import AnnotatedSequence, read_annotation
from pipelines.genome.labels import cds_labels
from pipelines.genome.recoding import RecodableCodons, codons_in_window, draw_usage, recodable_codons, recode_window
from seqmodels import vocab

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


@dataclass
class LabelledSequence:
    """One sequence as model input: tokens (seqlen,) int8 and labels (seqlen, 2) int8."""

    name: str
    tokens: np.ndarray
    labels: np.ndarray
    circular: bool = False
    transl_table: int = 11
    codons: RecodableCodons | None = None  # what synonymous recoding may rewrite (training sequences only)

    def __len__(self) -> int:
        return self.tokens.shape[0]


@dataclass(frozen=True)
class Region:
    """Bases [start, end) of sequence ``index``; ``wrap``: windows may cross the origin (whole circular sequence)."""

    index: int
    start: int
    end: int
    wrap: bool = False

    def __len__(self) -> int:
        return self.end - self.start


@dataclass
class SplitConfig:
    """Which genome files (``mode="genome"``) or which part of each genome (``mode="region"``) feeds each split.

    Entries are GenBank paths relative to the data root, or ``"annotation.gtf.gz,genome.fa.gz"`` for a GTF.
    """

    mode: Literal["genome", "region"] = "genome"
    train: list[str] = field(default_factory=list)
    val: list[str] = field(default_factory=list)
    test: list[str] = field(default_factory=list)
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)

    def __post_init__(self):
        if self.mode not in ("genome", "region"):
            raise InputError(f"split mode must be 'genome' or 'region', got {self.mode!r}")
        if not self.train:
            raise InputError("split: 'train' lists no genome")
        if self.mode == "region":
            if self.val or self.test:
                raise InputError("split mode 'region' takes its genomes from 'train'; leave 'val' and 'test' empty")
            if len(self.fractions) != 3 or min(self.fractions) < 0 or abs(sum(self.fractions) - 1) > 1e-6:
                raise InputError(f"split fractions must be 3 non-negative numbers summing to 1, got {self.fractions}")
        seen: dict[str, str] = {}
        for split in SPLITS:
            for entry in getattr(self, split):
                if entry in seen:
                    raise InputError(f"split: genome {entry!r} is in both {seen[entry]!r} and {split!r}")
                seen[entry] = split


def label_sequences(sequences: list[AnnotatedSequence], recodable: bool = False) -> list[LabelledSequence]:
    """Tokens and per-strand CDS labels of each annotated sequence; with ``recodable``, also the
    codons synonymous recoding may rewrite (:mod:`pipelines.genome.recoding`)."""
    out = []
    for s in sequences:
        tokens = vocab.encode(s.seq)
        tokens[tokens < 0] = vocab.N  # IUPAC ambiguity codes read as N
        codons = recodable_codons(s.seq, s.cds, s.transl_table) if recodable else None
        out.append(LabelledSequence(s.id, tokens, cds_labels(len(s), s.cds), s.circular, s.transl_table, codons))
    return out


def read_entry(entry: str, root: str | os.PathLike = ".") -> list[AnnotatedSequence]:
    """Annotated sequences of one split entry (a GenBank path, or ``"gtf,fasta"``) under ``root``."""
    paths = [os.path.join(root, p.strip()) for p in entry.split(",")]
    if len(paths) > 2:
        raise InputError(f"split entry {entry!r}: expected a GenBank path or 'annotation.gtf,genome.fa'")
    return read_annotation(paths[0], paths[1] if len(paths) == 2 else None)


def load_labelled(entry: str, root: str | os.PathLike = ".", recodable: bool = False) -> list[LabelledSequence]:
    """Labelled sequences of one split entry (see :func:`read_entry` and :func:`label_sequences`)."""
    return label_sequences(read_entry(entry, root), recodable)


def region_blocks(sequences: list[LabelledSequence], fractions: tuple[float, float, float]) -> dict[str, list[Region]]:
    """Cut every sequence into contiguous train/val/test blocks of the given fractions."""
    regions: dict[str, list[Region]] = {split: [] for split in SPLITS}
    for i, s in enumerate(sequences):
        bounds = np.rint(np.cumsum([0.0, *fractions]) * len(s)).astype(int)
        for split, a, b in zip(SPLITS, bounds[:-1], bounds[1:]):
            if b > a:
                regions[split].append(Region(i, int(a), int(b)))
    return regions


class GenomeWindows(Dataset):
    """Windows of ``window`` bases from ``regions`` of ``sequences``.

    ``samples=None``: deterministic tiling (validation, test). ``samples=n``: n random windows per
    epoch, region chosen in proportion to its length, reproducible from ``seed`` and the epoch; each
    is recoded (:mod:`pipelines.genome.recoding`) with probability ``recode``, which needs sequences
    labelled with their recodable codons.
    """

    def __init__(
        self,
        sequences: list[LabelledSequence],
        regions: list[Region],
        window: int,
        samples: int | None = None,
        seed: int = 0,
        recode: float = 0.0,
    ):
        if window < 1:
            raise InputError(f"window must be a positive number of bases, got {window}")
        if not 0.0 <= recode <= 1.0:
            raise InputError(f"recode is a probability per training window, in [0, 1]; got {recode!r}")
        if recode and samples is None:
            raise InputError("recode applies to random training windows (samples), not to tiled evaluation windows")
        if recode and any(s.codons is None for s in sequences):
            raise InputError("recode needs sequences labelled with their recodable codons "
                             "(label_sequences(..., recodable=True))")
        if not regions:
            raise InputError("no region to draw windows from")
        self.sequences, self.regions, self.window = sequences, regions, window
        self.samples, self.seed, self.epoch, self.recode = samples, seed, 0, recode
        lengths = np.array([len(r) for r in regions], dtype=np.float64)
        self._weights = lengths / lengths.sum()
        # Tiling: (region, start offset) of each window; the last window of a region is shorter.
        self._tiles = [(k, off) for k, r in enumerate(regions) for off in range(0, len(r), window)]

    def set_epoch(self, epoch: int) -> None:
        """Draw a fresh set of random windows (call at the start of each training epoch)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.samples if self.samples is not None else len(self._tiles)

    def span(self, index: int) -> tuple[int, int, int]:
        """(sequence index, start, length) of window ``index``; start + length may pass the origin."""
        if not 0 <= index < len(self):
            raise IndexError(f"window {index} out of range ({len(self)} windows)")
        if self.samples is None:
            k, off = self._tiles[index]
            r = self.regions[k]
            return r.index, r.start + off, min(self.window, len(r) - off)
        rng = np.random.default_rng([self.seed, self.epoch, index])
        r = self.regions[int(rng.choice(len(self.regions), p=self._weights))]
        if r.wrap:
            return r.index, r.start + int(rng.integers(len(r))), min(self.window, len(r))
        length = min(self.window, len(r))
        return r.index, r.start + int(rng.integers(len(r) - length + 1)), length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        i, start, length = self.span(index)
        s = self.sequences[i]
        idx = np.arange(start, start + length) % len(s)  # wraps only for circular whole-sequence regions
        tokens = s.tokens[idx].astype(np.int64)  # (L,)
        if self.recode:
            # Its own stream (the trailing 1), so the windows drawn do not depend on ``recode``.
            rng = np.random.default_rng([self.seed, self.epoch, index, 1])
            if rng.uniform() < self.recode:
                codons, offset = codons_in_window(s.codons, start, length, len(s))
                tokens = recode_window(tokens, codons, offset, draw_usage(rng, s.transl_table), rng, s.transl_table)
        labels = torch.from_numpy(s.labels[idx].astype(np.int64))  # (L, 2)
        return torch.from_numpy(tokens), labels


def reverse_complement_example(tokens: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The same window read from the other strand: tokens (L,) reverse-complemented, labels (L, 2)
    reversed with the two tracks swapped (codon positions are counted along each strand, so they
    stay right). For reverse-complement augmentation."""
    return vocab.complement(tokens).flip(0), labels.flip(0)[:, [1, 0]]


def build_datasets(
    split: SplitConfig,
    root: str | os.PathLike,
    window: int = 100_000,
    samples_per_epoch: int = 256,
    seed: int = 0,
    recode: float = 0.0,
) -> dict[str, GenomeWindows]:
    """Train (random windows, recoded with probability ``recode``), val and test (tiled) datasets of
    ``split``; a split with no genome is left out."""
    out = {}
    if split.mode == "region":
        sequences = [s for entry in split.train for s in load_labelled(entry, root, recodable=recode > 0)]
        regions = region_blocks(sequences, split.fractions)
        for name in SPLITS:
            if regions[name]:
                train = name == "train"
                out[name] = GenomeWindows(sequences, regions[name], window, samples_per_epoch if train else None,
                                          seed, recode if train else 0.0)
        return out
    for name in SPLITS:
        entries = getattr(split, name)
        if not entries:
            continue
        train = name == "train"
        sequences = [s for entry in entries for s in load_labelled(entry, root, recodable=train and recode > 0)]
        regions = [Region(i, 0, len(s), wrap=s.circular) for i, s in enumerate(sequences)]
        out[name] = GenomeWindows(sequences, regions, window, samples_per_epoch if train else None, seed,
                                  recode if train else 0.0)
    log.info("genome windows: %s", {k: len(v) for k, v in out.items()})
    return out
