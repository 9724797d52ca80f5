"""DNA text -> token ids, with the checks a bioinformatician expects.

A/C/G/T/N map to the vocabulary's ids (``seqmodels.vocab``). Lower case (soft-masked repeats) is
read as upper case and can be kept as a separate mask channel. The other IUPAC nucleotide codes
(R, Y, S, W, K, M, B, D, H, V) become N and are counted; U (RNA) is read as T and counted.
Anything else is refused: amino-acid letters ("looks like protein"), alignment gaps, other bytes.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from pipelines.data.errors import InputError
from seqmodels.vocab import encode

# Byte classes; the counts of each class summarise a sequence in one pass.
_ACGT, _ACGT_LOWER, _N, _N_LOWER, _IUPAC, _IUPAC_LOWER, _U, _U_LOWER, _PROTEIN, _GAP, _OTHER = range(11)
_N_CLASSES = 11
IUPAC_AMBIGUOUS = "RYSWKMBDHV"
# Letters that are amino acids (or their wildcards) but no IUPAC nucleotide code.
PROTEIN_ONLY = "EFIJLOPQXZ*"
GAPS = "-."

_CLASS = np.full(256, _OTHER, dtype=np.uint8)
for _chars, _upper, _lower in (("ACGT", _ACGT, _ACGT_LOWER), ("N", _N, _N_LOWER),
                               (IUPAC_AMBIGUOUS, _IUPAC, _IUPAC_LOWER), ("U", _U, _U_LOWER)):
    for _ch in _chars:
        _CLASS[ord(_ch)] = _upper
        _CLASS[ord(_ch.lower())] = _lower
for _ch in PROTEIN_ONLY:
    _CLASS[ord(_ch)] = _PROTEIN
    _CLASS[ord(_ch.lower())] = _PROTEIN
for _ch in GAPS:
    _CLASS[ord(_ch)] = _GAP

# Byte -> canonical upper-case base: lower -> upper, ambiguity codes -> N, U -> T.
_NORMALISE = bytearray(range(256))
for _ch in "ACGTN":
    _NORMALISE[ord(_ch.lower())] = ord(_ch)
for _ch in IUPAC_AMBIGUOUS:
    _NORMALISE[ord(_ch)] = _NORMALISE[ord(_ch.lower())] = ord("N")
_NORMALISE[ord("U")] = _NORMALISE[ord("u")] = ord("T")
_NORMALISE = bytes(_NORMALISE)

# Byte -> token id in one lookup (-1 for bytes outside the alphabet), consistent with vocab.encode.
_TOKEN = encode(bytes(range(256)).translate(_NORMALISE))
_TOKEN[_CLASS >= _PROTEIN] = -1

_IS_LOWER = np.zeros(256, dtype=bool)
_IS_LOWER[[ord(c) for c in "acgtnryswkmbdhvu"]] = True


class BaseCounts(NamedTuple):
    """What tokenising a sequence changed: lower-case bases, ambiguity codes read as N, U read as T."""

    length: int
    n: int = 0  # N or n in the input
    soft_masked: int = 0  # lower-case letters
    ambiguous: int = 0  # IUPAC codes other than N, now N
    rna: int = 0  # U or u, now T

    def __add__(self, other: BaseCounts) -> BaseCounts:  # field-wise sum, not tuple concatenation
        return BaseCounts(*(a + b for a, b in zip(self, other)))


def _as_bytes(seq: str | bytes) -> bytes:
    return seq.encode("utf-8") if isinstance(seq, str) else bytes(seq)


def _describe_invalid(raw: bytes, hist: np.ndarray) -> str:
    """The message for a sequence with characters outside the IUPAC nucleotide alphabet."""
    letters = int(hist[:_GAP].sum())
    if hist[_PROTEIN]:
        found = sorted({chr(b).upper() for b in raw if _CLASS[b] == _PROTEIN})
        share = hist[_PROTEIN] / max(letters, 1)
        return (f"looks like protein, not DNA: {share:.0%} of its letters ({', '.join(found)}) are amino-acid "
                f"codes outside the IUPAC nucleotide alphabet")
    arr = np.frombuffer(raw, dtype=np.uint8)
    first = int(np.flatnonzero(_CLASS[arr] >= _GAP)[0])
    if hist[_GAP]:
        return f"contains alignment gaps ('-' or '.', first at position {first + 1}); give unaligned sequences"
    bad = raw[first:first + 4].decode("utf-8", errors="replace")[:1]
    return (f"contains {bad!r} at position {first + 1}, which is not an IUPAC nucleotide code "
            f"(A C G T U N R Y S W K M B D H V)")


def check_sequence(seq: str | bytes) -> BaseCounts:
    """Count what tokenising ``seq`` will change; raise :class:`InputError` (no location: the caller
    adds file and record) if it holds anything but IUPAC nucleotide codes."""
    raw = _as_bytes(seq)
    # Fast path: plain upper-case ACGT is deleted in C; only the rest is classified.
    rest = raw.translate(None, b"ACGT")
    if not rest:
        return BaseCounts(len(raw))
    hist = np.bincount(_CLASS[np.frombuffer(rest, dtype=np.uint8)], minlength=_N_CLASSES)
    if hist[_PROTEIN:].any():
        raise InputError(_describe_invalid(raw, np.bincount(_CLASS[np.frombuffer(raw, dtype=np.uint8)],
                                                            minlength=_N_CLASSES)))
    return BaseCounts(
        length=len(raw),
        n=int(hist[_N] + hist[_N_LOWER]),
        soft_masked=int(hist[_ACGT_LOWER] + hist[_N_LOWER] + hist[_IUPAC_LOWER] + hist[_U_LOWER]),
        ambiguous=int(hist[_IUPAC] + hist[_IUPAC_LOWER]),
        rna=int(hist[_U] + hist[_U_LOWER]),
    )


def tokenize(seq: str | bytes, *, return_mask: bool = False, return_counts: bool = False):
    """DNA text -> token ids ``(L,) int8`` (``seqmodels.vocab`` ids: A=2, C=3, G=4, T=5, N=6).

    With ``return_mask`` also the soft-mask channel ``(L,) bool`` (True where the input was lower
    case); with ``return_counts`` also :class:`BaseCounts`. Returns the tokens alone, or a tuple
    ``(tokens[, mask][, counts])`` in that order, like ``numpy.unique``. Raises
    :class:`InputError` for characters outside the IUPAC nucleotide alphabet.
    """
    raw = _as_bytes(seq)
    codes = np.frombuffer(raw, dtype=np.uint8)
    tokens = _TOKEN[codes]  # (L,) int8
    if tokens.size and tokens.min() < 0:
        check_sequence(raw)  # raises with the right message
    if not (return_mask or return_counts):
        return tokens
    out = [tokens]
    if return_mask:
        out.append(_IS_LOWER[codes])
    if return_counts:
        out.append(check_sequence(raw))
    return tuple(out)
