"""Synonymous recoding: training windows whose genes keep their proteins but not their codon usage.

A gene caller trained on a few genomes learns their codon usage along with what makes a gene a gene,
and codon usage is what changes most from one genome to the next (it follows GC content, from 25 %
to 75 % among bacteria). On an unseen genome the model's own calls miss genes whose codons look
foreign: one pass of the decoder on held-out B. subtilis finds 83 % of the genes, the genome-adaptive
passes (which learn the genome's codon usage from those calls) 96 %.

Recoding rewrites the codons of a training window's genes with synonyms drawn from a random codon
usage, as if the same proteins were encoded by a genome of another composition; the labels (codon
positions) and everything outside the recoded codons stay as they are. What the model can still
learn from is what all genomes share: reading frames free of stops, amino-acid composition, the
periodicity of codon positions, start and stop codons and the sequence around them.

Which codons (:func:`recodable_codons`), all on complete single-part CDS: neither the first codon
(the start, read as Met whatever it is) nor the last (the stop); no codon any base of which lies in
another CDS (either strand), so overlapping genes keep both their proteins; only sense codons whose
amino acid has synonyms in the sequence's genetic code.

The codon usage of a window (:func:`draw_usage`): a third-position-and-beyond GC level ``g`` drawn
uniformly in ``GC_RANGE``, each synonym weighted ``g`` per G/C and ``1 - g`` per A/T it holds, times a
log-normal factor of spread ``USAGE_NOISE`` (preferences that GC does not explain: tRNA pools,
selection on expression).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
from Bio.Data import CodonTable

from pipelines.genome.annotation import CDS
from pipelines.genome.decoder import codon_id_array
from seqmodels import vocab

GC_RANGE = (0.2, 0.8)  # GC level of the drawn codon usages (M. genitalium's genes ~0.32, Streptomyces' ~0.72)
USAGE_NOISE = 0.5  # log-normal spread of each codon's weight around its GC-driven one


@dataclass(frozen=True)
class RecodableCodons:
    """The codons of one sequence that recoding may rewrite, sorted by position; each (k,)."""

    position: np.ndarray  # forward coordinate of the codon's lowest base
    strand: np.ndarray  # +1 / -1: the strand the codon is read on
    amino: np.ndarray  # index into the synonym table's rows (:func:`synonyms`)

    def __len__(self) -> int:
        return int(self.position.size)


@cache
def synonyms(transl_table: int = 11) -> tuple[np.ndarray, np.ndarray]:
    """(amino (64,), table (n_amino, 6)) for a genetic code: ``amino[c]`` the row of codon id ``c``
    (16*b1 + 4*b2 + b3, A=0 C=1 G=2 T=3), -1 for stops and for amino acids with one codon; row
    ``a`` of ``table`` lists that amino acid's codon ids, padded with -1."""
    forward = CodonTable.unambiguous_dna_by_id[int(transl_table)].forward_table
    by_amino: dict[str, list[str]] = {}
    for codon, aa in sorted(forward.items()):
        by_amino.setdefault(aa, []).append(codon)
    groups = [codon_id_array(codons) for _, codons in sorted(by_amino.items()) if len(codons) > 1]
    amino = np.full(64, -1, dtype=np.int16)
    table = np.full((len(groups), max(len(g) for g in groups)), -1, dtype=np.int16)
    for row, ids in enumerate(groups):
        amino[ids] = row
        table[row, : len(ids)] = ids
    return amino, table


def recodable_codons(seq: str, cds: list[CDS], transl_table: int = 11) -> RecodableCodons:
    """The codons of ``seq`` (upper-case text) that recoding may rewrite (see the module docstring)."""
    n = len(seq)
    cover = np.zeros(n + 1, dtype=np.int32)  # CDS covering each base, either strand (difference array)
    for c in cds:
        for a, b, _ in c.parts:
            cover[a] += 1
            cover[b] -= 1
    single = np.cumsum(cover[:n]) == 1
    bases = vocab.encode(seq).astype(np.int16) - vocab.A  # A=0 .. T=3 (N and others outside 0..3)
    amino_of, _ = synonyms(transl_table)
    positions, strands = [], []
    for c in cds:
        if len(c.parts) != 1 or c.codon_start != 1 or c.partial5 or c.partial3:
            continue
        ((a, b, strand),) = c.parts
        if (b - a) % 3 or b - a < 9:
            continue
        lows = np.arange(a + 3, b - 3, 3)  # inner codons' lowest forward coordinate (either strand)
        positions.append(lows)
        strands.append(np.full(lows.size, strand, dtype=np.int8))
    if not positions:
        empty = np.zeros(0, dtype=np.int64)
        return RecodableCodons(empty, empty.astype(np.int8), empty.astype(np.int16))
    pos, strand = np.concatenate(positions), np.concatenate(strands)
    b0, b1, b2 = bases[pos], bases[pos + 1], bases[pos + 2]
    acgt = (np.minimum(np.minimum(b0, b1), b2) >= 0) & (np.maximum(np.maximum(b0, b1), b2) <= 3)
    # Codon id read along the gene's strand (the reverse strand's codon is the complement, reversed).
    ids = np.where(strand == 1, 16 * b0 + 4 * b1 + b2, 16 * (3 - b2) + 4 * (3 - b1) + (3 - b0))
    amino = amino_of[np.where(acgt, ids, 0)]
    keep = acgt & (amino >= 0) & single[pos] & single[pos + 1] & single[pos + 2]
    order = np.argsort(pos[keep], kind="stable")
    return RecodableCodons(pos[keep][order].astype(np.int64), strand[keep][order], amino[keep][order])


def draw_usage(rng: np.random.Generator, transl_table: int = 11) -> np.ndarray:
    """A random codon usage: (n_amino, 6) probabilities of each synonym (rows of :func:`synonyms`)."""
    _, table = synonyms(transl_table)
    gc = rng.uniform(*GC_RANGE)
    ids = np.maximum(table, 0)
    n_gc = ((ids // 16 % 4 == 1) | (ids // 16 % 4 == 2)).astype(int) + (
        (ids // 4 % 4 == 1) | (ids // 4 % 4 == 2)).astype(int) + ((ids % 4 == 1) | (ids % 4 == 2)).astype(int)
    weight = gc ** n_gc * (1.0 - gc) ** (3 - n_gc) * np.exp(rng.normal(0.0, USAGE_NOISE, size=table.shape))
    weight[table < 0] = 0.0
    return weight / weight.sum(1, keepdims=True)


def recode_window(tokens: np.ndarray, codons: RecodableCodons, offset: np.ndarray, usage: np.ndarray,
                  rng: np.random.Generator, transl_table: int = 11) -> np.ndarray:
    """A copy of window ``tokens`` (L,) whose codons ``codons`` (those in the window, at ``offset``
    (k,) from its first base) are redrawn from ``usage`` (:func:`draw_usage`)."""
    _, table = synonyms(transl_table)
    out = np.array(tokens, copy=True)
    if offset.size == 0:
        return out
    cdf = np.cumsum(usage[codons.amino], axis=1)  # (k, 6)
    pick = (rng.uniform(size=(offset.size, 1)) * cdf[:, -1:] > cdf).sum(1)  # (k,) column of the drawn synonym
    pick = np.minimum(pick, (table[codons.amino] >= 0).sum(1) - 1)  # rounding at the top of the cdf
    new = table[codons.amino, pick].astype(np.int64)  # (k,) codon ids along the gene's strand
    digits = np.stack([new // 16, new // 4 % 4, new % 4], axis=1)  # (k, 3) bases in reading order
    forward = codons.strand == 1
    # Forward coordinates low..high: the codon as read on the + strand, its complement reversed on -.
    low_to_high = np.where(forward[:, None], digits, 3 - digits[:, ::-1])
    out[offset[:, None] + np.arange(3)] = (low_to_high + vocab.A).astype(out.dtype)
    return out


def codons_in_window(codons: RecodableCodons, start: int, length: int,
                     seqlen: int) -> tuple[RecodableCodons, np.ndarray]:
    """The codons wholly inside the window of ``length`` bases from ``start`` (which may run past the
    origin of a circular sequence of ``seqlen``) and their offsets from the window's first base."""
    offset = (codons.position - start) % seqlen
    inside = offset + 3 <= length
    return (RecodableCodons(codons.position[inside], codons.strand[inside], codons.amino[inside]),
            offset[inside])
