"""Reading DNA sequences: FASTA, FASTQ or an ``id,sequence,label`` table, plain or gzip, streamed.

One entry point, :func:`read_sequences`, used by training, scoring and the app alike. It yields one
:class:`SequenceRecord` at a time (never the whole file in memory) and refuses bad input with an
:class:`~pipelines.data.errors.InputError` naming the file and the record or line.

Labels come from ``label=NAME`` in a FASTA/FASTQ header, from the table's label column, or from the
file name in a per-class layout (a folder holding ``positive.fa.gz``, ``negative.fa.gz``, ...).
"""

from __future__ import annotations

import csv
import logging
import os
import re
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import NamedTuple

from Bio.SeqIO.FastaIO import SimpleFastaParser
from Bio.SeqIO.QualityIO import FastqGeneralIterator

from pipelines.data.alphabet import BaseCounts, check_sequence, tokenize
from pipelines.data.errors import InputError
from pipelines.data.sources import DEFAULT_MAX_BYTES, Source, open_text, source_name

__all__ = ["SequenceRecord", "read_sequences", "sniff_format", "tokenize", "DEFAULT_MAX_LENGTH"]

log = logging.getLogger(__name__)

DEFAULT_MAX_LENGTH = 300_000_000  # bases per record: longer than any human chromosome
FASTA_SUFFIXES = (".fa", ".fasta", ".fna", ".fas", ".fq", ".fastq", ".csv", ".tsv")
_LABEL = re.compile(r"(?:^|\s)label=(\S+)")
_TABLE_COLUMNS = {"id": ("id", "name"), "sequence": ("sequence", "seq"), "label": ("label", "class", "target")}


class SequenceRecord(NamedTuple):
    """One sequence: its id (first word of the header), the text as in the file, the label or None."""

    id: str
    seq: str
    label: str | None = None


def sniff_format(head: str, name: str) -> str:
    """``"fasta"``, ``"fastq"`` or ``"table"`` from the start of a text file; else :class:`InputError`."""
    text = head.lstrip()
    first_line = text.split("\n", 1)[0]
    if text.startswith(">"):
        return "fasta"
    if text.startswith("@"):
        return "fastq"
    if "," in first_line or "\t" in first_line:
        return "table"
    shown = first_line[:40] + ("..." if len(first_line) > 40 else "")
    raise InputError(f"not a FASTA or FASTQ file: the first line {shown!r} starts with neither '>' nor '@'",
                     file=name, line=1 + head[: len(head) - len(text)].count("\n"))


class _LineGuard:
    """Iterates the lines of a text stream for Biopython's parsers, remembering where each record
    starts (for messages) and stopping a record that grows past the length limit before it fills
    memory: one gzip-bombed record of a billion bases is refused after ``limit`` characters."""

    def __init__(self, text, marker: str, max_length: int, name: str):
        self._text, self._marker, self._name, self._max_length = text, marker, name, max_length
        # Characters per record, counting line breaks (and for FASTQ the quality line) generously.
        self._limit = 2 * max_length + 65536 if marker == "@" else max_length + max_length // 50 + 65536
        self._header = ""
        self.lineno = 0
        self.starts: deque[int] = deque()  # line numbers of record headers not yet yielded
        self._run = 0

    def read(self, n: int = -1) -> str:  # Biopython checks the mode with read(0)
        return "" if n == 0 else self._text.read(n)

    def readline(self) -> str:
        return next(self, "")

    def __iter__(self):
        return self

    def __next__(self) -> str:
        line = next(self._text)
        self.lineno += 1
        if line.startswith(self._marker):
            self.starts.append(self.lineno)
            self._header = line
            self._run = 0
        else:
            self._run += len(line)
            if self._run > self._limit:
                record_id = (self._header[1:].split(None, 1) or [""])[0]
                raise InputError(f"sequence is longer than the limit of {self._max_length:,} bases", file=self._name,
                                 record=repr(record_id), line=self.starts[-1] if self.starts else self.lineno)
        return line


def _parse_header(title: str, where: dict) -> tuple[str, str | None]:
    record_id = title.split(None, 1)[0] if title.strip() else ""
    if not record_id:
        raise InputError("record has an empty header (no id after '>' or '@')", **where)
    match = _LABEL.search(title)
    return record_id, (match.group(1) if match else None)


def _records_from_reads(text, fmt: str, name: str, max_length: int) -> Iterator[tuple[str, str, str | None, dict]]:
    """(id, seq, label, where) from FASTA or FASTQ text; ``where`` locates the record for messages."""
    guard = _LineGuard(text, ">" if fmt == "fasta" else "@", max_length, name)
    parser = SimpleFastaParser(guard) if fmt == "fasta" else FastqGeneralIterator(guard)
    number = 0
    while True:
        try:
            item = next(parser)
        except StopIteration:
            return
        except ValueError as exc:
            if isinstance(exc, (InputError, UnicodeDecodeError)):
                raise
            raise InputError(f"malformed FASTQ record: {exc}", file=name, record=f"#{number + 1}",
                             line=guard.starts[0] if guard.starts else guard.lineno) from exc
        number += 1
        where = {"file": name, "record": f"#{number}", "line": guard.starts.popleft() if guard.starts else None}
        record_id, label = _parse_header(item[0], where)
        where["record"] = f"{record_id!r} (#{number})"
        yield record_id, item[1], label, where


def _table_columns(header: list[str], name: str) -> dict[str, int | None]:
    lowered = [h.strip().lower() for h in header]
    found = {key: next((lowered.index(a) for a in aliases if a in lowered), None)
             for key, aliases in _TABLE_COLUMNS.items()}
    if found["sequence"] is None:
        raise InputError(f"not FASTA/FASTQ, and as a table it has no 'sequence' column (columns: "
                         f"{', '.join(header[:8])}); give FASTA, FASTQ or an id,sequence,label table",
                         file=name, line=1)
    return found


def _records_from_table(text, head: str, name: str) -> Iterator[tuple[str, str, str | None, dict]]:
    delimiter = "\t" if "\t" in head.lstrip().split("\n", 1)[0] else ","
    reader = csv.reader(text, delimiter=delimiter)
    header = next(reader)
    cols = _table_columns(header, name)
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        line = reader.line_num
        where = {"file": name, "line": line}
        if len(row) != len(header):
            raise InputError(f"has {len(row)} fields, the header has {len(header)}", **where)
        record_id = row[cols["id"]].strip() if cols["id"] is not None else f"row{line - 1}"
        label = row[cols["label"]].strip() if cols["label"] is not None else None
        if not record_id:
            raise InputError("empty id", **where, column=header[cols["id"]])
        where["record"] = repr(record_id)
        yield record_id, row[cols["sequence"]].strip(), label or None, where


def _read_one(source: Source, name: str, max_bytes: int, max_length: int, file_label: str | None):
    with open_text(source, max_bytes=max_bytes, name=name) as (text, head):
        fmt = sniff_format(head, name)
        rows = _records_from_table(text, head, name) if fmt == "table" else _records_from_reads(
            text, fmt, name, max_length)
        for record_id, seq, label, where in rows:
            yield record_id, seq, (file_label if file_label is not None else label), where


def _class_files(folder: str) -> dict[str, str]:
    """Per-class layout: each FASTA-like file in ``folder`` holds one class, named by its stem."""
    files = {}
    for entry in sorted(os.listdir(folder)):
        stem = entry[:-3] if entry.endswith(".gz") else entry
        root, ext = os.path.splitext(stem)
        if ext.lower() in FASTA_SUFFIXES and os.path.isfile(os.path.join(folder, entry)):
            if root in files:
                raise InputError(f"two files for class {root!r}", file=folder)
            files[root] = os.path.join(folder, entry)
    if not files:
        raise InputError(f"folder holds no sequence files ({', '.join(FASTA_SUFFIXES)}, optionally .gz)",
                         file=folder)
    return files


def read_sequences(
    source: Source | Mapping[str, Source],
    *,
    name: str | None = None,
    classes: Sequence[str] | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_length: int = DEFAULT_MAX_LENGTH,
    check_duplicates: bool = True,
) -> Iterator[SequenceRecord]:
    """Stream the records of a FASTA/FASTQ file or ``id,sequence,label`` CSV/TSV table.

    ``source`` is a path, bytes, a binary stream (an upload), a folder in the per-class layout, or a
    mapping ``{label: source}``. gzip is recognised from the content. Each record is checked: a
    non-empty id and sequence, IUPAC nucleotide letters only ("looks like protein" otherwise), at
    most ``max_length`` bases, a unique id; with ``classes``, a label among them. The file as a whole
    must decompress to at most ``max_bytes``. ``name`` replaces the path in messages (for uploads).

    Sequences are yielded as written (case kept, for soft masking); use :func:`tokenize` on them.
    """
    display = source_name(source, name) if not isinstance(source, Mapping) else "input"
    if isinstance(source, (str, os.PathLike)) and os.path.isdir(source):
        source = _class_files(os.fspath(source))
    parts: Iterable[tuple[Source, str, str | None]]
    if isinstance(source, Mapping):
        parts = [(src, source_name(src), str(label)) for label, src in source.items()]
    else:
        parts = [(source, source_name(source, name), None)]
    allowed = None if classes is None else set(classes)
    seen: set[str] = set()
    total = BaseCounts(0)
    ambiguous_records = 0
    for src, label_name, file_label in parts:
        count = 0
        for record_id, seq, label, where in _read_one(src, label_name, max_bytes, max_length, file_label):
            count += 1
            if not seq:
                raise InputError("empty sequence", **where)
            if len(seq) > max_length:
                raise InputError(f"sequence of {len(seq):,} bases is longer than the limit of {max_length:,}", **where)
            try:
                counts = check_sequence(seq)
            except InputError as exc:
                raise InputError(exc.reason, **where) from None
            if check_duplicates:
                if record_id in seen:
                    raise InputError(f"duplicate record id {record_id!r}", **where)
                seen.add(record_id)
            if allowed is not None:
                if label is None:
                    raise InputError(f"no label (expected 'label=' in the header, one of {sorted(allowed)})", **where)
                if label not in allowed:
                    known = ", ".join(sorted(allowed))
                    raise InputError(f"label {label!r} is not one of the model's classes ({known})", **where)
            total = total + counts
            ambiguous_records += counts.ambiguous > 0
            yield SequenceRecord(record_id, seq, label)
        if count == 0:
            raise InputError("no sequence records found", file=label_name)
    if total.rna:
        log.warning("%s: %d U bases (RNA) read as T", display, total.rna)
    if total.ambiguous:
        log.warning("%s: %d IUPAC ambiguity codes read as N (in %d records)", display, total.ambiguous,
                    ambiguous_records)
