"""Genome-adaptive gene calling: learn the genome's own statistics from a first pass, then decode again.

Prodigal is accurate on a genome it never saw because it trains on that genome, unsupervised. The
same idea on top of a gene caller's probabilities (:func:`decode_genome`):

1. First pass: :func:`pipelines.genome.decoder.decode` on the model's probabilities.
2. Learn (:class:`StatisticsCounts` -> :class:`GenomeStatistics`) from the first pass's complete
   calls of at least ``TRAINING_MIN_LENGTH`` bp, over all sequences of the genome together:
   - coding: the in-frame dicodon (hexamer) log-likelihood ratio, coding vs. the genome's
     background (every hexamer of both strands, as Prodigal does), scored per codon given the
     codon before it. Sparse counts are shrunk towards a codon-usage model (itself shrunk towards
     the background), so a 50 kb phage gets little more than codon usage and a 5 Mb genome its
     full hexamer table.
   - starts: log-odds of each start codon, and a position weight matrix of the ``RBS_WINDOW``
     bases upstream (-20..-1; the Shine-Dalgarno motif sits around -13..-6), both at the chosen
     starts vs. at the other start codons the same ORFs could have begun at (the choice the start
     score has to make). With ``start_model`` "sd" or "pwm+sd" (DecoderConfig), also (or instead
     of the matrix) log-odds of a Shine-Dalgarno class: the longest piece of the motif core
     ``AGGAGG`` found upstream, by length and by spacer (bases between it and the start codon), as
     Prodigal scores ribosome-binding sites. A matrix of fixed positions smears a motif whose
     spacer varies by several bases from gene to gene; a class keyed on the spacer does not.
3. Second pass: every candidate ORF (all starts of each stop) scored as model log-odds +
   ``coding_weight`` x its codons' dicodon scores + ``start_weight`` x its start's score, decoded
   with the same greedy overlap rule. Steps 2-3 run ``ROUNDS`` times, each learning from the
   previous pass's calls (starts chosen with a start model find the motif better).

Pure numpy and deterministic. The cost is ``ROUNDS`` more decoder passes plus the counting: on
E. coli (4.6 Mb, one CPU thread) 11.4 s against 2.8 s for one pass (benchmarks/RESULTS.md,
"Genome-adaptive decoding (tuning genomes)"). With no complete call of ``TRAINING_MIN_LENGTH`` bp
the first pass stands. A genome of a few kb learns from a handful of genes; on 3-24 kb pieces of
phage lambda and the A. thaliana chloroplast the adaptive pass was still no worse on average than
the first pass, so there is no minimum beyond one gene.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from pipelines.data.errors import InputError
from pipelines.genome.annotation import CDS
from pipelines.genome.decoder import (
    START_MODELS,
    DecoderConfig,
    base_ids,
    codon_ids,
    codon_in,
    codon_tables,
    decode,
    strands,
)

log = logging.getLogger(__name__)

RBS_WINDOW = 20  # bases upstream of a start codon read by the start model
TRAINING_MIN_LENGTH = 300  # bp: shorter first-pass calls are the least certain; not learned from
ROUNDS = 2  # learn-and-decode rounds after the first pass
CODON_PRIOR = 64.0  # pseudo-codons pulling coding codon usage towards the background
HEXAMER_PRIOR = 65536.0  # pseudo-hexamers (16 a cell) pulling the dicodon table towards the codon model
START_PRIOR = 4.0  # pseudo-observations pulling start-codon and upstream-base frequencies together


SD_CORE = "AGGAGG"  # the Shine-Dalgarno core (complement of the 16S rRNA's 3' end, CCUCCU)
SD_MIN_MOTIF = 3  # bases: the shortest piece of the core that counts
# Spacer (bases from the motif's last base to the start codon's first) bins, most typical first:
# a tie between two bins of the same motif length goes to the earlier one.
SD_SPACER_BINS = ((5, 7), (8, 10), (3, 4), (11, 13), (14, 17))


def _sd_motifs() -> dict[int, tuple[str, ...]]:
    """Motif length -> the distinct pieces of :data:`SD_CORE` of that length."""
    return {k: tuple(dict.fromkeys(SD_CORE[i : i + k] for i in range(len(SD_CORE) - k + 1)))
            for k in range(len(SD_CORE), SD_MIN_MOTIF - 1, -1)}


N_SD_CLASSES = 1 + len(_sd_motifs()) * len(SD_SPACER_BINS)  # class 0: no motif within reach


def sd_classes(bases: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """(k,) start-codon positions on a strand with base ids ``bases`` -> (k,) Shine-Dalgarno class.

    Class 0: no piece of the core at any spacer of :data:`SD_SPACER_BINS`; otherwise 1 + (motif
    length index, longest first) x bins + spacer bin, for the longest piece found (then the most
    typical spacer bin)."""
    n = bases.size
    out = np.zeros(positions.size, dtype=np.int64)
    done = np.zeros(positions.size, dtype=bool)
    letters = {c: i for i, c in enumerate("ACGT")}
    for li, (k, motifs) in enumerate(_sd_motifs().items()):
        hit = np.zeros(n + 1, dtype=bool)  # hit[i]: a motif of length k starts at base i (hit[n] stays False)
        if n >= k:
            for m in motifs:
                h = np.ones(n - k + 1, dtype=bool)
                for j, c in enumerate(m):
                    h &= bases[j : n - k + 1 + j] == letters[c]
                hit[: n - k + 1] |= h
        for bi, (lo, hi) in enumerate(SD_SPACER_BINS):
            found = np.zeros(positions.size, dtype=bool)
            for spacer in range(lo, hi + 1):
                first = positions - spacer - k  # the motif's first base
                found |= hit[np.where(first >= 0, first, n)]
            new = found & ~done
            out[new] = 1 + li * len(SD_SPACER_BINS) + bi
            done |= new
    return out


def _hexamers(codons: np.ndarray) -> np.ndarray:
    """(n,) codon ids -> (n,) hexamer ids 64 * codon(j) + codon(j + 3), -1 where incomplete."""
    hex_ = np.full(codons.shape, -1, dtype=np.int32)
    if codons.size > 3:
        a, b = codons[:-3].astype(np.int32), codons[3:].astype(np.int32)
        hex_[:-3] = np.where((a >= 0) & (b >= 0), 64 * a + b, -1)
    return hex_


def _window_bases(bases: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """(k,) positions -> (k, RBS_WINDOW) base ids (A=0..T=3) upstream, -1 off the sequence or not ACGT."""
    idx = positions[:, None] + np.arange(-RBS_WINDOW, 0)  # (k, RBS_WINDOW)
    inside = idx >= 0
    return np.where(inside, bases[np.where(inside, idx, 0)], -1)


def _count_windows(windows: np.ndarray) -> np.ndarray:
    """(k, RBS_WINDOW) base ids -> (RBS_WINDOW, 4) counts of each base at each position."""
    pos = np.broadcast_to(np.arange(RBS_WINDOW), windows.shape)
    ok = windows >= 0
    return np.bincount(4 * pos[ok] + windows[ok], minlength=4 * RBS_WINDOW).reshape(RBS_WINDOW, 4).astype(float)


@dataclass
class StatisticsCounts:
    """Counts behind :class:`GenomeStatistics`, added up sequence by sequence (:meth:`add`)."""

    transl_table: int = 11
    start_codons: tuple[str, ...] = DecoderConfig.start_codons
    min_length: int = 90
    background_hexamers: np.ndarray = field(default_factory=lambda: np.zeros(4096))
    coding_hexamers: np.ndarray = field(default_factory=lambda: np.zeros(4096))
    start_codon_counts: np.ndarray = field(default_factory=lambda: np.zeros((2, 64)))  # chosen / alternative
    upstream_counts: np.ndarray = field(default_factory=lambda: np.zeros((2, RBS_WINDOW, 4)))
    sd_counts: np.ndarray = field(default_factory=lambda: np.zeros((2, N_SD_CLASSES)))  # chosen / alternative
    start_model: str = "pwm"
    genes: int = 0

    def uses(self, part: str) -> bool:
        """Whether ``start_model`` ("pwm", "sd" or "pwm+sd") includes ``part``."""
        return part in self.start_model.split("+")

    def add(self, text: str, calls: list[CDS]) -> None:
        """Count one sequence ``text`` (ACGTN, any case) and its calls (forward coordinates).

        Raises ``InputError`` naming the call when one lies outside the sequence."""
        is_start, is_stop = codon_tables(self.transl_table, self.start_codons)
        n = len(text)
        genes_by_strand: dict[int, list[tuple[int, int]]] = {1: [], -1: []}
        for c in calls:
            if any(not 0 <= a < b <= n for a, b, _ in c.parts):
                raise InputError(f"call {c.id or '(no id)'} at {list(c.parts)} lies outside its sequence of {n:,} bp",
                                 record=repr(c.seqid))
            # Calls across the origin (two parts) and partial ones are left out: a handful at most.
            if c.partial5 or c.partial3 or len(c.parts) != 1 or c.length < TRAINING_MIN_LENGTH:
                continue
            ((a, b, strand),) = c.parts
            genes_by_strand[strand].append((a, b) if strand == 1 else (n - b, n - a))  # strand coordinates
        for strand, seq in zip((1, -1), strands(text)):
            codons = codon_ids(seq)  # (n,)
            hexes = _hexamers(codons)  # (n,)
            self.background_hexamers += np.bincount(hexes[hexes >= 0], minlength=4096)
            genes = genes_by_strand[strand]
            if not genes:
                continue
            s = np.array([g[0] for g in genes])
            e = np.array([g[1] for g in genes])
            # Dicodons from (start, 2nd codon) to (second-to-last sense codon, last sense codon).
            pos = np.concatenate([np.arange(a, b - 8, 3) for a, b in zip(s, e)])
            gene_hexes = hexes[pos]
            self.coding_hexamers += np.bincount(gene_hexes[gene_hexes >= 0], minlength=4096)
            self._add_starts(seq, codons, is_start, is_stop, s, e)
            self.genes += len(genes)

    def _add_starts(self, seq: bytes, codons, is_start, is_stop, s: np.ndarray, e: np.ndarray) -> None:
        """Start codon and upstream bases of each gene's chosen start and of its ORF's other starts.

        Genes that do not begin at one of the table's start codons (possible in calls that did not
        come from the decoder, e.g. a reference annotation's ATT or NTG) teach the coding table only:
        the start model scores a choice among start codons."""
        ok = codon_in(codons[s], is_start)
        s, e = s[ok], e[ok]
        start_pos = np.flatnonzero(codon_in(codons, is_start))
        stop_pos = np.flatnonzero(codon_in(codons, is_stop))
        alternatives = []
        for f in range(3):
            stops_f, starts_f = stop_pos[stop_pos % 3 == f], start_pos[start_pos % 3 == f]
            genes = np.flatnonzero(s % 3 == f)
            # The ORF of a gene begins after the last in-frame stop before its start (or at the
            # sequence's first codon in this frame when there is none).
            before = np.searchsorted(stops_f, s[genes])  # in-frame stops upstream of each start
            lo = np.full(genes.size, f)
            lo[before > 0] = stops_f[before[before > 0] - 1] + 3
            for g, low in zip(genes, lo):
                cand = starts_f[np.searchsorted(starts_f, low): np.searchsorted(starts_f, e[g] - self.min_length,
                                                                                 side="right")]
                alternatives.append(cand[cand != s[g]])
        alt = np.concatenate(alternatives) if alternatives else np.zeros(0, dtype=int)
        bases = base_ids(seq)
        for row, where in ((0, s), (1, alt)):
            self.start_codon_counts[row] += np.bincount(codons[where], minlength=64)
            self.upstream_counts[row] += _count_windows(_window_bases(bases, where))
            if self.uses("sd"):  # a motif scan of the strand: only when it is used
                self.sd_counts[row] += np.bincount(sd_classes(bases, where), minlength=N_SD_CLASSES)

    def statistics(self) -> GenomeStatistics:
        """The log-odds tables these counts give (zero, i.e. no opinion, where nothing was counted)."""
        bg_hex = self.background_hexamers + 1.0  # (4096,)
        bg_codon = bg_hex.reshape(64, 64).sum(1)
        bg_codon /= bg_codon.sum()
        bg_hex /= bg_hex.sum()
        cod_codon = self.coding_hexamers.reshape(64, 64).sum(1)
        cod_codon = (cod_codon + CODON_PRIOR * bg_codon) / (cod_codon.sum() + CODON_PRIOR)
        # Hexamer = codon pair: the coding table backs off to independent codons of the coding usage.
        prior = np.outer(cod_codon, cod_codon).ravel()
        cod_hex = (self.coding_hexamers + HEXAMER_PRIOR * prior) / (self.coding_hexamers.sum() + HEXAMER_PRIOR)
        # Per codon given the one before: log P(c1 c2 | coding) / P(c1 c2 | bg) - same for c1 alone.
        pair = np.log(cod_hex) - np.log(bg_hex)
        first = np.log(cod_hex.reshape(64, 64).sum(1)) - np.log(bg_hex.reshape(64, 64).sum(1))
        coding = (pair.reshape(64, 64) - first[:, None]).ravel()

        is_start, _ = codon_tables(self.transl_table, self.start_codons)
        chosen, other = self.start_codon_counts[:, is_start]  # (n_starts,) each
        pooled = (chosen + other + 1.0) / (chosen + other + 1.0).sum()
        start_codon = np.zeros(64)
        start_codon[is_start] = (np.log((chosen + START_PRIOR * pooled) / (chosen.sum() + START_PRIOR))
                                 - np.log((other + START_PRIOR * pooled) / (other.sum() + START_PRIOR)))
        up_chosen, up_other = self.upstream_counts  # (RBS_WINDOW, 4) each
        pooled = (up_chosen + up_other + 1.0) / (up_chosen + up_other + 1.0).sum(1, keepdims=True)
        rbs = (np.log((up_chosen + START_PRIOR * pooled) / (up_chosen.sum(1, keepdims=True) + START_PRIOR))
               - np.log((up_other + START_PRIOR * pooled) / (up_other.sum(1, keepdims=True) + START_PRIOR)))
        sd_chosen, sd_other = self.sd_counts
        pooled = (sd_chosen + sd_other + 1.0) / (sd_chosen + sd_other + 1.0).sum()
        sd = (np.log((sd_chosen + START_PRIOR * pooled) / (sd_chosen.sum() + START_PRIOR))
              - np.log((sd_other + START_PRIOR * pooled) / (sd_other.sum() + START_PRIOR)))
        # The start model's parts not in use score 0 (no opinion).
        if not self.uses("pwm"):
            rbs = np.zeros_like(rbs)
        if not self.uses("sd"):
            sd = np.zeros_like(sd)
        return GenomeStatistics(coding.astype(np.float32), start_codon.astype(np.float32),
                                rbs.astype(np.float32), self.genes, sd.astype(np.float32))


@dataclass(frozen=True)
class GenomeStatistics:
    """A genome's own coding and start statistics, as log-odds tables."""

    coding: np.ndarray  # (4096,) log-odds of codon c2 after c1 (hexamer 64 * c1 + c2), coding vs background
    start_codon: np.ndarray  # (64,) log-odds of each start codon, chosen vs alternative starts
    rbs: np.ndarray  # (RBS_WINDOW, 4) log-odds of each base upstream (-20..-1) of a chosen start
    genes: int  # genes learned from
    sd: np.ndarray = field(default_factory=lambda: np.zeros(N_SD_CLASSES, dtype=np.float32))  # per SD class

    def strand_scores(self, seq: bytes, tables: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Per-position scores along one strand's bases ``seq`` (n,):

        - ``codon`` (n,): the dicodon log-odds of the codon starting at each position given the codon
          before it (0 where either is incomplete and at stop codons, which end an ORF once);
        - ``start`` (n,): at start codons, the start codon's log-odds plus the upstream window's; 0
          elsewhere. ``tables`` = (is_start, is_stop) over codon ids (:func:`codon_tables`).
        """
        is_start, is_stop = tables
        codons = codon_ids(seq)  # (n,)
        hexes = _hexamers(codons)  # (n,) hexamer starting at each position
        codon = np.zeros(len(seq), dtype=np.float32)
        if len(seq) > 3:
            h = hexes[:-3]
            codon[3:] = np.where(h >= 0, self.coding[np.maximum(h, 0)], 0.0)
        codon[codon_in(codons, is_stop)] = 0.0
        start = np.zeros(len(seq), dtype=np.float32)
        where = np.flatnonzero(codon_in(codons, is_start))
        bases = base_ids(seq)
        windows = _window_bases(bases, where)  # (k, RBS_WINDOW)
        rbs = np.where(windows >= 0, self.rbs[np.arange(RBS_WINDOW), np.maximum(windows, 0)], 0.0).sum(1)
        sd = self.sd[sd_classes(bases, where)] if self.sd.any() else 0.0
        start[where] = self.start_codon[codons[where]] + rbs + sd
        return codon, start


def learn_statistics(sequences: list[tuple[str, list[CDS]]], *, transl_table: int = 11,
                     start_codons: tuple[str, ...] = DecoderConfig.start_codons,
                     min_length: int = 90, start_model: str = "pwm") -> GenomeStatistics:
    """The statistics of a genome (``(text, calls)`` per sequence) learned from its calls."""
    if start_model not in START_MODELS:
        raise ValueError(f"start_model must be one of {', '.join(START_MODELS)}, got {start_model!r}")
    counts = StatisticsCounts(transl_table, tuple(start_codons), min_length, start_model=start_model)
    for text, calls in sequences:
        counts.add(text, calls)
    return counts.statistics()


def decode_genome(
    sequences: list[tuple[str, str, np.ndarray, bool]],
    *,
    transl_table: int = 11,
    config: DecoderConfig | None = None,
) -> list[list[CDS]]:
    """Gene calls on every sequence ``(seqid, text, probs (seqlen, 2, 4), circular)`` of one genome.

    Without ``config.adaptive`` this is :func:`decode` on each; with it, the first pass's calls teach
    the genome's statistics, learned on all sequences together, and the genome is decoded again
    (``ROUNDS`` times; see the module docstring).
    """
    cfg = config or DecoderConfig()

    def one_pass(stats: GenomeStatistics | None) -> list[list[CDS]]:
        return [decode(text, probs, seqid=seqid, transl_table=transl_table, circular=circular, config=cfg,
                       statistics=stats) for seqid, text, probs, circular in sequences]

    calls = one_pass(None)
    if not cfg.adaptive:
        return calls
    for round_ in range(ROUNDS):
        stats = learn_statistics([(text, c) for (_, text, _, _), c in zip(sequences, calls)],
                                 transl_table=transl_table, start_codons=cfg.start_codons,
                                 min_length=cfg.min_length, start_model=cfg.start_model)
        log.info("adaptive round %d: learned from %d genes", round_ + 1, stats.genes)
        if stats.genes == 0:  # nothing to learn from: the first pass stands
            break
        calls = one_pass(stats)
    return calls
