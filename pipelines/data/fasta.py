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

from pipelines.data.alphabet import check_sequence, tokenize
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
    """The lines of a text stream for Biopython's parsers. It remembers where each record starts
    (for messages) and stops a record that grows past the length limit before it fills memory: a
    gzip-bombed record of a billion bases is refused after about ``max_length`` characters."""

    def __init__(self, text, marker: str, max_length: int, name: str):
        self.starts: deque[int] = deque()  # line numbers of record headers not yet yielded
        self._lines = self._guarded(text, marker, max_length, name)

    def _guarded(self, text, marker: str, max_length: int, name: str) -> Iterator[str]:
        # Characters per record, counting line breaks (and for FASTQ the quality lines) generously.
        limit = 2 * max_length + 65536 if marker == "@" else max_length + max_length // 50 + 65536
        run, header, starts = 0, "", self.starts
        for lineno, line in enumerate(text, 1):  # a generator: the per-line cost is what Biopython pays anyway
            if line[:1] == marker:
                starts.append(lineno)
                header, run = line, 0
            else:
                run += len(line)
                if run > limit:
                    record_id = (header[1:].split(None, 1) or [""])[0]
                    raise InputError(f"sequence is longer than the limit of {max_length:,} bases", file=name,
                                     record=repr(record_id), line=starts[-1] if starts else lineno)
            yield line

    def read(self, n: int = -1) -> str:  # Biopython checks the mode with read(0)
        if n != 0:
            raise NotImplementedError("read line by line")
        return ""

    def readline(self) -> str:
        return next(self._lines, "")

    def __iter__(self) -> Iterator[str]:
        return self._lines


def _where(file: str, number: int | None, record_id: str | None, line: int | None) -> dict:
    """Keyword arguments of :class:`InputError` locating a record."""
    if record_id is None:
        record = None if number is None else f"#{number}"
    else:
        record = repr(record_id) if number is None else f"{record_id!r} (#{number})"
    return {"file": file, "record": record, "line": line}


def _records_from_reads(text, fmt: str, name: str, max_length: int) -> Iterator[tuple]:
    """``(id, seq, label, (number, line))`` from FASTA or FASTQ text; the last part locates the record."""
    guard = _LineGuard(text, ">" if fmt == "fasta" else "@", max_length, name)
    parser = SimpleFastaParser(guard) if fmt == "fasta" else FastqGeneralIterator(guard)
    starts = guard.starts
    number = 0
    while True:
        try:
            item = next(parser)
        except StopIteration:
            return
        except ValueError as exc:
            if isinstance(exc, (InputError, UnicodeDecodeError)):
                raise
            raise InputError(f"malformed FASTQ record: {exc}",
                             **_where(name, number + 1, None, starts[0] if starts else None)) from exc
        number += 1
        line = starts.popleft() if starts else None
        title = item[0]
        record_id = title.split(None, 1)[0] if title.strip() else ""
        if not record_id:
            raise InputError("record has an empty header (no id after '>' or '@')", **_where(name, number, None, line))
        match = _LABEL.search(title) if "label=" in title else None
        yield record_id, item[1], (match.group(1) if match else None), (number, line)


def _table_columns(header: list[str], name: str) -> dict[str, int | None]:
    lowered = [h.strip().lower() for h in header]
    found = {key: next((lowered.index(a) for a in aliases if a in lowered), None)
             for key, aliases in _TABLE_COLUMNS.items()}
    if found["sequence"] is None:
        raise InputError(f"not FASTA/FASTQ, and as a table it has no 'sequence' column (columns: "
                         f"{', '.join(header[:8])}); give FASTA, FASTQ or an id,sequence,label table",
                         file=name, line=1)
    return found


def _records_from_table(text, head: str, name: str) -> Iterator[tuple]:
    delimiter = "\t" if "\t" in head.lstrip().split("\n", 1)[0] else ","
    reader = csv.reader(text, delimiter=delimiter)
    header = next(reader)
    cols = _table_columns(header, name)
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        line = reader.line_num
        if len(row) != len(header):
            raise InputError(f"has {len(row)} fields, the header has {len(header)}", file=name, line=line)
        record_id = row[cols["id"]].strip() if cols["id"] is not None else f"row{line - 1}"
        label = row[cols["label"]].strip() if cols["label"] is not None else None
        if not record_id:
            raise InputError("empty id", file=name, line=line, column=header[cols["id"]])
        yield record_id, row[cols["sequence"]].strip(), label or None, (None, line)


def _read_one(source: Source, name: str, max_bytes: int, max_length: int, file_label: str | None):
    with open_text(source, max_bytes=max_bytes, name=name) as (text, head):
        fmt = sniff_format(head, name)
        rows = _records_from_table(text, head, name) if fmt == "table" else _records_from_reads(
            text, fmt, name, max_length)
        for record_id, seq, label, loc in rows:
            yield record_id, seq, (file_label if file_label is not None else label), loc


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
    rna = ambiguous = ambiguous_records = 0
    for src, label_name, file_label in parts:
        count = 0
        for record_id, seq, label, (number, line) in _read_one(src, label_name, max_bytes, max_length, file_label):
            count += 1
            if not seq:
                raise InputError("empty sequence", **_where(label_name, number, record_id, line))
            if len(seq) > max_length:
                raise InputError(f"sequence of {len(seq):,} bases is longer than the limit of {max_length:,}",
                                 **_where(label_name, number, record_id, line))
            try:
                counts = check_sequence(seq)
            except InputError as exc:
                raise InputError(exc.reason, **_where(label_name, number, record_id, line)) from None
            if check_duplicates:
                if record_id in seen:
                    raise InputError(f"duplicate record id {record_id!r}",
                                     **_where(label_name, number, record_id, line))
                seen.add(record_id)
            if allowed is not None and label not in allowed:
                known = ", ".join(sorted(allowed))
                why = (f"no label (expected 'label=NAME' in the header, one of {known})" if label is None
                       else f"label {label!r} is not one of the model's classes ({known})")
                raise InputError(why, **_where(label_name, number, record_id, line))
            if counts.rna or counts.ambiguous:
                rna, ambiguous, ambiguous_records = rna + counts.rna, ambiguous + counts.ambiguous, \
                    ambiguous_records + (counts.ambiguous > 0)
            yield SequenceRecord(record_id, seq, label)
        if count == 0:
            raise InputError("no sequence records found", file=label_name)
    if rna:
        log.warning("%s: %d U bases (RNA) read as T", display, rna)
    if ambiguous:
        log.warning("%s: %d IUPAC ambiguity codes read as N (in %d records)", display, ambiguous, ambiguous_records)
