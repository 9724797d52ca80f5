"""Properties of the task models beyond the shared contract: RC symmetry, RevIN, quantiles, DLinear."""

import numpy as np
import pytest
import torch

from seqmodels import DLinear, MambaClassifier, MambaForecaster, MambaTagger, vocab
from seqmodels.baselines import moving_average
from seqmodels.classifier import append_cls
from seqmodels.forecasting import monotone_quantiles
from seqmodels.masking import reverse_by_length

TINY = {"d_model": 8, "n_layer": 2, "d_state": 4}


def dna(batch, seqlen, lengths, seed):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(vocab.A, vocab.N + 1, (batch, seqlen), generator=g)
    for i, n in enumerate(lengths):
        tokens[i, n:] = vocab.PAD
    return tokens, torch.tensor(lengths)


@pytest.mark.parametrize("pooling", ["mean", "max"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("stem_kernel", [0, 5])
def test_rc_equivariant_classifier_gives_identical_logits_for_the_reverse_complement(pooling, bidirectional,
                                                                                     stem_kernel):
    torch.manual_seed(0)
    model = MambaClassifier(n_classes=3, pooling=pooling, rc_equivariant=True, bidirectional=bidirectional,
                            stem_kernel=stem_kernel, **TINY)
    tokens, lengths = dna(3, 20, [20, 13, 6], seed=1)
    logits = model(tokens, lengths)
    assert torch.equal(logits, model(vocab.reverse_complement(tokens, lengths), lengths))
    plain = MambaClassifier(n_classes=3, pooling=pooling, stem_kernel=stem_kernel, **TINY)  # not an accident
    assert not torch.allclose(plain(tokens, lengths), plain(vocab.reverse_complement(tokens, lengths), lengths))


def test_conv_stem_of_a_causal_classifier_reads_no_later_base():
    torch.manual_seed(5)
    model = MambaClassifier(n_classes=2, stem_kernel=7, **TINY)
    tokens, _ = dna(2, 24, [24, 24], seed=6)
    changed = tokens.clone()
    changed[:, 15:] = vocab.A + (changed[:, 15:] - vocab.A + 1) % 4  # every base from 15 on
    before, after = model.backbone(tokens).forward, model.backbone(changed).forward
    torch.testing.assert_close(before[:, :15], after[:, :15], rtol=0, atol=0)
    assert not torch.allclose(before[:, 15:], after[:, 15:])


def test_conv_stem_of_a_bidirectional_classifier_reads_both_sides_of_a_base():
    torch.manual_seed(5)
    stem = MambaClassifier(n_classes=2, bidirectional=True, stem_kernel=7, **TINY).backbone.stem
    x = torch.zeros(1, 21, TINY["d_model"])
    x[0, 10] = 1.0  # one base's embedding: the stem's output moves at 3 bases on either side, no farther
    moved = (stem(x, None) - stem(torch.zeros_like(x), None)).abs().sum(-1)[0]
    assert moved[7:14].gt(0).all() and moved[:7].eq(0).all() and moved[14:].eq(0).all()


@pytest.mark.parametrize("stem_kernel", [-1, 1, 4, 33])
def test_conv_stem_width_must_be_odd_and_small(stem_kernel):
    with pytest.raises(ValueError, match="stem_kernel"):
        MambaClassifier(stem_kernel=stem_kernel, **TINY)


def test_rc_classifier_refuses_order_dependent_pooling():
    with pytest.raises(ValueError, match="order-free"):
        MambaClassifier(pooling="last", rc_equivariant=True, **TINY)


def test_rc_tagger_maps_strands_onto_each_other():
    torch.manual_seed(2)
    model = MambaTagger(n_tracks=2, n_classes=4, rc_equivariant=True, **TINY)
    tokens, lengths = dna(2, 15, [15, 9], seed=3)
    logits = model(tokens, lengths)  # (batch, seqlen, 2, 4)
    logits_rc = model(vocab.reverse_complement(tokens, lengths), lengths)
    mirrored = reverse_by_length(logits, lengths).flip(2)  # mirror positions, swap strand tracks
    torch.testing.assert_close(logits_rc, mirrored, rtol=1e-6, atol=1e-6)
    single = MambaTagger(n_tracks=1, n_classes=3, rc_equivariant=True, **TINY)
    torch.testing.assert_close(single(vocab.reverse_complement(tokens, lengths), lengths),
                               reverse_by_length(single(tokens, lengths), lengths), rtol=1e-6, atol=1e-6)


def test_cls_token_goes_right_after_each_sequence():
    tokens, lengths = dna(2, 5, [5, 3], seed=4)
    out, new_lengths = append_cls(tokens, lengths)
    assert out.shape == (2, 6) and new_lengths.tolist() == [6, 4]
    assert out[0, 5] == vocab.CLS and out[1, 3] == vocab.CLS and out[1, 4] == vocab.PAD
    assert torch.equal(out[0, :5], tokens[0]) and torch.equal(out[1, :3], tokens[1, :3])


@pytest.mark.parametrize("make", [
    lambda: MambaForecaster(input_len=20, horizon=3, **TINY),
    lambda: MambaForecaster(input_len=20, horizon=3, channel_mixing=True, n_channels=2, **TINY),
    lambda: DLinear(input_len=20, horizon=3, moving_avg=5, revin=True),
], ids=["mamba", "mamba-mixing", "dlinear"])
def test_revin_forecasts_follow_shifts_and_positive_scalings_of_the_input(make):
    torch.manual_seed(5)
    model = make()
    x = torch.randn(2, 20, 2, dtype=torch.float64)
    model.double()
    base = model(x)
    moved = model(x * 7.5 - 300.0)
    torch.testing.assert_close(moved.point, base.point * 7.5 - 300.0, rtol=1e-6, atol=1e-4)
    torch.testing.assert_close(moved.quantiles, base.quantiles * 7.5 - 300.0, rtol=1e-6, atol=1e-4)


def test_channel_independent_forecaster_treats_each_series_alone():
    torch.manual_seed(6)
    model = MambaForecaster(input_len=12, horizon=3, **TINY)
    x = torch.randn(2, 12, 4)
    out = model(x)
    torch.testing.assert_close(model(x[..., [2]]).point, out.point[..., [2]], rtol=1e-5, atol=1e-6)
    perm = torch.tensor([3, 0, 2, 1])
    torch.testing.assert_close(model(x[..., perm]).quantiles, out.quantiles[:, :, perm], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="n_channels=4"):
        MambaForecaster(input_len=12, horizon=3, channel_mixing=True, n_channels=4, **TINY)(x[..., :3])


def test_left_padded_history_forecasts_like_the_short_history():
    torch.manual_seed(7)
    model = MambaForecaster(input_len=16, horizon=4, **TINY)
    short = torch.randn(1, 10, 2)
    padded = torch.cat([torch.full((1, 6, 2), float("nan")), short], 1)
    mask = torch.arange(16)[None] >= 6
    got, want = model(padded, mask), model(short)
    torch.testing.assert_close(got.point, want.point, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got.quantiles, want.quantiles, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="leading padding"):
        model(padded, ~mask)


def test_quantiles_are_strictly_increasing_around_the_median_anchor():
    raw = torch.randn(50, 5, dtype=torch.float64) * 10
    q = monotone_quantiles(raw, (0.05, 0.25, 0.5, 0.75, 0.95))
    assert bool((q.diff(dim=-1) > 0).all())
    assert torch.equal(q[:, 2], raw[:, 2])  # the level nearest 0.5 is the unconstrained anchor
    with pytest.raises(ValueError, match="quantiles"):
        MambaForecaster(quantiles=(0.9, 0.1))


def test_dlinear_decomposition_matches_a_numpy_moving_average():
    rng = np.random.default_rng(8)
    series = rng.normal(size=(3, 30))
    window, half = 7, 3
    padded = np.concatenate([np.repeat(series[:, :1], half, 1), series, np.repeat(series[:, -1:], half, 1)], 1)
    expected = np.stack([padded[:, i:i + window].mean(1) for i in range(30)], 1)
    got = moving_average(torch.from_numpy(series), window).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_dlinear_is_the_two_linear_maps_of_the_paper():
    torch.manual_seed(9)
    model = DLinear(input_len=10, horizon=2, quantiles=(0.5,), moving_avg=3).double()
    x = torch.randn(1, 10, 1, dtype=torch.float64)
    s = x[0, :, 0]
    trend = moving_average(s[None], 3)[0]
    out = model.seasonal((s - trend)[None]) + model.trend(trend[None])  # (1, horizon * 2)
    torch.testing.assert_close(model(x).point[0, :, 0], out.view(2, 2)[:, 0])
    with pytest.raises(ValueError, match="input_len=10"):
        model(torch.randn(1, 9, 1, dtype=torch.float64))
