"""Per-base, per-strand CDS labels.

Two tracks, forward strand (0) and reverse strand (1), so genes overlapping on opposite strands are
both represented. In each track a base is 0 (not in a CDS on that strand) or 1/2/3, its position in
its codon read along that strand: on the reverse track, position 1 is the codon's first base as the
ribosome reads it, i.e. the highest forward coordinate of the three.

Codon positions follow each CDS's parts in biological order with the phase carried across parts, so
an intron, a -1 ribosomal slippage (a base read twice) or a trans-spliced exon on the other strand
all come out right; ``codon_start`` (GenBank /codon_start, GTF frame + 1) shifts the phase of the
first part.

Overlap rule: where two CDS on the same strand overlap, each base takes the label of the *longest*
CDS covering it (ties: the one listed first). Overlaps between neighbours are mostly a few bases
(ATGA), where either choice moves a label by a codon; in long overlaps (a short gene inside or
across a long one in another frame) the long gene is nearly always the well-supported one, and
keeping its frame intact keeps the track a consistent reading frame over the longest stretch.
"""

from __future__ import annotations

import numpy as np

from pipelines.genome.annotation import CDS

NONCODING = 0
TRACKS = 2  # forward, reverse


def codon_positions(cds: CDS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bases of ``cds`` in reading order: (forward index, track 0/1, codon position 1..3), each (n,)."""
    index, track = [], []
    for start, end, strand in cds.parts:
        index.append(np.arange(start, end) if strand == 1 else np.arange(end - 1, start - 1, -1))
        track.append(np.full(end - start, 0 if strand == 1 else 1, dtype=np.int8))
    index_all = np.concatenate(index)
    # codon_start=2: the first base ends a codon begun before the CDS (position 3), and so on.
    offset = np.arange(index_all.size) - (cds.codon_start - 1)
    return index_all, np.concatenate(track), (offset % 3 + 1).astype(np.int8)


def cds_labels(length: int, cds: list[CDS]) -> np.ndarray:
    """Labels (length, 2) int8 for one sequence: 0 = non-coding, 1/2/3 = codon position (see module doc)."""
    labels = np.zeros((length, TRACKS), dtype=np.int8)  # (seqlen, strand)
    # Paint shortest first so the longest CDS is painted last and wins; the stable sort on the
    # negated position keeps the first-listed CDS last among equals.
    order = sorted(range(len(cds)), key=lambda i: (cds[i].length, -i))
    for i in order:
        index, track, position = codon_positions(cds[i])
        if index.size and (index.min() < 0 or index.max() >= length):
            raise ValueError(f"CDS {cds[i].id or i} on {cds[i].seqid} lies outside the sequence (length {length})")
        labels[index, track] = position
    return labels


def coding_mask(length: int, cds: list[CDS]) -> np.ndarray:
    """(2, length) bool: base lies in some CDS on that strand (overlaps need no rule here)."""
    mask = np.zeros((TRACKS, length), dtype=bool)  # (strand, seqlen)
    for c in cds:
        for start, end, strand in c.parts:
            mask[0 if strand == 1 else 1, start:end] = True
    return mask
