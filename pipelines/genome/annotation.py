"""Annotated sequences: protein-coding CDS read from GenBank (Biopython) or GTF + FASTA (pandas).

Coordinates everywhere in this package are 0-based, half-open, on the forward strand. A CDS is a
tuple of parts in *biological* order (the order a ribosome reads them), each part with its own
strand, so ribosomal slippage, introns, trans-splicing across strands and genes crossing the origin
of a circular sequence are all "a CDS with several parts".
"""

from __future__ import annotations

import gzip
import io
import os
from collections import Counter
from dataclasses import dataclass, field

import pandas as pd
from Bio import SeqIO

from pipelines.data.errors import InputError

PSEUDO_QUALIFIERS = ("pseudo", "pseudogene")
GTF_COLUMNS = ("seqid", "source", "type", "start", "end", "score", "strand", "frame", "attributes")


@dataclass(frozen=True)
class CDS:
    """One protein-coding sequence (reference annotation or gene call).

    ``parts``: ``(start, end, strand)`` triples, 0-based half-open forward coordinates, strand +1/-1,
    in biological order. ``codon_start`` is GenBank's /codon_start (1 = the first base starts a codon).
    ``partial5`` / ``partial3``: the CDS runs off the sequence at its start / stop end (gene calls).
    """

    seqid: str
    parts: tuple[tuple[int, int, int], ...]
    codon_start: int = 1
    transl_table: int = 11
    id: str = ""
    score: float | None = None
    partial5: bool = False
    partial3: bool = False

    def __post_init__(self):
        if not self.parts:
            raise ValueError(f"CDS {self.id or '?'} on {self.seqid}: no parts")
        for start, end, strand in self.parts:
            if not (0 <= start < end) or strand not in (1, -1):
                raise ValueError(f"CDS {self.id or '?'} on {self.seqid}: bad part ({start}, {end}, {strand})")
        if self.codon_start not in (1, 2, 3):
            raise ValueError(f"CDS {self.id or '?'} on {self.seqid}: codon_start {self.codon_start} not in 1..3")

    @property
    def strand(self) -> int:
        """The strand of the stop codon (the last part): the strand the gene is counted on."""
        return self.parts[-1][2]

    @property
    def five_prime(self) -> int:
        """0-based index of the CDS's first base (its start codon when complete)."""
        start, end, strand = self.parts[0]
        return start if strand == 1 else end - 1

    @property
    def three_prime(self) -> int:
        """0-based index of the CDS's last base (the last base of its stop codon when complete)."""
        start, end, strand = self.parts[-1]
        return end - 1 if strand == 1 else start

    @property
    def length(self) -> int:
        return sum(end - start for start, end, _ in self.parts)


@dataclass
class AnnotatedSequence:
    """One sequence (chromosome, plasmid, phage genome) with its protein-coding CDS."""

    id: str
    seq: str  # upper case
    circular: bool = False
    cds: list[CDS] = field(default_factory=list)
    transl_table: int = 11
    is_virus: bool = False
    aliases: tuple[str, ...] = ()  # other names the sequence goes by (LOCUS name, accession)

    def __len__(self) -> int:
        return len(self.seq)

    @property
    def names(self) -> tuple[str, ...]:
        return (self.id, *self.aliases)


def _open_text(path: str | os.PathLike):
    """Open plain or gzip text, recognising gzip by its magic bytes rather than the file name."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError(f"{path}: no such file")
    with open(path, "rb") as fh:
        magic = fh.read(2)
    if magic == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def _int_qualifier(feature, key: str, default: int, where: str) -> int:
    values = feature.qualifiers.get(key)
    if not values:
        return default
    try:
        return int(values[0])
    except ValueError:
        raise InputError(f"{where}: /{key}={values[0]!r} is not an integer") from None


def _genbank_cds(feature, seqid: str, default_table: int, where: str) -> CDS:
    parts = []
    for part in feature.location.parts:
        if part.strand not in (1, -1):
            raise InputError(f"{where}: CDS part {part} has no strand")
        parts.append((int(part.start), int(part.end), int(part.strand)))
    ident = next((feature.qualifiers[k][0] for k in ("locus_tag", "protein_id", "gene") if k in feature.qualifiers), "")
    try:
        return CDS(
            seqid=seqid,
            parts=tuple(parts),
            codon_start=_int_qualifier(feature, "codon_start", 1, where),
            transl_table=_int_qualifier(feature, "transl_table", default_table, where),
            id=ident,
        )
    except ValueError as err:
        raise InputError(f"{where}: {err}") from None


def read_genbank(path: str | os.PathLike, default_table: int = 11) -> list[AnnotatedSequence]:
    """Every record of a GenBank flat file (plain or gzip) with its non-pseudo CDS.

    CDS carrying /pseudo or /pseudogene are left out. A CDS without /transl_table gets
    ``default_table`` (INSDC's own default is 1, but prokaryotic records that omit it mean 11);
    the sequence's ``transl_table`` is the most common one among its CDS.
    """
    out = []
    with _open_text(path) as handle:
        try:
            records = list(SeqIO.parse(handle, "genbank"))
        except ValueError as err:
            raise InputError(f"{path}: not a readable GenBank file ({err})") from None
    if not records:
        raise InputError(f"{path}: no GenBank record found")
    for rec in records:
        seq = str(rec.seq).upper()
        cds = []
        for feature in rec.features:
            if feature.type != "CDS" or any(q in feature.qualifiers for q in PSEUDO_QUALIFIERS):
                continue
            where = f"{path}: record {rec.id}, CDS at {feature.location}"
            cds.append(_genbank_cds(feature, rec.id, default_table, where))
            if max(end for _, end, _ in cds[-1].parts) > len(seq):
                raise InputError(f"{where}: lies beyond the sequence end ({len(seq)} bp)")
        tables = Counter(c.transl_table for c in cds)
        taxonomy = rec.annotations.get("taxonomy") or [""]
        aliases = tuple(dict.fromkeys(a for a in (rec.name, rec.id.split(".")[0]) if a and a != rec.id))
        out.append(
            AnnotatedSequence(
                id=rec.id,
                seq=seq,
                circular=rec.annotations.get("topology", "linear") == "circular",
                cds=cds,
                transl_table=tables.most_common(1)[0][0] if tables else default_table,
                is_virus=taxonomy[0] == "Viruses" or rec.annotations.get("data_file_division") in ("PHG", "VRL"),
                aliases=aliases,
            )
        )
    return out


def read_fasta(path: str | os.PathLike) -> dict[str, str]:
    """FASTA (plain or gzip) -> {first word of the header: upper-case sequence}."""
    with _open_text(path) as handle:
        seqs = {rec.id: str(rec.seq).upper() for rec in SeqIO.parse(handle, "fasta")}
    if not seqs:
        raise InputError(f"{path}: no FASTA record found")
    return seqs


def _gtf_attribute(attributes: pd.Series, key: str) -> pd.Series:
    return attributes.str.extract(rf'(?:^|;)\s*{key} "([^"]*)"', expand=False)


def read_gtf(
    gtf_path: str | os.PathLike,
    fasta_path: str | os.PathLike,
    default_table: int = 1,
    transl_tables: dict[str, int] | None = None,
    circular: tuple[str, ...] = (),
) -> list[AnnotatedSequence]:
    """Protein-coding CDS from a GTF (Ensembl style) over the sequences of a FASTA.

    A transcript's ``CDS`` lines plus its ``stop_codon`` lines (GTF keeps the stop codon out of
    ``CDS``) make one CDS; the GTF frame of its first part gives ``codon_start``. Transcripts whose
    ``transcript_biotype`` is not ``protein_coding`` are skipped. ``transl_tables`` maps sequence
    names to their genetic code (default: ``Mito`` -> 3, yeast mitochondria), others get
    ``default_table``.
    """
    transl_tables = {"Mito": 3} if transl_tables is None else transl_tables
    seqs = read_fasta(fasta_path)
    with _open_text(gtf_path) as handle:
        try:
            df = pd.read_csv(handle, sep="\t", comment="#", header=None, names=GTF_COLUMNS, dtype=str)
        except (pd.errors.ParserError, ValueError) as err:
            raise InputError(f"{gtf_path}: not a readable GTF file ({err})") from None
    df = df[df["type"].isin(["CDS", "stop_codon"])].copy()
    for col in ("start", "end"):
        values = pd.to_numeric(df[col], errors="coerce")
        if values.isna().any():
            row = df.index[values.isna()][0]
            raise InputError(f"{gtf_path}: data row {row + 1}: {col} {df.at[row, col]!r} is not an integer")
        df[col] = values.astype("int64")
    bad_strand = ~df["strand"].isin(["+", "-"])
    if bad_strand.any():
        raise InputError(f"{gtf_path}: data row {df.index[bad_strand][0] + 1}: CDS strand must be + or -")
    df["transcript_id"] = _gtf_attribute(df["attributes"], "transcript_id")
    biotype = _gtf_attribute(df["attributes"], "transcript_biotype")
    df = df[biotype.isna() | (biotype == "protein_coding")]
    if df["transcript_id"].isna().any():
        raise InputError(f"{gtf_path}: data row {df.index[df['transcript_id'].isna()][0] + 1}: no transcript_id")
    unknown = sorted(set(df["seqid"]) - set(seqs))
    if unknown:
        raise InputError(f"{gtf_path}: sequences {unknown[:5]} are not in {fasta_path}")

    by_seq: dict[str, list[CDS]] = {name: [] for name in seqs}
    for (seqid, tid), rows in df.groupby(["seqid", "transcript_id"], sort=False):
        strand = 1 if rows["strand"].iloc[0] == "+" else -1
        rows = rows.sort_values("start", ascending=strand == 1)
        first_frame = rows.loc[rows["type"] == "CDS", "frame"]
        frame = int(first_frame.iloc[0]) if len(first_frame) and first_frame.iloc[0] in ("0", "1", "2") else 0
        parts: list[tuple[int, int, int]] = []
        for start, end in zip(rows["start"], rows["end"]):
            lo, hi = int(start) - 1, int(end)
            if hi > len(seqs[seqid]) or lo < 0 or lo >= hi:
                raise InputError(f"{gtf_path}: transcript {tid}: {start}..{end} is not within {seqid}")
            prev = parts[-1] if parts else None
            # A stop_codon line continues the CDS line before it: merge touching parts.
            if prev and strand == 1 and prev[1] == lo:
                parts[-1] = (prev[0], hi, strand)
            elif prev and strand == -1 and prev[0] == hi:
                parts[-1] = (lo, prev[1], strand)
            else:
                parts.append((lo, hi, strand))
        table = transl_tables.get(seqid, default_table)
        by_seq[seqid].append(CDS(seqid, tuple(parts), codon_start=frame + 1, transl_table=table, id=tid))
    return [
        AnnotatedSequence(
            id=name,
            seq=seq,
            circular=name in circular,
            cds=by_seq[name],
            transl_table=transl_tables.get(name, default_table),
        )
        for name, seq in seqs.items()
    ]


def read_annotation(path: str | os.PathLike, fasta: str | os.PathLike | None = None) -> list[AnnotatedSequence]:
    """GenBank file, or GTF file + ``fasta``, chosen by the file name (``.gtf`` / ``.gtf.gz`` -> GTF)."""
    name = os.fspath(path).lower().removesuffix(".gz")
    if name.endswith((".gtf", ".gff2")):
        if fasta is None:
            raise InputError(f"{path}: a GTF annotation needs its genome FASTA as well")
        return read_gtf(path, fasta)
    return read_genbank(path)
