"""causal_conv1d_fn and causal_conv1d_update: the PyTorch path and the Triton kernels against the
float64 reference, values and every gradient.

On a CPU-only machine the Triton kernels run in Triton's interpreter (tests/conftest.py sets
TRITON_INTERPRET=1): small shapes, float32. The ``gpu`` tests run them natively in fp32 and bf16.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kernels import causal_conv1d_fn, causal_conv1d_ref, causal_conv1d_update, triton_available

ON_GPU = torch.cuda.is_available()
needs_triton = pytest.mark.skipif(not triton_available(), reason="triton is not installed")
BACKENDS = ["torch", pytest.param("triton", marks=needs_triton)]
TOL = {torch.float64: (1e-10, 1e-10), torch.float32: (1e-4, 1e-5), torch.bfloat16: (2e-2, 2e-2)}


def make_inputs(batch, dim, seqlen, width, *, bias=True, init=False, seed=0):
    """Float64 leaf tensors (x, weight, bias, initial_states), random, never zeros."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64).requires_grad_()  # noqa: E731
    return r(batch, dim, seqlen), r(dim, width), r(dim) if bias else None, r(batch, dim, width - 1) if init else None


def cast(tensors, dtype, device="cpu"):
    """Detached copies in ``dtype`` on ``device``, requiring grad like the originals."""
    return [None if t is None else t.detach().to(device, dtype).requires_grad_(t.requires_grad) for t in tensors]


def run_with_grads(fn, inputs, activation, seed=1):
    """y, final states and the gradients of a random linear function of both w.r.t. every input."""
    x, weight, bias, init = inputs
    y, final = fn(x, weight, bias, initial_states=init, return_final_states=True, activation=activation)
    g = torch.Generator().manual_seed(seed)
    # Upstream gradients are rounded to bf16 for every dtype, so a bf16 kernel and the float64
    # reference see the same dy: what remains is the kernel's own error.
    dy = torch.randn(y.shape, generator=g, dtype=torch.float64).to(torch.bfloat16).to(y)
    dfinal = torch.randn(final.shape, generator=g, dtype=torch.float64).to(torch.bfloat16).to(final)
    leaves = [t for t in inputs if t is not None]
    grads = torch.autograd.grad((y * dy).sum() + (final * dfinal).sum(), leaves)
    return y, final, grads


def assert_matches_reference(inputs64, dtype, activation, device="cpu"):
    """The dispatched causal_conv1d_fn in ``dtype`` equals the float64 reference (values, grads)."""
    y_ref, f_ref, g_ref = run_with_grads(causal_conv1d_ref, inputs64, activation)
    y, f, grads = run_with_grads(causal_conv1d_fn, cast(inputs64, dtype, device), activation)
    rtol, atol = TOL[dtype]
    assert y.dtype == dtype and f.dtype == dtype
    torch.testing.assert_close(y.cpu().double(), y_ref, rtol=rtol, atol=atol)
    torch.testing.assert_close(f.cpu().double(), f_ref, rtol=rtol, atol=atol)
    for name, got, want in zip(("x", "weight", "bias", "initial_states"), grads, g_ref):
        # dweight / dbias sum over batch and time: scale the tolerance with the size of the sum.
        scale = want.abs().max().item() if name in ("weight", "bias") else 1.0
        torch.testing.assert_close(got.cpu().double(), want, rtol=rtol, atol=atol * max(1.0, scale), msg=name)


@pytest.fixture(params=BACKENDS)
def backend(request, monkeypatch):
    monkeypatch.setenv("SEQMAMBA_BACKEND", request.param)
    return request.param


# Each width and activation meets seqlen 1, a length shorter than the window, and odd lengths, with
# every optional argument on and off somewhere: (width, seqlen, activation, bias, initial_states).
CASES = [
    (2, 1, None, True, False),
    (2, 37, "silu", False, True),
    (3, 1, "silu", True, True),
    (3, 2, None, False, True),
    (3, 23, "swish", True, False),
    (4, 1, None, False, True),
    (4, 2, "silu", True, True),
    (4, 5, None, True, False),
    (4, 31, "silu", True, True),
]


@pytest.mark.parametrize(("width", "seqlen", "activation", "bias", "init"), CASES)
def test_matches_reference_float32(backend, width, seqlen, activation, bias, init):
    inputs = make_inputs(2, 5, seqlen, width, bias=bias, init=init, seed=width * 100 + seqlen)
    assert_matches_reference(inputs, torch.float32, activation)


@needs_triton
@pytest.mark.parametrize(("width", "init"), [(2, True), (4, True), (3, False)])
def test_triton_across_tile_boundaries(monkeypatch, width, init):
    """Sequences spanning several tiles (and channel blocks) give the same values and gradients."""
    from kernels.causal_conv1d import triton_conv

    monkeypatch.setenv("SEQMAMBA_BACKEND", "triton")
    monkeypatch.setattr(triton_conv, "MAX_BLOCK_L", 16)
    inputs = make_inputs(2, 3, 41, width, init=init, seed=7)
    assert_matches_reference(inputs, torch.float32, "silu")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.integers(1, 3), dim=st.integers(1, 9), seqlen=st.integers(1, 70), width=st.integers(2, 4),
       activation=st.sampled_from([None, "silu"]), bias=st.booleans(), init=st.booleans(),
       seed=st.integers(0, 2**16))
def test_torch_path_random_shapes_float64(monkeypatch, batch, dim, seqlen, width, activation, bias, init, seed):
    """The PyTorch path in float64 is the reference up to rounding, for any shape."""
    monkeypatch.setenv("SEQMAMBA_BACKEND", "torch")
    inputs = make_inputs(batch, dim, seqlen, width, bias=bias, init=init, seed=seed)
    assert_matches_reference(inputs, torch.float64, activation)


def channel_last(inputs):
    """The same inputs with x stored as (batch, seqlen, dim), as the Mamba block hands it over."""
    x, *rest = inputs
    return [x.detach().transpose(1, 2).contiguous().transpose(1, 2).requires_grad_(x.requires_grad), *rest]


def assert_inference_matches_reference(inputs, activation, rtol, atol):
    """Under no_grad (where channel-last x takes the channels-last 2-D conv), y with and without
    the final states, and the final states, equal the float64 reference's."""
    x, weight, bias, init = inputs
    want, want_final = causal_conv1d_ref(*(None if t is None else t.detach().double() for t in inputs),
                                         return_final_states=True, activation=activation)
    with torch.no_grad():
        y, final = causal_conv1d_fn(x, weight, bias, initial_states=init, return_final_states=True,
                                    activation=activation)
        y_only = causal_conv1d_fn(x, weight, bias, initial_states=init, activation=activation)
    for got, expected in ((y, want), (final, want_final), (y_only, want)):
        torch.testing.assert_close(got.double(), expected, rtol=rtol, atol=atol)
    assert y_only.stride(1) == 1  # channel-last out


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.integers(1, 3), dim=st.integers(2, 9), seqlen=st.integers(1, 70), width=st.integers(2, 4),
       activation=st.sampled_from([None, "silu"]), bias=st.booleans(), init=st.booleans(),
       seed=st.integers(0, 2**16))
def test_torch_path_channel_last_random_shapes_float64(monkeypatch, batch, dim, seqlen, width, activation, bias,
                                                       init, seed):
    """Channel-last x, for any shape, with or without history and final states: inference (its own
    channels-last 2-D conv) and training (values and gradients) are the reference's."""
    monkeypatch.setenv("SEQMAMBA_BACKEND", "torch")
    inputs = channel_last(make_inputs(batch, dim, seqlen, width, bias=bias, init=init, seed=seed))
    assert inputs[0].stride(1) == 1
    assert_inference_matches_reference(inputs, activation, 1e-10, 1e-10)
    assert_matches_reference(inputs, torch.float64, activation)


@pytest.mark.parametrize(("width", "seqlen", "activation", "bias", "init"), CASES)
def test_torch_path_channel_last_float32(monkeypatch, width, seqlen, activation, bias, init):
    monkeypatch.setenv("SEQMAMBA_BACKEND", "torch")
    inputs = channel_last(make_inputs(2, 5, seqlen, width, bias=bias, init=init, seed=width * 100 + seqlen))
    assert_inference_matches_reference(cast(inputs, torch.float32), activation, *TOL[torch.float32])
    assert_matches_reference(inputs, torch.float32, activation)


def test_torch_path_output_follows_the_input_layout(monkeypatch):
    """Inference on channel-last x gives channel-last y (what reads the conv's output next reads rows
    in place); (batch, dim, seqlen) storage, or a gradient to compute, gives (batch, dim, seqlen) y."""
    monkeypatch.setenv("SEQMAMBA_BACKEND", "torch")
    inputs = [None if t is None else t.detach().float() for t in make_inputs(2, 6, 40, 4)]
    x, weight, bias, _ = inputs
    rows = channel_last(inputs)[0]
    with torch.no_grad():
        assert causal_conv1d_fn(rows, weight, bias, activation="silu").stride(1) == 1
        assert causal_conv1d_fn(x, weight, bias, activation="silu").stride(1) == 40
    assert causal_conv1d_fn(rows, weight.requires_grad_(), bias, activation="silu").stride(1) == 40


def test_torch_path_bfloat16_uses_fp32_math(monkeypatch):
    """bf16 in, bf16 out, with fp32 arithmetic: as close as one final rounding to bf16 allows."""
    monkeypatch.setenv("SEQMAMBA_BACKEND", "torch")
    x, weight, bias, init = (t.detach().bfloat16() for t in make_inputs(2, 8, 33, 4, init=True, seed=3))
    y = causal_conv1d_fn(x, weight, bias, initial_states=init, activation="silu")
    want = causal_conv1d_ref(x.double(), weight.double(), bias.double(), initial_states=init.double(),
                             activation="silu")
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.double(), want, rtol=2**-8, atol=1e-6)


@pytest.mark.parametrize("width", [2, 4])
def test_chunks_carrying_state_equal_one_pass(backend, width):
    """Feeding the final states of one chunk as the initial states of the next reproduces the
    whole-sequence output, and gradients flow back across the chunk boundaries."""
    x, weight, bias, init = (t.detach().float().requires_grad_() for t in make_inputs(2, 4, 19, width, init=True))
    dy = torch.randn(2, 4, 19, generator=torch.Generator().manual_seed(5))
    whole = causal_conv1d_fn(x, weight, bias, initial_states=init, activation="silu")
    g_whole = torch.autograd.grad((whole * dy).sum(), (x, weight, bias, init))

    state, pieces = init, []
    for lo, hi in ((0, 1), (1, 8), (8, 19)):  # a one-step chunk, then chunks longer than the window
        y, state = causal_conv1d_fn(x[..., lo:hi], weight, bias, initial_states=state, return_final_states=True,
                                    activation="silu")
        pieces.append(y)
    chunked = torch.cat(pieces, dim=-1)
    g_chunked = torch.autograd.grad((chunked * dy).sum(), (x, weight, bias, init))
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-6)
    for name, a, b in zip(("x", "weight", "bias", "initial_states"), g_chunked, g_whole):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=name)


def test_final_states_out_is_filled_and_returned(backend):
    """The caller's buffer receives the last width - 1 inputs, is returned, and passes gradients."""
    x = torch.randn(2, 3, 6, generator=torch.Generator().manual_seed(2), requires_grad=True)
    weight = torch.randn(3, 4)
    out = torch.full((2, 3, 3), float("nan"))
    _, final = causal_conv1d_fn(x, weight, return_final_states=True, final_states_out=out)
    assert final is out
    torch.testing.assert_close(out, x.detach()[..., -3:])
    (dx,) = torch.autograd.grad(final.sum(), x)
    torch.testing.assert_close(dx, (torch.arange(6) >= 3).float().expand(2, 3, 6))


def test_non_contiguous_input(backend):
    """A (batch, seqlen, dim) tensor viewed as (batch, dim, seqlen) gives the same result."""
    x, weight, bias, _ = (t.detach().float() if t is not None else None for t in make_inputs(2, 6, 13, 3))
    strided = x.transpose(1, 2).contiguous().transpose(1, 2)
    assert not strided.is_contiguous()
    torch.testing.assert_close(causal_conv1d_fn(strided, weight, bias, activation="silu"),
                               causal_conv1d_ref(x, weight, bias, activation="silu"))


@pytest.mark.parametrize("backend_name", ["reference", "torch", pytest.param("triton", marks=needs_triton)])
@pytest.mark.parametrize("width", [2, 3, 4])
def test_update_steps_equal_the_whole_sequence(monkeypatch, backend_name, width):
    """Decoding one step at a time with causal_conv1d_update reproduces causal_conv1d_fn, and the
    conv_state ends holding the final states."""
    monkeypatch.setenv("SEQMAMBA_BACKEND", backend_name)
    x, weight, bias, init = (t.detach().float() for t in make_inputs(2, 5, 9, width, init=True, seed=width))
    want, want_final = causal_conv1d_ref(x, weight, bias, initial_states=init, return_final_states=True,
                                         activation="silu")
    # conv_state holds the last `width` inputs; its oldest column drops out at the first step.
    conv_state = torch.cat([torch.randn(2, 5, 1), init], dim=-1)
    steps = [causal_conv1d_update(x[..., t], conv_state, weight, bias, "silu") for t in range(x.shape[-1])]
    torch.testing.assert_close(torch.stack(steps, dim=-1), want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(conv_state[..., 1:], want_final)


@needs_triton
@pytest.mark.parametrize(("width", "activation", "bias"), [(2, None, True), (3, "silu", False), (4, "swish", True)])
def test_triton_update_matches_reference_float64(monkeypatch, width, activation, bias):
    from kernels.causal_conv1d.reference import causal_conv1d_update_ref

    monkeypatch.setenv("SEQMAMBA_BACKEND", "triton")
    g = torch.Generator().manual_seed(width)
    x, state = torch.randn(3, 7, generator=g), torch.randn(3, 7, width, generator=g)
    weight, b = torch.randn(7, width, generator=g), torch.randn(7, generator=g) if bias else None
    state_ref = state.double()
    want = causal_conv1d_update_ref(x.double(), state_ref, weight.double(), None if b is None else b.double(),
                                    activation)
    got = causal_conv1d_update(x, state, weight, b, activation)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(state.double(), state_ref)


BAD_CONV = [
    (lambda x, w, b, i, f: dict(x=x[0]), "x must have shape"),
    (lambda x, w, b, i, f: dict(weight=w[:-1]), "weight must have shape"),
    (lambda x, w, b, i, f: dict(weight=torch.randn(4, 5)), "width must be 2, 3 or 4"),
    (lambda x, w, b, i, f: dict(bias=b[:-1]), "bias must have shape"),
    (lambda x, w, b, i, f: dict(initial_states=i[..., :-1]), "initial_states must have shape"),
    (lambda x, w, b, i, f: dict(return_final_states=True, final_states_out=f[:1]), "final_states_out must have"),
    (lambda x, w, b, i, f: dict(x=x.long()), "x must be a floating-point tensor"),
    (lambda x, w, b, i, f: dict(bias=b.to("meta")), "bias on meta"),
    (lambda x, w, b, i, f: dict(activation="relu"), "activation must be"),
]


@pytest.mark.parametrize(("change", "message"), BAD_CONV)
def test_bad_arguments_name_the_argument(backend, change, message):
    x, w, b, i = torch.randn(2, 4, 6), torch.randn(4, 3), torch.randn(4), torch.randn(2, 4, 2)
    args = dict(x=x, weight=w, bias=b, initial_states=i, activation=None) | change(x, w, b, i, torch.empty(2, 4, 2))
    with pytest.raises((ValueError, TypeError), match=message):
        causal_conv1d_fn(**args)


BAD_UPDATE = [
    (lambda x, s, w: dict(x=x[0]), "x must have shape"),
    (lambda x, s, w: dict(conv_state=s[..., :-1]), "conv_state must have shape"),
    (lambda x, s, w: dict(weight=w[:-1]), "weight must have shape"),
    (lambda x, s, w: dict(weight=torch.randn(4, 1), conv_state=s[..., :1]), "width must be 2, 3 or 4"),
    (lambda x, s, w: dict(conv_state=s.long()), "conv_state must be a floating-point tensor"),
    (lambda x, s, w: dict(activation="gelu"), "activation must be"),
]


@pytest.mark.parametrize("backend_name", ["reference", pytest.param("triton", marks=needs_triton)])
@pytest.mark.parametrize(("change", "message"), BAD_UPDATE)
def test_bad_update_arguments_name_the_argument(monkeypatch, backend_name, change, message):
    monkeypatch.setenv("SEQMAMBA_BACKEND", backend_name)
    x, s, w = torch.randn(2, 4), torch.randn(2, 4, 3), torch.randn(4, 3)
    args = dict(x=x, conv_state=s, weight=w, bias=None, activation=None) | change(x, s, w)
    with pytest.raises((ValueError, TypeError), match=message):
        causal_conv1d_update(**args)


def test_seq_idx_is_refused():
    x, w = torch.randn(1, 2, 5), torch.randn(2, 4)
    with pytest.raises(NotImplementedError, match="seq_idx"):
        causal_conv1d_fn(x, w, seq_idx=torch.zeros(1, 5, dtype=torch.int32))


# ---- GPU: the Triton kernels natively, fp32 and bf16 (run with `-m gpu` on the H200) -------------

@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("width", "seqlen", "activation", "init"),
                         [(2, 1, None, True), (3, 1000, "silu", False), (4, 4099, "silu", True), (4, 3, None, True)])
def test_gpu_triton_matches_reference(dtype, width, seqlen, activation, init):
    inputs = make_inputs(3, 80, seqlen, width, init=init, seed=seqlen)
    # The reference sees the inputs rounded to dtype, so only the kernel's own error is measured.
    inputs = [None if t is None else t.detach().to(dtype).double().requires_grad_() for t in inputs]
    y_ref, f_ref, g_ref = run_with_grads(causal_conv1d_ref, inputs, activation)
    y, f, grads = run_with_grads(causal_conv1d_fn, cast(inputs, dtype, "cuda"), activation)
    rtol, atol = TOL[dtype]
    torch.testing.assert_close(y.cpu().double(), y_ref, rtol=rtol, atol=atol)
    torch.testing.assert_close(f.cpu().double(), f_ref, rtol=rtol, atol=atol)
    for name, got, want in zip(("x", "weight", "bias", "initial_states"), grads, g_ref):
        scale = want.abs().max().item() if name in ("weight", "bias") else 1.0
        torch.testing.assert_close(got.cpu().double(), want, rtol=rtol, atol=atol * max(1.0, scale), msg=name)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gpu_update_steps_equal_the_whole_sequence(dtype):
    x, weight, bias, init = (t.detach().to("cuda", dtype) for t in make_inputs(2, 300, 17, 4, init=True, seed=2))
    want = causal_conv1d_ref(x.double(), weight.double(), bias.double(), initial_states=init.double(),
                             activation="silu")
    conv_state = torch.cat([torch.randn_like(init[..., :1]), init], dim=-1)
    steps = [causal_conv1d_update(x[..., t], conv_state, weight, bias, "silu") for t in range(17)]
    rtol, atol = TOL[dtype]
    torch.testing.assert_close(torch.stack(steps, dim=-1).double(), want, rtol=rtol, atol=atol)
