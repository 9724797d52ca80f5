"""What the genome page shows, as plain data frames and bytes (no Streamlit, no model).

Gene calls come from ``pipelines.genome.predict.call_genes`` (CDS objects with 0-based half-open
parts); these helpers turn them into a table of genes, the intervals of a chart window, the
per-base coding probability binned down to what a chart can draw, and the GFF3 and bedGraph files
written by the part-1 writers.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.genome.annotation import CDS

STRANDS = {1: "+", -1: "-"}


def genes_table(calls: list[CDS]) -> pd.DataFrame:
    """One row per called gene: id, sequence, 1-based ``left``/``right`` ends as GFF3 writes them
    (``left > right`` for a gene across the origin of a circular sequence), strand, length in bp
    and in amino acids, the decoder's score and whether it runs off an end of the sequence."""
    rows = []
    for c in calls:
        five, three = c.five_prime + 1, c.three_prime + 1
        left, right = (five, three) if c.strand == 1 else (three, five)
        partial = "5' and 3'" if c.partial5 and c.partial3 else "5'" if c.partial5 else "3'" if c.partial3 else ""
        rows.append({"id": c.id, "sequence": c.seqid, "left": left, "right": right, "strand": STRANDS[c.strand],
                     "length_bp": c.length, "length_aa": c.length // 3 - (0 if c.partial3 else 1),
                     "score": c.score, "partial": partial})
    columns = ["id", "sequence", "left", "right", "strand", "length_bp", "length_aa", "score", "partial"]
    return pd.DataFrame(rows, columns=columns)


def gene_intervals(calls: list[CDS], seqid: str, lo: int, hi: int) -> pd.DataFrame:
    """The parts of ``seqid``'s genes that overlap bases ``lo..hi`` (1-based, inclusive), clipped to
    them: columns id, strand, start, end (1-based inclusive), length_bp. A gene across the origin
    is drawn as its two parts."""
    rows = []
    for c in calls:
        if c.seqid != seqid:
            continue
        for start, end, strand in c.parts:
            if end >= lo and start + 1 <= hi:
                rows.append({"id": c.id, "strand": STRANDS[strand], "start": max(start + 1, lo),
                             "end": min(end, hi), "length_bp": c.length})
    return pd.DataFrame(rows, columns=["id", "strand", "start", "end", "length_bp"])


def binned_coding(coding: np.ndarray, lo: int, hi: int, max_points: int = 1500) -> pd.DataFrame:
    """Mean coding probability per strand in at most ``max_points`` equal bins of bases ``lo..hi``
    (1-based, inclusive), so a chart of a whole genome stays small; single bases when few are shown.

    ``coding``: (seqlen, 2) P(coding) on the forward and reverse strand. Returns long-format rows
    with columns position (the bin's first base), strand ("+"/"-") and probability.
    """
    coding = np.asarray(coding)
    if coding.ndim != 2 or coding.shape[1] != 2:
        raise ValueError(f"coding: expected shape (seqlen, 2), got {coding.shape}")
    if not 1 <= lo <= hi <= len(coding):
        raise ValueError(f"need 1 <= lo <= hi <= {len(coding)}, got lo={lo}, hi={hi}")
    if max_points < 1:
        raise ValueError(f"max_points must be at least 1, got {max_points}")
    view = coding[lo - 1 : hi].astype(np.float64)  # (n, 2)
    size = -(-len(view) // max_points)  # bases per bin, rounded up
    starts = np.arange(0, len(view), size)
    sums = np.add.reduceat(view, starts, axis=0)  # (bins, 2)
    counts = np.diff(np.append(starts, len(view)))[:, None]
    means = sums / counts
    frames = [pd.DataFrame({"position": starts + lo, "strand": label, "probability": means[:, k]})
              for k, label in enumerate(("+", "-"))]
    return pd.concat(frames, ignore_index=True)


def as_bytes(write: Callable[[Path], None]) -> bytes:
    """What ``write(path)`` writes to a file, as bytes (the part-1 writers take paths, downloads want bytes)."""
    fd, name = tempfile.mkstemp(prefix="seqmamba-app-", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(name))
        return Path(name).read_bytes()
    finally:
        Path(name).unlink(missing_ok=True)
