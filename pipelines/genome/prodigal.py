"""Prodigal (through pyrodigal) on an annotated genome, as the baseline gene caller.

pyrodigal is GPL-3.0, so it is an optional extra (``pip install 'seqmamba[eval]'``) imported only
here, only when called.
"""

from __future__ import annotations

import logging

from pipelines.genome.annotation import CDS, AnnotatedSequence

log = logging.getLogger(__name__)

MODES = ("auto", "single", "meta")
# Prodigal wants at least 100 kb to train on (it refuses below 20 kb); shorter genomes, and viruses,
# whose genes follow their host's statistics more than their own, go through its metagenomic models.
MIN_TRAINING_BP = 100_000


def _pyrodigal():
    try:
        import pyrodigal
    except ImportError:
        raise ImportError(
            "pyrodigal is not installed; it is an optional extra (GPL-3.0): pip install 'seqmamba[eval]'"
        ) from None
    return pyrodigal


def choose_mode(sequences: list[AnnotatedSequence], mode: str = "auto") -> str:
    """'single' or 'meta': ``auto`` picks meta for viruses and genomes under 100 kb, single otherwise."""
    if mode not in MODES:
        raise ValueError(f"prodigal mode must be one of {MODES}, got {mode!r}")
    if mode != "auto":
        return mode
    small = sum(len(s) for s in sequences) < MIN_TRAINING_BP
    return "meta" if small or any(s.is_virus for s in sequences) else "single"


def run_pyrodigal(
    sequences: list[AnnotatedSequence], mode: str = "auto", transl_table: int | None = None
) -> tuple[list[CDS], str]:
    """Prodigal's gene calls on ``sequences`` and the mode used ('single' or 'meta').

    Single mode trains once on all sequences with ``transl_table`` (default: the genetic code of
    the first sequence's annotation), as Prodigal does for a multi-sequence genome; meta mode uses
    Prodigal's pre-trained models on each sequence. Sequences are treated as linear (Prodigal's
    default, genes may run off the ends).
    """
    pyrodigal = _pyrodigal()
    mode = choose_mode(sequences, mode)
    table = transl_table or sequences[0].transl_table
    if mode == "meta":
        finder = pyrodigal.GeneFinder(meta=True)
    else:
        finder = pyrodigal.GeneFinder()
        finder.train(*(s.seq.encode("ascii") for s in sequences), translation_table=table)
    log.info("pyrodigal %s mode%s", mode, f", genetic code {table}" if mode == "single" else "")
    calls = []
    for s in sequences:
        for k, gene in enumerate(finder.find_genes(s.seq.encode("ascii")), start=1):
            strand = int(gene.strand)
            # pyrodigal: begin <= end, 1-based inclusive; partial_begin is the left edge on either strand.
            p5, p3 = (gene.partial_begin, gene.partial_end) if strand == 1 else (gene.partial_end, gene.partial_begin)
            calls.append(
                CDS(
                    s.id,
                    ((gene.begin - 1, gene.end, strand),),
                    transl_table=int(gene.translation_table),
                    id=f"{s.id}_{k}",
                    score=float(gene.score),
                    partial5=bool(p5),
                    partial3=bool(p3),
                )
            )
    return calls, mode
