"""Tokenising: the vocabulary's ids, soft-mask channel, IUPAC codes to N, RNA, and refusals."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.data.alphabet import BaseCounts, check_sequence, tokenize
from pipelines.data.errors import InputError
from seqmodels import vocab

dna = st.text(alphabet="ACGTN", min_size=1, max_size=300)
soft = st.text(alphabet="ACGTNacgtn", min_size=1, max_size=300)


@settings(max_examples=60, deadline=None)
@given(dna)
def test_round_trip_through_the_vocabulary(seq):
    tokens = tokenize(seq)
    assert tokens.dtype == np.int8 and tokens.shape == (len(seq),)
    assert vocab.decode(tokens) == seq


@settings(max_examples=60, deadline=None)
@given(soft)
def test_lower_case_reads_as_upper_case_with_a_soft_mask_channel(seq):
    tokens, mask, counts = tokenize(seq, return_mask=True, return_counts=True)
    assert vocab.decode(tokens) == seq.upper()
    np.testing.assert_array_equal(mask, [c.islower() for c in seq])
    assert counts.soft_masked == sum(c.islower() for c in seq)
    assert counts.n == seq.upper().count("N")


def test_ids_are_the_vocabulary_ids():
    np.testing.assert_array_equal(tokenize("ACGTN"), [vocab.A, vocab.C, vocab.G, vocab.T, vocab.N])


def test_iupac_ambiguity_codes_become_n_and_are_counted():
    tokens, counts = tokenize("ACRYswKMBDHVN", return_counts=True)
    assert vocab.decode(tokens) == "AC" + "N" * 11
    assert counts == BaseCounts(length=13, n=1, soft_masked=2, ambiguous=10, rna=0)


def test_rna_u_becomes_t_and_is_counted():
    tokens, counts = tokenize("ACGUu", return_counts=True)
    assert vocab.decode(tokens) == "ACGTT"
    assert counts.rna == 2


def test_protein_is_refused_with_the_fraction_of_amino_acid_letters():
    # 10 letters, 4 of them (E, F, L, Q) exist only in the protein alphabet.
    with pytest.raises(InputError, match=r"looks like protein.*40% of its letters \(E, F, L, Q\)"):
        tokenize("MEFLQAKVGA")


def test_gaps_and_other_characters_have_their_own_messages():
    with pytest.raises(InputError, match=r"alignment gaps .*position 3"):
        tokenize("AC-GT")
    with pytest.raises(InputError, match=r"'7' at position 4, which is not an IUPAC nucleotide code"):
        tokenize("ACG7T")


def test_check_sequence_counts_without_tokenising():
    assert check_sequence("ACGT" * 10) == BaseCounts(40)
    assert check_sequence(b"acgN").soft_masked == 3
