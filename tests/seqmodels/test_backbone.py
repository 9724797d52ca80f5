"""Stacks and backbones: padding never leaks, chunks carry state exactly, fp32 where it matters."""

import pytest
import torch

from seqmodels import BackboneConfig, BiMamba, DNABackbone, Mamba, MambaStack, vocab
from seqmodels.bidirectional import windowed_forward
from seqmodels.masking import reverse_by_length

TINY = {"d_model": 8, "n_layer": 2, "d_state": 4}


def random_dna(batch, seqlen, lengths, seed):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(vocab.A, vocab.N + 1, (batch, seqlen), generator=g)
    for i, n in enumerate(lengths):
        tokens[i, n:] = vocab.PAD
    return tokens, torch.tensor(lengths)


def test_causal_stack_chunked_forward_equals_one_pass_and_step():
    torch.manual_seed(0)
    stack = MambaStack(BackboneConfig(**TINY))
    x = torch.randn(2, 21, 8)
    full = stack(x)
    outs, states = [], None
    for lo, hi in ((0, 5), (5, 6), (6, 18)):
        out, states = stack.forward_chunk(x[:, lo:hi], states)
        outs.append(out)
    outs += [stack.step(x[:, t:t + 1], states) for t in range(18, 21)]  # chunk states feed step
    torch.testing.assert_close(torch.cat(outs, 1), full, rtol=1e-5, atol=1e-5)


def test_bidirectional_stack_refuses_state_carry():
    stack = MambaStack(BackboneConfig(**TINY, bidirectional=True))
    with pytest.raises(ValueError, match="causal"):
        stack.forward_chunk(torch.randn(1, 4, 8))


@pytest.mark.parametrize("shared", [True, False])
def test_bimamba_is_forward_plus_reversed_backward_per_length(shared):
    torch.manual_seed(1)
    mixer = BiMamba(6, shared=shared, d_state=4)
    backward = mixer.fwd if shared else mixer.rev
    x = torch.randn(2, 9, 6)
    lengths = torch.tensor([9, 6])
    out = mixer(x, mask=torch.arange(9)[None] < lengths[:, None])
    for i, n in enumerate(lengths.tolist()):
        row = x[i:i + 1, :n]
        expected = mixer.fwd(row) + backward(row.flip(1)).flip(1)
        torch.testing.assert_close(out[i:i + 1, :n], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bidirectional, sharing, rc", [(False, "shared", False), (True, "shared", False),
                                                       (True, "separate", False), (False, "shared", True)])
def test_padding_never_changes_real_positions(bidirectional, sharing, rc):
    """Each row in a padded batch equals that row alone, whatever the padding holds."""
    torch.manual_seed(2)
    backbone = DNABackbone(BackboneConfig(**TINY, bidirectional=bidirectional, weight_sharing=sharing),
                           rc_equivariant=rc)
    tokens, lengths = random_dna(3, 14, [14, 9, 3], seed=3)
    batched = backbone(tokens, lengths)
    noisy = tokens.clone()
    noisy[tokens == vocab.PAD] = torch.randint(0, vocab.VOCAB_SIZE, (int((tokens == vocab.PAD).sum()),))
    noisy_out = backbone(noisy, lengths)
    for i, n in enumerate(lengths.tolist()):
        alone = backbone(tokens[i:i + 1, :n])
        for got, again, want in zip(batched, noisy_out, alone):
            if want is None:
                continue
            torch.testing.assert_close(got[i, :n], want[0], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(again[i, :n], want[0], rtol=1e-5, atol=1e-5)


def test_rc_backbone_swaps_and_mirrors_its_strands_exactly():
    torch.manual_seed(4)
    backbone = DNABackbone(BackboneConfig(**TINY, bidirectional=True), rc_equivariant=True)
    tokens, lengths = random_dna(2, 12, [12, 7], seed=5)
    fwd, rev = backbone(tokens, lengths)
    fwd_rc, rev_rc = backbone(vocab.reverse_complement(tokens, lengths), lengths)
    mask = (torch.arange(12)[None] < lengths[:, None])[..., None]
    assert torch.equal(torch.where(mask, fwd_rc, 0), torch.where(mask, reverse_by_length(rev, lengths), 0))
    assert torch.equal(torch.where(mask, rev_rc, 0), torch.where(mask, reverse_by_length(fwd, lengths), 0))


def test_bf16_autocast_keeps_residual_norms_and_ssm_parameters_fp32():
    torch.manual_seed(5)
    stack = MambaStack(BackboneConfig(**TINY))
    x = torch.randn(2, 10, 8)
    seen = {}
    stack.layers[1].norm.register_forward_hook(lambda m, inp, out: seen.update(residual=inp[0].dtype, out=out.dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = stack(x)
    assert seen == {"residual": torch.float32, "out": torch.float32}
    assert out.dtype == torch.float32
    for name, p in stack.named_parameters():
        assert p.dtype == torch.float32, name
    torch.testing.assert_close(out, stack(x), rtol=0.1, atol=0.1)  # bf16 matmuls: same function, coarser


def test_activation_checkpointing_gives_the_same_gradients():
    torch.manual_seed(6)
    plain = MambaStack(BackboneConfig(**TINY))
    ckpt = MambaStack(BackboneConfig(**TINY, checkpointing=True))
    ckpt.load_state_dict(plain.state_dict())
    x, w = torch.randn(2, 9, 8), torch.randn(2, 9, 8)
    for model in (plain, ckpt):
        model.train()
        (model(x) * w).sum().backward()
    for (name, a), (_, b) in zip(plain.named_parameters(), ckpt.named_parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-6, msg=name)


def test_dropout_acts_only_while_training_and_adds_no_weights():
    torch.manual_seed(7)
    plain = MambaStack(BackboneConfig(**TINY))
    dropped = MambaStack(BackboneConfig(**TINY, dropout=0.5, checkpointing=True))
    dropped.load_state_dict(plain.state_dict())  # strict: same names, nothing added
    x = torch.randn(2, 9, 8)
    plain.eval(), dropped.eval()
    torch.testing.assert_close(dropped(x), plain(x))  # evaluation: no dropout
    dropped.train()
    torch.manual_seed(1)
    first = dropped(x)
    assert not torch.allclose(first, plain(x))
    # Checkpointed layers replay the same masks in the backward's recomputation, so the gradient is
    # the one of the forward that ran: compare with the same seed and no checkpointing.
    twin = MambaStack(BackboneConfig(**TINY, dropout=0.5))
    twin.load_state_dict(plain.state_dict())
    twin.train()
    w = torch.randn_like(x)
    for model in (dropped, twin):
        model.zero_grad()
        torch.manual_seed(3)
        (model(x) * w).sum().backward()
    for (name, a), (_, b) in zip(dropped.named_parameters(), twin.named_parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-6, msg=name)


@torch.no_grad()
def test_windowed_bidirectional_inference_is_within_its_stated_bound():
    torch.manual_seed(7)
    # Larger Δ (faster forgetting) than the default init, as trained DNA models have, so the
    # window error is small but not zero.
    backbone = DNABackbone(BackboneConfig(**TINY, bidirectional=True))
    for layer in backbone.stack.layers:
        layer.mixer.fwd.dt_proj.bias.data.fill_(1.0)
    tokens, lengths = random_dna(2, 90, [90, 61], seed=8)
    fn = lambda t, n: backbone(t, n).forward
    full = fn(tokens, lengths)
    mask = (torch.arange(90)[None] < lengths[:, None])[..., None]
    errors = []
    for context in (4, 8, 16):
        result = windowed_forward(fn, tokens, lengths, window=2 * context + 10, context=context)
        assert result.output.shape == full.shape
        err = float(torch.where(mask, result.output - full, 0).abs().max())
        assert 0 < err <= 2 * result.max_seam_gap + 1e-5, (context, err, result.max_seam_gap)
        errors.append(err)
    assert errors[2] < errors[0] / 10  # the error shrinks with context
    exact = windowed_forward(fn, tokens, lengths, window=90, context=10)
    assert torch.equal(exact.output, full) and exact.max_seam_gap == 0.0
    with pytest.raises(ValueError, match="window"):
        windowed_forward(fn, tokens, lengths, window=8, context=4)


def test_bad_tokens_and_lengths_raise_clear_errors():
    backbone = DNABackbone(BackboneConfig(**TINY))
    with pytest.raises(ValueError, match="ids in"):
        backbone(torch.full((1, 5), 9))
    with pytest.raises(ValueError, match="integer"):
        backbone(torch.rand(1, 5))
    with pytest.raises(ValueError, match="lengths"):
        backbone(torch.full((2, 5), 2), torch.tensor([5, 6]))
    with pytest.raises(ValueError, match="lengths"):
        backbone(torch.full((2, 5), 2), torch.tensor([5]))


@pytest.mark.parametrize("field, value", [("d_conv", 5), ("weight_sharing", "tied"), ("n_layer", 0), ("dropout", 1.0)])
def test_bad_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        BackboneConfig(**{**TINY, field: value})


def test_mamba_layers_are_plain_mamba_blocks():
    stack = MambaStack(BackboneConfig(**TINY))
    assert all(type(layer.mixer) is Mamba for layer in stack.layers)
    assert [layer.mixer.layer_idx for layer in stack.layers] == [0, 1]
