"""Per-base probabilities -> gene models (CDS calls).

Input: the sequence and ``probs`` (seqlen, 2 strands, 4 classes): for each base and strand, the
model's probability of class 0 (non-coding) and of codon positions 1/2/3 (reverse strand counted
along the reverse strand, as in ``pipelines.genome.labels``).

Rule (one pass per strand and frame, then a greedy pass):
1. Every in-frame stop codon of the genetic code ends a candidate ORF; its candidate starts are the
   start codons (ATG/GTG/TTG that the code allows) in the same frame after the previous in-frame
   stop. A base at codon position k of a candidate scores logit(p_k) = log p_k - log(1 - p_k), so
   bases the model calls non-coding *or* coding in another frame count against it. For each stop
   the start maximising the ORF's summed score is kept (ties: the longer ORF). ``logit_offset`` is
   subtracted from every base's log-odds and ``start_bonus`` added by start codon (both 0 by default).
2. ORFs shorter than ``min_length`` (start to stop codon inclusive) or scoring at most
   ``min_score`` are dropped.
3. Greedy: in decreasing score, an ORF is accepted unless more than ``max_overlap`` of its bases
   already lie in accepted ORFs (either strand).

With ``statistics`` (a second, genome-adaptive pass: :mod:`pipelines.genome.adaptive`), each
candidate also scores ``coding_weight`` x the genome's dicodon log-odds of its codons and
``start_weight`` x its start's log-odds (start codon and upstream window), before step 1's choice
of start and step 2's threshold.

On a linear sequence, ORFs may run off either end (``partial5``/``partial3``, starting or ending
codon-aligned at the edge) when ``allow_partial``. On a circular one the sequence is extended by
``max_length`` bases past the origin and each stop codon is considered exactly once, at the copy
whose upstream window is complete, so genes across the origin are found like any other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from Bio.Data import CodonTable

from pipelines.data.errors import InputError
from pipelines.genome.annotation import CDS

if TYPE_CHECKING:
    from pipelines.genome.adaptive import GenomeStatistics

DEFAULT_STARTS = ("ATG", "GTG", "TTG")
_BASE_INDEX = np.full(256, -1, dtype=np.int16)
for _i, _b in enumerate("ACGT"):
    _BASE_INDEX[ord(_b)] = _i
_COMPLEMENT = bytes.maketrans(b"ACGTN", b"TGCAN")


# Upstream parts of the adaptive start score (pipelines.genome.adaptive): a position weight matrix,
# a Shine-Dalgarno motif class, or both.
START_MODELS = ("pwm", "sd", "pwm+sd")


@dataclass(frozen=True)
class DecoderConfig:
    """Settings of :func:`decode` (see the module docstring for the rule)."""

    min_length: int = 90  # bp, start to stop codon inclusive (Prodigal's default)
    max_overlap: int = 60  # bp an accepted ORF may share with already accepted ones
    min_score: float = 0.0  # summed log-odds an ORF must exceed
    allow_partial: bool = True  # linear sequences: ORFs running off an end
    max_length: int = 100_000  # longest ORF looked for across the origin of a circular sequence
    start_codons: tuple[str, ...] = DEFAULT_STARTS
    eps: float = 1e-6  # probabilities are clipped to [eps, 1 - eps] before the logit
    # Subtracted from every base's log-odds: > 0 asks for more than even odds before a base counts
    # for an ORF, so a start is not moved upstream through bases the model is unsure of.
    logit_offset: float = 0.0
    # Added to the score of an ORF by its start codon (log-prior, e.g. {"ATG": 0, "GTG": -2}):
    # bacteria start most genes at ATG; codons not named get 0.
    start_bonus: dict[str, float] | None = None
    # Genome-adaptive decoding (pipelines.genome.adaptive): learn the genome's coding and start
    # statistics from a first pass and decode again, adding them with these weights (per codon's
    # dicodon log-odds; per start's codon + upstream log-odds). ``adaptive`` is read by decode_genome
    # only; the weights by decode whenever it is given statistics. They are large because the
    # dicodon log-odds are a fraction of a nat per codon against several for a confident model; they
    # were chosen on non-test genomes with min_score 30 (benchmarks/RESULTS.md, "Genome-adaptive
    # decoding (tuning genomes)"); the model's own log-odds keep weight 1.
    adaptive: bool = False
    coding_weight: float = 60.0
    start_weight: float = 64.0
    # What the adaptive start score reads upstream of a start codon: "pwm" (a matrix of the 20 bases
    # upstream), "sd" (Shine-Dalgarno motif class by length and spacer) or "pwm+sd" (both summed).
    start_model: str = "pwm"

    def __post_init__(self):
        if self.min_length < 6:
            raise ValueError(f"min_length must be at least 6 (a start and a stop codon), got {self.min_length}")
        if self.max_overlap < 0 or self.max_length < self.min_length:
            raise ValueError("max_overlap must be >= 0 and max_length >= min_length")
        unknown = sorted(set(self.start_bonus or {}) - set(self.start_codons))
        if unknown:
            raise ValueError(f"start_bonus names codons that are not start codons: {', '.join(unknown)}")
        # Settings may come from a package's config.json: check their types here, before a model
        # runs for minutes, not when the decoder first uses them.
        if not isinstance(self.adaptive, bool):
            raise ValueError(f"adaptive must be true or false, got {self.adaptive!r}")
        if self.start_model not in START_MODELS:
            raise ValueError(f"start_model must be one of {', '.join(START_MODELS)}, got {self.start_model!r}")
        numbers = {"min_score": self.min_score, "logit_offset": self.logit_offset,
                   "coding_weight": self.coding_weight, "start_weight": self.start_weight, **{
                       f"start_bonus[{codon}]": value for codon, value in (self.start_bonus or {}).items()}}
        for name, value in numbers.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        for name in ("coding_weight", "start_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (a weight on the genome's own log-odds), "
                                 f"got {getattr(self, name)!r}")


# Settings a gene-caller package may record under config.json's "decoder" (chosen for that model);
# min_length stays the user's (the command line's --min-len, the app's field).
PACKAGE_SETTINGS = ("max_overlap", "min_score", "logit_offset", "start_bonus", "adaptive", "coding_weight",
                    "start_weight")


def decoder_for_package(config: dict, min_length: int = 90, source: str = "package",
                        field: str = "config.json 'decoder'") -> DecoderConfig:
    """The decoder a gene-caller package asks for: its config.json ``decoder`` settings (any of
    ``PACKAGE_SETTINGS``; missing ones keep the defaults) with ``min_length`` from the user.
    ``field`` names the settings in error messages when they come from elsewhere."""
    settings = config.get("decoder") or {}
    if not isinstance(settings, dict) or set(settings) - set(PACKAGE_SETTINGS):
        extra = sorted(set(settings) - set(PACKAGE_SETTINGS)) if isinstance(settings, dict) else settings
        raise InputError(f"{field} must map {', '.join(PACKAGE_SETTINGS)} to values; got {extra!r}", file=source)
    try:
        return DecoderConfig(min_length=min_length, **settings)
    except (TypeError, ValueError) as err:
        raise InputError(f"{field}: {err}", file=source) from None


def codon_id_array(codons) -> np.ndarray:
    """Codon texts (ACGT) -> their ids 16*b1 + 4*b2 + b3 (A=0, C=1, G=2, T=3)."""
    return np.array([16 * "ACGT".index(c[0]) + 4 * "ACGT".index(c[1]) + "ACGT".index(c[2]) for c in codons], dtype=int)


def codon_tables(transl_table: int, start_codons=DEFAULT_STARTS) -> tuple[np.ndarray, np.ndarray]:
    """(is_start (64,), is_stop (64,)) bool over codon ids 16*b1 + 4*b2 + b3 (A=0, C=1, G=2, T=3).

    Starts are ``start_codons`` that NCBI's table lists as initiation codons; stops are the table's.
    """
    try:
        table = CodonTable.unambiguous_dna_by_id[int(transl_table)]
    except (KeyError, ValueError):
        raise InputError(f"transl_table {transl_table!r} is not an NCBI genetic code") from None
    is_start = np.zeros(64, dtype=bool)
    is_stop = np.zeros(64, dtype=bool)
    is_start[codon_id_array([c for c in start_codons if c in table.start_codons])] = True
    is_stop[codon_id_array(table.stop_codons)] = True
    return is_start, is_stop


def base_ids(seq: bytes) -> np.ndarray:
    """(n,) base ids A=0, C=1, G=2, T=3 of upper-case ``seq``; -1 at any other byte (N)."""
    return _BASE_INDEX[np.frombuffer(seq, dtype=np.uint8)]


def codon_ids(seq: bytes) -> np.ndarray:
    """Codon id starting at each base, -1 where the codon is incomplete or holds a non-ACGT base; (n,)."""
    b = base_ids(seq)
    ids = np.full(len(seq), -1, dtype=np.int16)
    if len(seq) >= 3:
        ids[:-2] = 16 * b[:-2] + 4 * b[1:-1] + b[2:]
        ids[:-2][(b[:-2] < 0) | (b[1:-1] < 0) | (b[2:] < 0)] = -1
    return ids


def codon_in(codons: np.ndarray, table: np.ndarray) -> np.ndarray:
    """(n,) codon ids (-1: none) -> (n,) bool: the codon is one ``table`` (64,) marks (never where -1)."""
    valid = codons >= 0
    return valid & table[np.where(valid, codons, 0)]


def strands(seq: str) -> tuple[bytes, bytes]:
    """(forward, reverse complement) of ``seq`` as upper-case bytes; strand coordinate x of the
    reverse is forward coordinate len(seq) - 1 - x."""
    fwd = seq.upper().encode("ascii")
    return fwd, fwd.translate(_COMPLEMENT)[::-1]


def _logits(p: np.ndarray, eps: float) -> np.ndarray:
    """(n, 4) class probabilities -> (n, 3) float32 logits of codon positions 1..3 (class 0 is not needed)."""
    q = np.clip(np.asarray(p[:, 1:], dtype=np.float32), eps, 1.0 - eps)  # (n, 3)
    return np.log(q) - np.log1p(-q)


def _frame_scores(logit: np.ndarray) -> np.ndarray:
    """(n, 3) codon-position logits -> (n, 3): column f scores each base as coding in the frame whose
    codons start at positions = f (mod 3), i.e. the logit of codon position (j - f) % 3 + 1."""
    out = np.empty_like(logit)  # (n, 3)
    for f in range(3):
        for r in range(3):  # bases j = r (mod 3) sit at codon position (r - f) % 3 + 1 in frame f
            out[r::3, f] = logit[r::3, (r - f) % 3]
    return out


def _strand_orfs(seq: bytes, p: np.ndarray, circular: bool, cfg: DecoderConfig, tables,
                 statistics: GenomeStatistics | None = None) -> list[tuple]:
    """Best ORF per stop codon on one strand: (parts in strand coordinates, score, partial5, partial3)."""
    n = len(seq)
    is_start, is_stop = tables
    margin = min(cfg.max_length, n) if circular else 0
    logit = _logits(p, cfg.eps) - np.float32(cfg.logit_offset)  # (n, 3)
    bonus = np.zeros(64)
    for codon, value in (cfg.start_bonus or {}).items():
        bonus[codon_id_array([codon])] = value
    if circular:  # extended coordinates: x and x + n are the same base
        wrap = np.arange(n + margin + 2) % n
        ext = bytes(np.frombuffer(seq, dtype=np.uint8)[wrap])
        logit = logit[wrap]  # (n_ext, 3)
    else:
        ext = seq
    codons = codon_ids(ext)
    scores = _frame_scores(logit)  # (n_ext, 3), frames relative to extended coordinates
    start_extra = np.zeros(len(ext), dtype=np.float32)  # (n_ext,) added to an ORF by its start codon
    if statistics is not None:
        codon, start = statistics.strand_scores(ext, tables)  # (n_ext,) each
        for f in range(3):  # a codon counts in the frame whose codons start where it does
            scores[f::3, f] += np.float32(cfg.coding_weight) * codon[f::3]
        # The start codon's own dicodon score is conditioned on the codon upstream, outside the ORF.
        start_extra = np.float32(cfg.start_weight) * start - np.float32(cfg.coding_weight) * codon
    edges = cfg.allow_partial and not circular
    out = []
    for f in range(3):
        cum = np.concatenate([[0.0], np.cumsum(scores[:, f], dtype=np.float64)])
        pos = np.arange(f, len(ext) - 2, 3)
        ids = codons[pos]
        ends = pos[codon_in(ids, is_stop)] + 3
        partial3 = np.zeros(ends.size, dtype=bool)
        last = f + 3 * ((len(ext) - f) // 3)  # end of the last whole codon in this frame
        if edges and (ends.size == 0 or ends[-1] < last):
            ends, partial3 = np.append(ends, last), np.append(partial3, True)
        if ends.size == 0:
            continue
        starts = pos[codon_in(ids, is_start)]
        partial5 = np.zeros(starts.size, dtype=bool)
        if edges and not (starts.size and starts[0] == f):
            starts, partial5 = np.insert(starts, 0, f), np.insert(partial5, 0, True)
        seg = np.searchsorted(ends, starts, side="right")  # the stop (segment) each start reads into
        if edges:  # an edge start only belongs to the first segment: there is no stop before it
            keep = (seg < ends.size) & (~partial5 | (seg == 0))
        else:
            keep = seg < ends.size
        starts, partial5, seg = starts[keep], partial5[keep], seg[keep]
        length = ends[seg] - starts
        keep = length >= cfg.min_length
        starts, partial5, seg = starts[keep], partial5[keep], seg[keep]
        score = cum[ends[seg]] - cum[starts] + np.where(
            partial5, 0.0, bonus[np.maximum(codons[starts], 0)] + start_extra[starts])
        order = np.lexsort((starts, -score, seg))  # per segment: best score, then longest
        first = order[np.r_[True, seg[order][1:] != seg[order][:-1]]] if order.size else order
        first = first[score[first] > cfg.min_score]
        s_best, e_best = starts[first], ends[seg[first]]
        p5_best, p3_best, score_best = partial5[first], partial3[seg[first]], score[first]
        if circular:  # each stop once, at its copy whose upstream is complete; no ORF around the whole circle
            keep = (e_best - 3 >= margin) & (e_best - 3 < n + margin) & (e_best - s_best <= n)
            s_best, e_best, p5_best, p3_best, score_best = (
                x[keep] for x in (s_best, e_best, p5_best, p3_best, score_best)
            )
        for s, e, p5, p3, sc in zip(s_best.tolist(), e_best.tolist(), p5_best.tolist(), p3_best.tolist(), score_best):
            if not circular or e <= n:
                parts = [(s, e)]
            elif s >= n:
                parts = [(s - n, e - n)]
            else:
                parts = [(s, n), (0, e - n)]
            out.append((parts, float(sc), p5, p3))
    return out


def decode(
    seq: str,
    probs: np.ndarray,
    *,
    seqid: str = "seq",
    transl_table: int = 11,
    circular: bool = False,
    config: DecoderConfig | None = None,
    statistics: GenomeStatistics | None = None,
) -> list[CDS]:
    """Gene calls on one sequence from per-base class probabilities ``probs`` (seqlen, 2, 4).

    Returns CDS sorted by their lowest coordinate, with ``score`` (summed log-odds), ``partial5`` /
    ``partial3`` and ids ``{seqid}_{k}``. ``statistics`` (the genome's own, learned by
    :mod:`pipelines.genome.adaptive`) add to every candidate's score with the config's weights; this
    one pass ignores ``config.adaptive`` (``decode_genome`` runs the passes).
    """
    cfg = config or DecoderConfig()
    probs = np.asarray(probs)
    if probs.ndim != 3 or probs.shape[1:] != (2, 4) or probs.shape[0] != len(seq):
        raise InputError(f"probs for {seqid}: expected shape ({len(seq)}, 2, 4), got {probs.shape}")
    if not np.isfinite(probs).all() or probs.min() < 0 or probs.max() > 1:
        raise InputError(f"probs for {seqid}: values must be finite probabilities in [0, 1]")
    tables = codon_tables(transl_table, cfg.start_codons)
    n = len(seq)
    fwd, rev = strands(seq)
    candidates = []
    for strand, strand_seq, p in ((1, fwd, probs[:, 0]), (-1, rev, probs[::-1, 1])):
        for parts, score, p5, p3 in _strand_orfs(strand_seq, p, circular, cfg, tables, statistics):
            if strand == 1:
                fparts = tuple((a, b, 1) for a, b in parts)
            else:  # strand coordinate x is forward coordinate n - 1 - x
                fparts = tuple((n - b, n - a, -1) for a, b in parts)
            candidates.append((score, fparts, p5, p3))

    candidates.sort(key=lambda c: -c[0])
    occupied = np.zeros(n, dtype=bool)
    accepted = []
    for score, parts, p5, p3 in candidates:
        if sum(int(occupied[a:b].sum()) for a, b, _ in parts) > cfg.max_overlap:
            continue
        for a, b, _ in parts:
            occupied[a:b] = True
        accepted.append((score, parts, p5, p3))
    accepted.sort(key=lambda c: (min(a for a, _, _ in c[1]), c[1][0][2]))
    return [
        CDS(seqid, parts, transl_table=transl_table, id=f"{seqid}_{k}", score=score, partial5=p5, partial3=p3)
        for k, (score, parts, p5, p3) in enumerate(accepted, start=1)
    ]


def coding_probability(probs: np.ndarray) -> np.ndarray:
    """(seqlen, 2, 4) class probabilities -> (seqlen, 2) probability of coding on each strand."""
    return 1.0 - np.asarray(probs)[:, :, 0]
