"""GFF3 writing and reading of CDS calls, and the per-base probability track as bedGraph.

Written GFF3: ``##gff-version 3``, one ``##sequence-region`` per sequence, then for each call a
``gene`` line (ID ``gene-<call id>``) and its ``CDS`` line(s) (one per part, all with the call's
ID, as GFF3 writes a discontinuous feature), 1-based inclusive coordinates, phase 0 on the first CDS part of a call
and the carried-over phase on later parts. A call across the origin of a circular sequence is two
parts, split at the origin. Prodigal-style attributes: ``partial`` (two digits, 5' then 3' on the
gene's strand, 1 = runs off the edge) and ``start_type`` (the start codon, or ``Edge``).

The reader accepts any GFF3 (Prodigal's, NCBI's, ours): it keeps ``CDS`` lines, groups them into
calls by ``ID`` (lines without an ID are calls on their own), orders the parts by strand, and
validates every column, naming the file and line on error.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from urllib.parse import quote, unquote

import numpy as np

from pipelines.data.errors import InputError
from pipelines.genome.annotation import CDS, _open_text

_ATTR_SAFE = " :^*$@!+?-|/.'()[]{}<>"  # characters GFF3 allows unescaped in attribute values
_DNA_COMPLEMENT = str.maketrans("ACGT", "TGCA")


def _esc(value: str) -> str:
    return quote(str(value), safe=_ATTR_SAFE)


def _esc_seqid(value: str) -> str:
    """Column 1 allows only [a-zA-Z0-9.:^*$@!+_?-|] unescaped."""
    return quote(str(value), safe=".:^*$@!+?-|")


def _phases(cds: CDS) -> list[int]:
    """GFF3 phase of each part: bases to skip from the part's 5' end to the next codon start."""
    phases, done = [], -(cds.codon_start - 1)
    for start, end, _ in cds.parts:
        phases.append((-done) % 3)
        done += end - start
    return phases


def write_gff3(
    path: str | os.PathLike,
    calls: Iterable[CDS],
    sequences: dict[str, tuple[int, bool]],
    sequence: dict[str, str] | None = None,
    source: str = "seqmamba",
) -> None:
    """Write ``calls`` to ``path`` as GFF3; ``sequences`` maps seqid -> (length, circular) in output order.

    With ``sequence`` (seqid -> text), each CDS gets its start codon in ``start_type``.
    """
    by_seq: dict[str, list[CDS]] = {seqid: [] for seqid in sequences}
    for c in calls:
        if c.seqid not in by_seq:
            raise ValueError(f"call {c.id} is on {c.seqid!r}, which is not among the sequences {list(sequences)}")
        length = sequences[c.seqid][0]
        if max(end for _, end, _ in c.parts) > length:
            raise ValueError(f"call {c.id} ends beyond {c.seqid} ({length} bp)")
        by_seq[c.seqid].append(c)
    with open(path, "w", encoding="utf-8") as out:
        out.write("##gff-version 3\n")
        for seqid, (length, _) in sequences.items():
            out.write(f"##sequence-region {_esc_seqid(seqid)} 1 {length}\n")
        for seqid, (length, circular) in sequences.items():
            region = f"ID={_esc(seqid)};Is_circular=true" if circular else f"ID={_esc(seqid)}"
            out.write(f"{_esc_seqid(seqid)}\t{source}\tregion\t1\t{length}\t.\t+\t.\t{region}\n")
            for k, c in enumerate(by_seq[seqid], start=1):
                out.write(_call_lines(c, k, source, length, sequence.get(seqid) if sequence else None))
        out.write("###\n")


def _gene_span(c: CDS, length: int) -> tuple[int, int]:
    """1-based inclusive (start, end) of the gene line; past ``length`` when the call crosses the origin."""
    lo = min(a for a, _, _ in c.parts)
    hi = max(b for _, b, _ in c.parts)
    if len({s for _, _, s in c.parts}) > 1 or len(c.parts) == 1:
        return lo + 1, hi
    # One strand, several parts: a call across the origin has its 3' part before its 5' part.
    first, last = c.parts[0], c.parts[-1]
    if c.strand == 1 and last[1] <= first[0]:
        return first[0] + 1, last[1] + length
    if c.strand == -1 and first[1] <= last[0]:
        return last[0] + 1, first[1] + length
    return lo + 1, hi


def _call_lines(c: CDS, k: int, source: str, length: int, seq: str | None) -> str:
    ident = c.id or f"{c.seqid}_{k}"
    strand = "+" if c.strand == 1 else "-"
    score = "." if c.score is None else f"{c.score:.2f}"
    attrs = f"ID={_esc(ident)};Parent=gene-{_esc(ident)};partial={int(c.partial5)}{int(c.partial3)}"
    if c.partial5:
        attrs += ";start_type=Edge"
    elif seq is not None:
        # Modulo the length: on a circular sequence a start codon may straddle the origin.
        a, n = c.five_prime, len(seq)
        if c.strand == 1:
            codon = "".join(seq[(a + i) % n] for i in range(3))
        else:
            codon = "".join(seq[(a - i) % n] for i in range(3)).translate(_DNA_COMPLEMENT)
        attrs += f";start_type={_esc(codon)}"
    if c.transl_table != 11:
        attrs += f";transl_table={c.transl_table}"
    seqid = _esc_seqid(c.seqid)
    start, end = _gene_span(c, length)
    lines = [f"{seqid}\t{source}\tgene\t{start}\t{end}\t{score}\t{strand}\t.\tID=gene-{_esc(ident)}\n"]
    for (a, b, s), phase in zip(c.parts, _phases(c)):
        lines.append(f"{seqid}\t{source}\tCDS\t{a + 1}\t{b}\t{score}\t{'+' if s == 1 else '-'}\t{phase}\t{attrs}\n")
    return "".join(lines)


def _attributes(text: str, where: str) -> dict[str, str]:
    attrs: dict[str, str] = {}
    if text.strip() in ("", "."):  # GFF3's empty column
        return attrs
    for item in text.strip().strip(";").split(";"):
        item = item.strip()
        if not item:
            continue
        if "=" not in item:
            raise InputError(f"{where}: attribute {item!r} is not key=value")
        key, value = item.split("=", 1)
        attrs[unquote(key.strip())] = unquote(value.strip())
    return attrs


def read_gff3(path: str | os.PathLike) -> tuple[list[CDS], dict[str, int]]:
    """CDS calls of a GFF3 file and the sequence lengths its ``##sequence-region`` lines declare.

    Parts of one call (same ``ID``) are put in biological order (ascending on +, descending on -);
    a part that ends past the declared length of a sequence marked ``Is_circular=true`` is split at
    the origin. The CDS's ``codon_start`` comes from the phase of its first part.
    """
    lengths: dict[str, int] = {}
    circular: set[str] = set()
    groups: dict[tuple[str, str], list[tuple]] = {}
    scores: dict[tuple[str, str], float | None] = {}
    with _open_text(path) as handle:
        for lineno, line in enumerate(handle, start=1):
            where = f"{path}: line {lineno}"
            line = line.rstrip("\r\n")
            if line.startswith("##FASTA"):
                break
            if line.startswith("##sequence-region"):
                fields = line.split()
                if len(fields) != 4 or not (fields[2].isdigit() and fields[3].isdigit()):
                    raise InputError(f"{where}: ##sequence-region needs 'seqid start end'")
                lengths[unquote(fields[1])] = int(fields[3])
                continue
            if not line.strip() or line.startswith("#"):
                continue
            cols = line.split("\t")
            if len(cols) != 9:
                raise InputError(f"{where}: expected 9 tab-separated columns, found {len(cols)}")
            seqid, _, ftype, start, end, score, strand, phase, attr_text = cols
            seqid = unquote(seqid)
            attrs = _attributes(attr_text, where)
            if ftype == "region" and attrs.get("Is_circular", "").lower() == "true":
                circular.add(seqid)
            if ftype != "CDS":
                continue
            if not (start.isdigit() and end.isdigit()) or not 1 <= int(start) <= int(end):
                raise InputError(f"{where}: start and end must be integers with 1 <= start <= end ({start}, {end})")
            if strand not in ("+", "-"):
                raise InputError(f"{where}: a CDS needs strand + or -, found {strand!r}")
            if phase not in ("0", "1", "2"):
                raise InputError(f"{where}: a CDS needs phase 0, 1 or 2, found {phase!r}")
            try:
                value = None if score == "." else float(score)
            except ValueError:
                raise InputError(f"{where}: score {score!r} is not a number or '.'") from None
            key = (seqid, attrs.get("ID") or f"{seqid}:line{lineno}")
            sign = 1 if strand == "+" else -1
            groups.setdefault(key, []).append((int(start) - 1, int(end), sign, int(phase), attrs, where))
            scores.setdefault(key, value)

    calls = []
    for (seqid, ident), rows in groups.items():
        calls.append(_make_call(seqid, ident, rows, scores[(seqid, ident)], lengths, circular))
    return calls, lengths


def _biological_order(parts: list[tuple[int, int, int]], length: int | None, circular: bool) -> list:
    """Order the parts of a one-strand CDS as the ribosome reads them.

    By coordinate (descending on -); on a circular sequence the circle is cut at the widest gap
    between parts, so a call across the origin keeps its parts before the origin first (on +).
    """
    parts = sorted(parts)
    if circular and length is not None and len(parts) > 1:
        gaps = [parts[i + 1][0] - parts[i][1] for i in range(len(parts) - 1)]
        gaps.append(parts[0][0] + length - parts[-1][1])  # the gap across the origin
        cut = int(np.argmax(gaps))
        parts = parts[cut + 1 :] + parts[: cut + 1]
    return parts if parts[0][2] == 1 else parts[::-1]


def _make_call(seqid: str, ident: str, rows: list[tuple], score, lengths, circular) -> CDS:
    length = lengths.get(seqid)
    parts = []
    for a, b, s, phase, _, where in rows:
        if length is not None and b > length:
            if seqid not in circular or b > 2 * length or a >= length:
                raise InputError(f"{where}: CDS ends at {b}, past the end of {seqid} ({length} bp)")
            # Across the origin: the phase belongs to the piece holding the 5' end.
            head, tail = (phase, -1) if s == 1 else (-1, phase)
            parts += [(a, length, s, head), (0, b - length, s, tail)]
        else:
            parts.append((a, b, s, phase))
    if len({p[2] for p in parts}) == 1:
        parts = _biological_order(parts, length, seqid in circular)
    # else: parts on both strands (trans-splicing): only the file's order can say which comes first.
    attrs = rows[0][4]
    partial = attrs.get("partial", "00")
    first_phase = max(parts[0][3], 0)
    try:
        return CDS(
            seqid,
            tuple((a, b, s) for a, b, s, _ in parts),
            codon_start=first_phase + 1,
            transl_table=int(attrs.get("transl_table", 11)),
            id=ident,
            score=score,
            partial5=partial[:1] == "1",
            partial3=partial[1:2] == "1",
        )
    except ValueError as err:
        raise InputError(f"{rows[0][5]}: {err}") from None


def write_bedgraph(path: str | os.PathLike, tracks: dict[str, np.ndarray], decimals: int = 3) -> None:
    """Per-base coding probability, ``tracks``: seqid -> (seqlen, 2) (forward, reverse strand).

    One bedGraph track per strand (``coding_plus``, ``coding_minus``), runs of equal rounded values
    merged into one interval; coordinates 0-based half-open as bedGraph specifies.
    """
    with open(path, "w", encoding="utf-8") as out:
        for strand_index, name in enumerate(("coding_plus", "coding_minus")):
            out.write(f'track type=bedGraph name="{name}" description="P(coding), {name[7:]} strand"\n')
            for seqid, values in tracks.items():
                values = np.asarray(values)
                if values.ndim != 2 or values.shape[1] != 2:
                    raise ValueError(f"track {seqid}: expected shape (seqlen, 2), got {values.shape}")
                v = np.round(values[:, strand_index].astype(np.float64), decimals)  # (seqlen,)
                if v.size == 0:
                    continue
                breaks = np.flatnonzero(v[1:] != v[:-1]) + 1
                starts = np.concatenate([[0], breaks])
                ends = np.concatenate([breaks, [v.size]])
                out.writelines(f"{seqid}\t{a}\t{b}\t{v[a]:.{decimals}f}\n" for a, b in zip(starts, ends))
