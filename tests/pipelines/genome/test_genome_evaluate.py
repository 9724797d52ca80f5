"""Gene-level and base-level metrics on hand-computed cases."""

import math

import pytest

from pipelines.data.errors import InputError
from pipelines.genome.annotation import CDS
from pipelines.genome.evaluate import evaluate

REFERENCE = [
    CDS("s", ((0, 30, 1),), id="R1"),  # stop at 29, start 0
    CDS("s", ((35, 50, -1),), id="R2"),  # stop at 35, start 49
    CDS("s", ((10, 19, 1),), id="R3"),  # stop at 18, start 10
]
PREDICTED = [
    CDS("s", ((0, 30, 1),), id="P1"),  # R1 exactly
    CDS("s", ((35, 47, -1),), id="P2"),  # R2's stop, another start (46)
    CDS("s", ((10, 19, -1),), id="P3"),  # R3's coordinates on the wrong strand: no match
    CDS("s", ((40, 46, 1),), id="P4"),  # nothing there
]


def test_hand_computed_case():
    m = evaluate(PREDICTED, REFERENCE, {"s": 50})
    assert (m.n_reference, m.n_predicted, m.matched_reference, m.matched_predicted, m.exact_starts) == (3, 4, 2, 2, 1)
    assert m.sensitivity == pytest.approx(2 / 3)
    assert m.precision == pytest.approx(2 / 4)
    assert m.exact_start == pytest.approx(1 / 2)
    # Coding (base, strand) pairs. Reference: + 0..29 (R3 inside R1), - 35..49: 30 + 15 = 45.
    # Predicted: + 0..29 and 40..45, - 35..46 and 10..18: 36 + 21 = 57. Shared: 30 + 12 = 42.
    assert (m.coding_reference, m.coding_predicted, m.coding_tp) == (45, 57, 42)
    assert m.coding_f1 == pytest.approx(2 * 42 / (45 + 57))


def test_perfect_calls_score_one_and_order_does_not_matter():
    m = evaluate(REFERENCE[::-1], REFERENCE, {"s": 50})
    assert (m.sensitivity, m.precision, m.exact_start, m.coding_f1) == (1.0, 1.0, 1.0, 1.0)


def test_two_calls_on_one_stop_match_once_each_way():
    # Two reference CDS sharing a stop (alternative starts): one call matches both; exact for one of them.
    reference = [CDS("s", ((0, 30, 1),)), CDS("s", ((12, 30, 1),))]
    m = evaluate([CDS("s", ((12, 30, 1),))], reference, {"s": 40})
    assert (m.matched_reference, m.matched_predicted, m.exact_starts) == (2, 1, 1)
    assert m.exact_start == 0.5


def test_genes_across_the_origin_and_sequences_are_kept_apart():
    lengths = {"c": 30, "d": 30}
    reference = [CDS("c", ((24, 30, 1), (0, 6, 1))), CDS("d", ((3, 9, 1),))]
    predicted = [CDS("c", ((24, 30, 1), (0, 6, 1))), CDS("c", ((3, 9, 1),))]  # second on the wrong sequence
    m = evaluate(predicted, reference, lengths)
    assert (m.matched_reference, m.matched_predicted, m.exact_starts) == (1, 1, 1)
    # Reference: 12 bases on c, 6 on d. Calls: c 24..29 and 0..8 (15 bases). Shared: the 12 of the first.
    assert (m.coding_reference, m.coding_predicted, m.coding_tp) == (18, 15, 12)


def test_no_calls():
    m = evaluate([], REFERENCE, {"s": 50})
    assert m.sensitivity == 0.0 and math.isnan(m.precision) and math.isnan(m.exact_start)
    assert m.coding_f1 == 0.0
    assert m.as_dict()["n_reference"] == 3


def test_unknown_sequence_is_an_error():
    with pytest.raises(InputError, match="sequence 'x' is not among"):
        evaluate([CDS("x", ((0, 9, 1),), id="a")], REFERENCE, {"s": 50})
