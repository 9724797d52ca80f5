"""Gene calls against a reference annotation: gene-level and base-level agreement.

- A call *matches* a reference CDS when they are on the same sequence and strand and their stop
  coordinates (the 3' end, the last base of the stop codon) agree; on a circular sequence
  coordinates are taken modulo its length.
- sensitivity = matched reference CDS / reference CDS; precision = matching calls / calls.
- exact start = of the matched reference CDS, the share whose start (5' end) some call with the
  same stop also has.
- base coding F1: every (base, strand) pair is coding or not in each annotation (the union of the
  CDS parts on that strand); F1 of the calls' coding pairs against the reference's.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import asdict, dataclass

import numpy as np

from pipelines.data.errors import InputError
from pipelines.genome.annotation import CDS
from pipelines.genome.labels import coding_mask


@dataclass(frozen=True)
class Metrics:
    n_reference: int
    n_predicted: int
    matched_reference: int
    matched_predicted: int
    exact_starts: int
    coding_tp: int
    coding_reference: int
    coding_predicted: int

    @staticmethod
    def _ratio(num: int, den: int) -> float:
        return num / den if den else math.nan

    @property
    def sensitivity(self) -> float:
        return self._ratio(self.matched_reference, self.n_reference)

    @property
    def precision(self) -> float:
        return self._ratio(self.matched_predicted, self.n_predicted)

    @property
    def exact_start(self) -> float:
        return self._ratio(self.exact_starts, self.matched_reference)

    @property
    def coding_f1(self) -> float:
        return self._ratio(2 * self.coding_tp, self.coding_reference + self.coding_predicted)

    def as_dict(self) -> dict[str, float]:
        """Counts and the four rates, as plain JSON-able numbers."""
        out: dict[str, float] = asdict(self)
        for name in ("sensitivity", "precision", "exact_start", "coding_f1"):
            out[name] = getattr(self, name)
        return out


def _end_keys(calls: list[CDS], lengths: dict[str, int]) -> tuple[list[tuple], list[int]]:
    """(seqid, strand, stop) key and 5' coordinate of each call, modulo its sequence's length."""
    keys, starts = [], []
    for c in calls:
        if c.seqid not in lengths:
            raise InputError(f"CDS {c.id or '?'}: sequence {c.seqid!r} is not among {sorted(lengths)}")
        n = lengths[c.seqid]
        keys.append((c.seqid, c.strand, c.three_prime % n))
        starts.append(c.five_prime % n)
    return keys, starts


def evaluate(predicted: list[CDS], reference: list[CDS], lengths: dict[str, int]) -> Metrics:
    """Compare ``predicted`` calls with ``reference`` CDS over sequences of ``lengths`` (seqid -> bp)."""
    ref_keys, ref_starts = _end_keys(reference, lengths)
    pred_keys, pred_starts = _end_keys(predicted, lengths)
    pred_starts_by_stop: dict[tuple, set[int]] = defaultdict(set)
    for key, start in zip(pred_keys, pred_starts):
        pred_starts_by_stop[key].add(start)
    ref_stops = set(ref_keys)
    matched = [key in pred_starts_by_stop for key in ref_keys]
    exact = sum(m and start in pred_starts_by_stop[key] for key, start, m in zip(ref_keys, ref_starts, matched))

    tp = n_ref = n_pred = 0
    for seqid, n in lengths.items():
        ref_mask = coding_mask(n, [c for c in reference if c.seqid == seqid])  # (2, seqlen)
        pred_mask = coding_mask(n, [c for c in predicted if c.seqid == seqid])  # (2, seqlen)
        tp += int(np.count_nonzero(ref_mask & pred_mask))
        n_ref += int(np.count_nonzero(ref_mask))
        n_pred += int(np.count_nonzero(pred_mask))
    return Metrics(
        n_reference=len(reference),
        n_predicted=len(predicted),
        matched_reference=sum(matched),
        matched_predicted=sum(key in ref_stops for key in pred_keys),
        exact_starts=exact,
        coding_tp=tp,
        coding_reference=n_ref,
        coding_predicted=n_pred,
    )
