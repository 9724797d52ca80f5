"""In-silico mutagenesis attribution against a brute-force float64 reference on toy classifiers."""

import numpy as np
import pytest
import torch
from torch import nn

from pipelines.attribution import ism_attribution
from seqmodels import vocab


class ToyClassifier(nn.Module):
    """logits[c] = sum_l U[c, l, tok_l] + V[c] * (sum_l W[l, tok_l])**2: position-specific, nonlinear."""

    def __init__(self, length: int, n_classes: int, seed: int, only_position: int | None = None):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.U = nn.Parameter(torch.randn(n_classes, length, vocab.VOCAB_SIZE, generator=g, dtype=torch.float64))
        self.V = nn.Parameter(torch.randn(n_classes, generator=g, dtype=torch.float64) * 0.1)
        self.W = nn.Parameter(torch.randn(length, vocab.VOCAB_SIZE, generator=g, dtype=torch.float64) * 0.3)
        if only_position is not None:  # the model sees one position only
            keep = torch.zeros(length, 1, dtype=torch.float64)
            keep[only_position] = 1
            self.U.data *= keep
            self.W.data *= keep

    def forward(self, tokens, lengths):
        pos = torch.arange(tokens.shape[1])
        lin = self.U[:, pos, tokens].sum(-1).T  # (batch, n_classes)
        quad = self.W[pos, tokens].sum(-1, keepdim=True) ** 2  # (batch, 1)
        return lin + quad * self.V


def brute_force(model, tokens, target):
    """The definition, one mutant at a time, in float64 numpy."""
    def log_p(seq):
        logits = model(torch.as_tensor(seq[None]), None).detach().numpy()[0]
        return logits[target] - np.log(np.exp(logits).sum())

    ref = log_p(tokens)
    out = np.zeros(len(tokens))
    for i, base in enumerate(tokens):
        subs = [b for b in (vocab.A, vocab.C, vocab.G, vocab.T) if b != base]
        values = []
        for b in subs:
            mutant = tokens.copy()
            mutant[i] = b
            values.append(log_p(mutant))
        out[i] = ref - np.mean(values)
    return out


def _random_tokens(rng, length):
    tokens = rng.choice([vocab.A, vocab.C, vocab.G, vocab.T], size=length)
    tokens[rng.integers(length)] = vocab.N
    return tokens.astype(np.int64)


@pytest.mark.parametrize("batch_size", [1, 7, 1000])
def test_matches_brute_force_for_every_batch_size(batch_size):
    rng = np.random.default_rng(0)
    tokens = _random_tokens(rng, 23)
    model = ToyClassifier(23, 3, seed=1)
    scores, target = ism_attribution(model, tokens, batch_size=batch_size)
    predicted = int(model(torch.as_tensor(tokens[None]), None).argmax())
    assert target == predicted
    np.testing.assert_allclose(scores, brute_force(model, tokens, target), rtol=1e-10, atol=1e-12)


def test_explains_the_requested_class_and_reports_progress():
    rng = np.random.default_rng(1)
    tokens = _random_tokens(rng, 15)
    model = ToyClassifier(15, 2, seed=2)
    calls = []
    scores, target = ism_attribution(model, tokens, target=1, batch_size=8, progress=lambda d, t: calls.append((d, t)))
    assert target == 1
    np.testing.assert_allclose(scores, brute_force(model, tokens, 1), rtol=1e-10)
    total = 3 * 15 + 1  # three substitutes per base, four at the N
    assert calls[-1] == (total, total) and [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_a_base_the_model_ignores_gets_zero():
    tokens = _random_tokens(np.random.default_rng(2), 12)
    scores, _ = ism_attribution(ToyClassifier(12, 2, seed=3, only_position=5), tokens)
    assert scores[5] != 0
    np.testing.assert_array_equal(np.delete(scores, 5), 0)


def test_reverse_complement_average_mirrors_the_other_strand():
    rng = np.random.default_rng(3)
    tokens = _random_tokens(rng, 17)
    model = ToyClassifier(17, 2, seed=4)
    rc = np.asarray(vocab.COMPLEMENT)[tokens[::-1]]
    plain, _ = ism_attribution(model, tokens, target=0)
    other, _ = ism_attribution(model, rc, target=0)
    averaged, _ = ism_attribution(model, tokens, target=0, rc_average=True)
    np.testing.assert_allclose(averaged, (plain + other[::-1]) / 2, rtol=1e-12)
    assert not np.allclose(averaged, plain)  # the toy model is not RC-invariant: the average matters


def test_bad_arguments_are_named():
    model = ToyClassifier(5, 2, seed=5)
    with pytest.raises(ValueError, match="base ids"):
        ism_attribution(model, np.array([vocab.A, vocab.PAD, vocab.C, vocab.G, vocab.T]))
    with pytest.raises(ValueError, match="target"):
        ism_attribution(model, np.full(5, vocab.A), target=2)
    with pytest.raises(ValueError, match="non-empty"):
        ism_attribution(model, np.zeros((0,), dtype=np.int64))


class RCInvariant(nn.Module):
    """f(x) + f(reverse complement of x): exactly invariant to reverse-complementing the input."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, tokens, lengths):
        comp = torch.as_tensor(vocab.COMPLEMENT)[tokens]
        return self.inner(tokens, lengths) + self.inner(comp.flip(-1), lengths)


def test_for_an_rc_invariant_model_the_strand_average_changes_nothing():
    tokens = _random_tokens(np.random.default_rng(4), 19)
    model = RCInvariant(ToyClassifier(19, 2, seed=6))
    plain, target = ism_attribution(model, tokens)
    averaged, _ = ism_attribution(model, tokens, target=target, rc_average=True)
    np.testing.assert_allclose(averaged, plain, rtol=1e-12, atol=1e-14)
