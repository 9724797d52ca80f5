"""The Shine-Dalgarno start model of the adaptive decoder: motif classes match a plain reference, a
genome's planted motif is learned at its length and spacer, the start model's parts switch as
configured, and decoding with it finds the planted starts."""

import dataclasses

import numpy as np
import pytest
from test_genome_adaptive import ADAPTIVE, metrics, noisy_model, synthetic_genome

from pipelines.data.errors import InputError
from pipelines.genome.adaptive import (
    N_SD_CLASSES,
    RBS_WINDOW,
    SD_CORE,
    SD_MIN_MOTIF,
    SD_SPACER_BINS,
    learn_statistics,
    sd_classes,
)
from pipelines.genome.decoder import DecoderConfig, base_ids, codon_ids, codon_tables, decoder_for_package


def reference_sd_class(seq: str, start: int) -> int:
    """Slow and plain: the longest piece of the core upstream of ``start`` at a spacer of one of the
    bins (bins in their order of preference), as a class number; 0 when there is none."""
    lengths = range(len(SD_CORE), SD_MIN_MOTIF - 1, -1)
    for li, k in enumerate(lengths):
        pieces = {SD_CORE[i : i + k] for i in range(len(SD_CORE) - k + 1)}
        for bi, (lo, hi) in enumerate(SD_SPACER_BINS):
            for spacer in range(lo, hi + 1):
                first = start - spacer - k
                if first >= 0 and seq[first : first + k] in pieces:
                    return 1 + li * len(SD_SPACER_BINS) + bi
    return 0


def test_motif_classes_match_the_plain_reference_on_random_dna_with_planted_pieces():
    rng = np.random.default_rng(0)
    for trial in range(20):
        seq = list(rng.choice(list("ACGT"), size=400))
        for _ in range(6):  # plant pieces of the core of every length at random places
            k = int(rng.integers(SD_MIN_MOTIF, len(SD_CORE) + 1))
            i = int(rng.integers(0, len(SD_CORE) - k + 1))
            at = int(rng.integers(0, 400 - k))
            seq[at : at + k] = SD_CORE[i : i + k]
        text = "".join(seq)
        starts = np.arange(0, 400)  # every position, the sequence's first bases included
        got = sd_classes(base_ids(text.encode()), starts)
        want = [reference_sd_class(text, int(p)) for p in starts]
        assert got.tolist() == want, f"trial {trial}"
        assert 0 <= got.min() and got.max() < N_SD_CLASSES


def test_the_longest_piece_wins_and_n_breaks_a_motif():
    start = 30
    seq = ["T"] * 40
    seq[start - 6 - 6 : start - 6] = "AGGAGG"  # spacer 6
    assert sd_classes(base_ids("".join(seq).encode()), np.array([start]))[0] == 1  # length 6, bin 5-7
    seq[start - 6 - 6 + 2] = "N"  # AG N AGG: only 3-base pieces remain
    got = sd_classes(base_ids("".join(seq).encode()), np.array([start]))[0]
    assert got == 1 + 3 * len(SD_SPACER_BINS) + 0  # AGG at spacer 6: length index 3, bin 5-7


def test_a_planted_motif_is_learned_at_its_length_and_spacer():
    seq, cds = synthetic_genome()  # AGGAGG six bases before every true start
    stats = learn_statistics([(seq, cds)], start_model="sd")
    planted = 1  # length 6, spacer bin 5-7
    assert stats.sd[planted] > 1.0 and stats.sd[planted] == stats.sd.max()
    assert stats.sd[0] < 0  # no motif within reach: against a start
    assert not stats.rbs.any()  # "sd" alone: the matrix is off


def test_the_start_model_setting_switches_the_parts_on_and_off():
    seq, cds = synthetic_genome(n_genes=20, seed=3)
    pwm = learn_statistics([(seq, cds)], start_model="pwm")
    both = learn_statistics([(seq, cds)], start_model="pwm+sd")
    assert not pwm.sd.any() and pwm.rbs.any()
    assert both.sd.any() and np.array_equal(both.rbs, pwm.rbs)
    # With both, a start scores codon + matrix + motif class, recomputed here in float64.
    _, start = both.strand_scores(seq.encode(), codon_tables(11))
    is_start, _ = codon_tables(11)
    ids, bases = codon_ids(seq.encode()), base_ids(seq.encode())
    for k in np.flatnonzero(is_start[np.maximum(ids, 0)] & (ids >= 0))[:200]:
        window = [(RBS_WINDOW - (k - j), bases[j]) for j in range(max(k - RBS_WINDOW, 0), k)]
        want = (float(both.start_codon[ids[k]]) + sum(float(both.rbs[i, b]) for i, b in window if b >= 0)
                + float(both.sd[reference_sd_class(seq, int(k))]))
        assert start[k] == pytest.approx(want, abs=1e-4)


@pytest.mark.parametrize("start_model", ["sd", "pwm+sd"])
def test_decoding_with_the_motif_model_finds_the_planted_starts(start_model):
    seq, cds = synthetic_genome()
    probs = noisy_model(seq, cds)
    first = metrics(seq, probs, cds, DecoderConfig())
    second = metrics(seq, probs, cds, dataclasses.replace(ADAPTIVE, start_model=start_model))
    assert second.exact_start > first.exact_start + 0.3
    assert second.sensitivity > first.sensitivity + 0.3 and second.precision >= 0.95


def test_an_unknown_start_model_is_refused_naming_the_setting():
    with pytest.raises(ValueError, match="start_model must be one of pwm, sd, pwm\\+sd"):
        DecoderConfig(start_model="motif")
    with pytest.raises(InputError, match="start_model"):
        decoder_for_package({"decoder": {"adaptive": True, "start_model": "motif"}}, source="pkg/config.json")
