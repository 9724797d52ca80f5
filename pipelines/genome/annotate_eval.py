"""``seqmamba annotate-eval PRED.gff3 REFERENCE``: gene calls against a reference annotation,
optionally beside pyrodigal's calls on the same genome (see ``pipelines.genome.evaluate``)."""

from __future__ import annotations

import argparse
import json
import math
import sys

from pipelines.data.errors import InputError
from pipelines.genome.annotation import CDS, AnnotatedSequence, read_annotation
from pipelines.genome.evaluate import Metrics, evaluate
from pipelines.genome.gff3 import read_gff3
from pipelines.genome.prodigal import MODES, run_pyrodigal

ROWS = (
    ("reference CDS", "n_reference", "d"),
    ("predicted genes", "n_predicted", "d"),
    ("sensitivity", "sensitivity", ".4f"),
    ("precision", "precision", ".4f"),
    ("exact start (of matched)", "exact_start", ".4f"),
    ("base coding F1", "coding_f1", ".4f"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="seqmamba annotate-eval",
        description="Gene-level sensitivity/precision (a call matches a reference CDS when strand and stop "
        "coordinate agree), exact-start rate and strand-aware base-level coding F1 of GFF3 gene calls.",
    )
    parser.add_argument("pred", metavar="PRED.gff3", help="gene calls (CDS lines of a GFF3 file)")
    parser.add_argument("reference", metavar="REFERENCE", help="GenBank file (.gb/.gbk/.gbff, gzip ok) or a GTF")
    parser.add_argument("--fasta", help="genome FASTA, needed when REFERENCE is a GTF")
    parser.add_argument(
        "--prodigal", action="store_true", help="also run pyrodigal on the genome (needs seqmamba[eval])"
    )
    parser.add_argument(
        "--prodigal-mode",
        choices=MODES,
        default="auto",
        help="pyrodigal mode; auto = meta for viruses and genomes under 100 kb, else single (default: auto)",
    )
    parser.add_argument("--transl-table", type=int, help="genetic code for pyrodigal (default: the annotation's)")
    parser.add_argument("--json", metavar="PATH", help="also write the metrics as JSON")
    return parser


def _rename(calls: list[CDS], sequences: list[AnnotatedSequence], path: str) -> list[CDS]:
    """Map the calls' sequence names onto the reference's ids (accepting LOCUS names and accessions)."""
    names = {alias: s.id for s in sequences for alias in s.names}
    unknown = sorted({c.seqid for c in calls} - set(names))
    if unknown:
        raise InputError(f"{path}: sequences {unknown[:5]} are not in the reference (it has {sorted(names)[:10]})")
    return [c if names[c.seqid] == c.seqid else _with_seqid(c, names[c.seqid]) for c in calls]


def _with_seqid(c: CDS, seqid: str) -> CDS:
    return CDS(seqid, c.parts, c.codon_start, c.transl_table, c.id, c.score, c.partial5, c.partial3)


def _check_lengths(declared: dict[str, int], sequences: list[AnnotatedSequence], path: str) -> None:
    for s in sequences:
        for name in s.names:
            if name in declared and declared[name] != len(s):
                raise InputError(
                    f"{path}: ##sequence-region gives {name} as {declared[name]} bp, the reference has {len(s)} bp"
                )


def format_table(columns: dict[str, Metrics]) -> str:
    """Metrics side by side, one column per caller."""
    width = max(len(label) for label, _, _ in ROWS)
    heads = list(columns)
    colw = [max(10, len(h)) for h in heads]
    lines = [" " * width + "".join(f"  {h:>{w}}" for h, w in zip(heads, colw))]
    for label, attr, fmt in ROWS:
        cells = []
        for metrics, w in zip(columns.values(), colw):
            value = getattr(metrics, attr)
            cells.append(
                f"  {'n/a':>{w}}" if isinstance(value, float) and math.isnan(value) else f"  {value:>{w}{fmt}}"
            )
        lines.append(f"{label:<{width}}" + "".join(cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        sequences = read_annotation(args.reference, args.fasta)
        calls, declared = read_gff3(args.pred)
        _check_lengths(declared, sequences, args.pred)
        calls = _rename(calls, sequences, args.pred)
        reference = [c for s in sequences for c in s.cds]
        lengths = {s.id: len(s) for s in sequences}
        columns = {"prediction": evaluate(calls, reference, lengths)}
        if args.prodigal:
            prodigal_calls, mode = run_pyrodigal(sequences, args.prodigal_mode, args.transl_table)
            columns[f"pyrodigal ({mode})"] = evaluate(prodigal_calls, reference, lengths)
    except (InputError, ImportError) as err:
        print(f"seqmamba annotate-eval: {err}", file=sys.stderr)
        return 1
    print(format_table(columns))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump({name: m.as_dict() for name, m in columns.items()}, out, indent=2)
    return 0
