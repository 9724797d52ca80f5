"""The Mamba block: mamba_ssm's interface, the paper's equations, recurrent and chunked forms."""

import math

import pytest
import torch
import torch.nn.functional as F

from seqmodels import InferenceParams, Mamba


def test_readme_snippet_runs_verbatim():
    batch, length, dim = 2, 64, 16
    x = torch.randn(batch, length, dim)
    from seqmodels import Mamba

    model = Mamba(
        # This module uses roughly 3 * expand * d_model^2 parameters
        d_model=dim,  # Model dimension d_model
        d_state=16,  # SSM state expansion factor
        d_conv=4,  # Local convolution width
        expand=2,  # Block expansion factor
    )
    y = model(x)
    assert y.shape == x.shape


def mamba_ssm_state_dict(d_model, d_state=16, d_conv=4, expand=2, seed=0):
    """Random tensors with the names and shapes of mamba_ssm's Mamba (mamba_simple.py), written out
    by hand so a renamed or reshaped parameter fails the strict load."""
    g = torch.Generator().manual_seed(seed)
    e, r = expand * d_model, math.ceil(d_model / 16)
    shapes = {"in_proj.weight": (2 * e, d_model), "conv1d.weight": (e, 1, d_conv), "conv1d.bias": (e,),
              "x_proj.weight": (r + 2 * d_state, e), "dt_proj.weight": (e, r), "dt_proj.bias": (e,),
              "A_log": (e, d_state), "D": (e,), "out_proj.weight": (d_model, e)}
    sd = {k: torch.randn(s, generator=g) * 0.3 for k, s in shapes.items()}
    sd["A_log"] = torch.rand(e, d_state, generator=g) * 2 - 1
    return sd


def mamba_from_equations(sd, x, d_state):
    """Gu & Dao (2023), Fig. 3 and Eq. (2), float64, one time step at a time:
    x, z = in_proj(h); x = silu(causal depthwise conv(x)); (Δ, B, C) from x;
    Δ = softplus(dt_proj(Δ)); h_t = exp(Δ A) h_{t-1} + Δ B x_t; y_t = C h_t + D x_t;
    out = out_proj(y * silu(z))."""
    sd = {k: v.double() for k, v in sd.items()}
    x = x.double()
    batch, length, _ = x.shape
    u, z = (x @ sd["in_proj.weight"].T).chunk(2, dim=-1)  # (batch, length, e)
    e = u.shape[-1]
    w = sd["conv1d.weight"][:, 0, :]  # (e, width)
    width = w.shape[1]
    conv = torch.zeros_like(u) + sd["conv1d.bias"]
    for t in range(length):
        for k in range(width):
            src = t - (width - 1) + k
            if src >= 0:
                conv[:, t] += w[:, k] * u[:, src]
    u = conv * torch.sigmoid(conv)
    r = sd["dt_proj.weight"].shape[1]
    dt_in, Bm, Cm = torch.split(u @ sd["x_proj.weight"].T, [r, d_state, d_state], dim=-1)
    delta = torch.log1p(torch.exp(dt_in @ sd["dt_proj.weight"].T + sd["dt_proj.bias"]))  # softplus
    A = -torch.exp(sd["A_log"])  # (e, d_state)
    h = torch.zeros(batch, e, d_state, dtype=torch.float64)
    ys = []
    for t in range(length):
        h = torch.exp(delta[:, t, :, None] * A) * h + delta[:, t, :, None] * Bm[:, t, None, :] * u[:, t, :, None]
        ys.append((h * Cm[:, t, None, :]).sum(-1) + sd["D"] * u[:, t])
    y = torch.stack(ys, dim=1) * (z * torch.sigmoid(z))
    return y @ sd["out_proj.weight"].T


@pytest.mark.parametrize("d_conv", [2, 4])
def test_agrees_with_the_paper_equations_loading_a_mamba_ssm_state_dict(d_conv):
    torch.manual_seed(1)
    sd = mamba_ssm_state_dict(d_model=20, d_state=8, d_conv=d_conv)
    model = Mamba(d_model=20, d_state=8, d_conv=d_conv)
    model.load_state_dict(sd, strict=True)
    x = torch.randn(3, 19, 20)
    expected = mamba_from_equations(sd, x, d_state=8)
    torch.testing.assert_close(model.double()(x.double()), expected, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(model.float()(x).double(), expected, rtol=1e-4, atol=1e-5)


def test_initialisation_follows_mamba_ssm():
    torch.manual_seed(0)
    model = Mamba(d_model=64, d_state=16, dt_min=0.001, dt_max=0.1)
    assert model.dt_rank == 4 and model.d_inner == 128
    expected_A = torch.arange(1, 17, dtype=torch.float32).repeat(128, 1)
    torch.testing.assert_close(-torch.exp(model.A_log), -expected_A)  # S4D-real
    torch.testing.assert_close(model.D, torch.ones(128))
    dt = F.softplus(model.dt_proj.bias)
    assert dt.min() >= 0.001 * 0.999 and dt.max() <= 0.1 * 1.001  # Δ starts in [dt_min, dt_max]
    assert dt.std() > 0.01  # log-uniform, not constant
    bound = 4 ** -0.5
    assert model.dt_proj.weight.abs().max() <= bound and model.dt_proj.weight.abs().max() > 0.8 * bound
    assert model.in_proj.bias is None and model.conv1d.bias is not None
    assert Mamba(8, dtype=torch.bfloat16).A_log.dtype == torch.float32  # A_log and D stay fp32


def test_step_by_step_equals_the_parallel_forward():
    torch.manual_seed(2)
    model = Mamba(d_model=12, d_state=8)
    x = torch.randn(2, 15, 12)
    full = model(x)
    conv_state, ssm_state = model.allocate_inference_cache(batch_size=2, max_seqlen=15)
    steps = [model.step(x[:, t:t + 1], conv_state, ssm_state)[0] for t in range(15)]
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-5, atol=1e-6)


def test_inference_params_prefill_then_decode_like_mamba_ssm():
    torch.manual_seed(3)
    model = Mamba(d_model=12, d_state=8, layer_idx=0)
    x = torch.randn(2, 11, 12)
    full = model(x)
    params = InferenceParams(max_seqlen=11, max_batch_size=2)
    prefill = model(x[:, :7], inference_params=params)
    params.seqlen_offset = 7
    decoded = [model(x[:, t:t + 1], inference_params=params) for t in range(7, 11)]
    torch.testing.assert_close(torch.cat([prefill, *decoded], 1), full, rtol=1e-5, atol=1e-6)


def test_chunked_forward_equals_one_pass_and_hands_over_to_step():
    torch.manual_seed(4)
    model = Mamba(d_model=10, d_state=4, d_conv=3)
    x = torch.randn(2, 23, 10)
    full = model(x)
    outs, state = [], None
    for lo, hi in ((0, 1), (1, 6), (6, 16), (16, 20)):  # a chunk shorter than the conv width too
        out, state = model.forward_chunk(x[:, lo:hi], state)
        outs.append(out)
    for t in range(20, 23):  # the chunk state is the step cache
        outs.append(model.step(x[:, t:t + 1], *state)[0])
    torch.testing.assert_close(torch.cat(outs, 1), full, rtol=1e-5, atol=1e-6)


def test_mask_makes_left_and_right_padding_invisible():
    torch.manual_seed(5)
    model = Mamba(d_model=8, d_state=4)
    real = torch.randn(1, 9, 8)
    alone = model(real)
    garbage = torch.randn(1, 5, 8) * 100
    mask_right = torch.tensor([[True] * 9 + [False] * 5])
    right = model(torch.cat([real, garbage], 1), mask=mask_right)
    torch.testing.assert_close(right[:, :9], alone, rtol=1e-5, atol=1e-6)
    left = model(torch.cat([garbage, real], 1), mask=mask_right.flip(1))
    torch.testing.assert_close(left[:, 5:], alone, rtol=1e-5, atol=1e-6)


def test_gradients_reach_every_parameter():
    torch.manual_seed(6)
    model = Mamba(d_model=8, d_state=4)
    (model(torch.randn(2, 7, 8)) * torch.randn(2, 7, 8)).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("kwargs, match", [({"d_model": 0}, "d_model"), ({"d_model": 8, "d_conv": 5}, "d_conv"),
                                           ({"d_model": 8, "dt_init": "x"}, "dt_init"),
                                           ({"d_model": 8, "dt_min": 0.2}, "dt_min")])
def test_bad_constructor_arguments_name_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Mamba(**kwargs)


def test_bad_inputs_raise_clear_errors():
    model = Mamba(d_model=8)
    with pytest.raises(ValueError, match="d_model=8"):
        model(torch.randn(2, 5, 7))
    with pytest.raises(ValueError, match="mask"):
        model(torch.randn(2, 5, 8), mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="one token"):
        model.step(torch.randn(2, 3, 8), *model.allocate_inference_cache(2, 3))
    with pytest.raises(ValueError, match="layer_idx"):
        model(torch.randn(2, 5, 8), inference_params=InferenceParams(5, 2))
