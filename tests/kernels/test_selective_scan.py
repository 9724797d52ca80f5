"""The PyTorch (chunked) selective scan against the float64 sequential reference.

Specification: ``selective_scan_fn`` on CPU tensors equals ``selective_scan_ref`` in values and in
the gradient of every input, for every form of B and C, every optional argument, any sequence
length, and any chunk / block partition of the sequence; carrying the state across calls equals one
pass, gradients included; realistic and extreme parameters stay finite; bad arguments are named.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kernels import selective_scan_fn, selective_scan_ref
from kernels.selective_scan import chunked

F64 = torch.float64
INPUTS = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state")


@pytest.fixture(autouse=True)
def torch_backend(monkeypatch):
    monkeypatch.setenv("SEQMAMBA_BACKEND", "torch")


def make_case(seed, batch=2, dim=4, dstate=3, seqlen=9, b_form="single", c_form="single", groups=(2, 2),
              D=True, z=True, delta_bias=True, initial_state=True, dtype=F64, softplus=True):
    """Random arguments (never zeros); ``*_form`` is "invariant", "single" (3-d) or "grouped" (4-d)."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *shape: torch.randn(*shape, generator=g, dtype=F64)

    def bc(form, ngroups):
        if form == "invariant":
            return r(dim, dstate)
        if form == "single":
            return r(batch, dstate, seqlen)
        return r(batch, ngroups, dstate, seqlen)

    delta = r(batch, dim, seqlen) if softplus else torch.rand(batch, dim, seqlen, generator=g, dtype=F64) * 2
    args = {
        "u": r(batch, dim, seqlen), "delta": delta,
        "A": -torch.exp(r(dim, dstate)),  # negative real, as Mamba's -exp(A_log)
        "B": bc(b_form, groups[0]), "C": bc(c_form, groups[1]),
        "D": r(dim) if D else None, "z": r(batch, dim, seqlen) if z else None,
        "delta_bias": r(dim) * 0.5 if delta_bias else None,
        "initial_state": r(batch, dim, dstate) if initial_state else None,
    }
    return {k: (v.to(dtype) if v is not None else None) for k, v in args.items()}


def run(fn, args, softplus=True, **kw):
    """fn(...) with return_last_state=True; absent optional arguments are None."""
    a = {name: args.get(name) for name in INPUTS}
    return fn(*(a[name] for name in INPUTS[:-1]), softplus, True, initial_state=a["initial_state"], **kw)


def double(args):
    return {k: (v.detach().double() if v is not None else None) for k, v in args.items()}


def value_and_grads(fn, args, cotangents, softplus=True, **kw):
    """Output, last state and the gradients of <out, g_out> + <last, g_last> for every tensor input."""
    leaves = {k: v.detach().clone().requires_grad_() for k, v in args.items() if v is not None}
    out, last = run(fn, {**args, **leaves}, softplus, **kw)
    loss = (out.double() * cotangents[0]).sum() + (last.double() * cotangents[1]).sum()
    grads = torch.autograd.grad(loss, list(leaves.values()))
    return out, last, dict(zip(leaves, grads))


def assert_matches_reference(args, softplus=True, rtol=1e-9, atol=1e-11, **kw):
    """``scan_chunked`` (the two-level torch engine unless ``engine`` says otherwise) against the
    reference: values and every gradient, through a loss on both out and the last state."""
    kw.setdefault("engine", "torch")
    g = torch.Generator().manual_seed(1)
    batch, dim, seqlen = args["u"].shape
    cot = (torch.randn(batch, dim, seqlen, generator=g, dtype=F64),
           torch.randn(batch, dim, args["A"].shape[1], generator=g, dtype=F64))
    out, last, grads = value_and_grads(chunked.scan_chunked, args, cot, softplus, **kw)
    ref_out, ref_last, ref_grads = value_and_grads(selective_scan_ref, args, cot, softplus)
    torch.testing.assert_close(out, ref_out, rtol=rtol, atol=atol)
    torch.testing.assert_close(last, ref_last, rtol=rtol, atol=atol)
    assert grads.keys() == ref_grads.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=rtol, atol=atol,
                                   msg=lambda m, n=name: f"{n}: {m}")


FORMS = ("invariant", "single", "grouped")


@st.composite
def cases(draw):
    """Shapes, forms, options and a chunk / block plan; lengths cluster on 1, primes and chunk edges."""
    chunk_len = draw(st.one_of(st.none(), st.integers(1, 6)))
    edge = (chunk_len or 4) * draw(st.integers(1, 4)) + draw(st.sampled_from([-1, 0, 1]))
    seqlen = draw(st.one_of(st.sampled_from([1, 2, 3, 5, 7, 11, 13, 31]), st.just(max(edge, 1))))
    groups = (draw(st.sampled_from([1, 2, 4])), draw(st.sampled_from([1, 2, 4])))
    kw = dict(
        seed=draw(st.integers(0, 2**16)), batch=draw(st.integers(1, 2)), dim=4 * draw(st.integers(1, 2)),
        dstate=draw(st.integers(1, 4)), seqlen=seqlen, groups=groups,
        b_form=draw(st.sampled_from(FORMS)), c_form=draw(st.sampled_from(FORMS)),
        D=draw(st.booleans()), z=draw(st.booleans()), delta_bias=draw(st.booleans()),
        initial_state=draw(st.booleans()), softplus=draw(st.booleans()),
    )
    block_len = draw(st.one_of(st.none(), st.integers(1, 12)))
    return kw, chunk_len, block_len


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_values_and_gradients_match_reference(case):
    kw, chunk_len, block_len = case
    assert_matches_reference(make_case(**kw), kw["softplus"], chunk_len=chunk_len, block_len=block_len)


@pytest.mark.parametrize("seqlen", [1, 63, 64, 65, 257])
def test_public_entry_point_matches_reference_with_default_plan(seqlen):
    args = make_case(3, batch=2, dim=8, dstate=4, seqlen=seqlen, b_form="grouped", c_form="single")
    out, last = run(selective_scan_fn, args)
    ref_out, ref_last = run(selective_scan_ref, args)
    torch.testing.assert_close(out, ref_out, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(last, ref_last, rtol=1e-10, atol=1e-12)


def test_plan_covers_the_sequence_in_whole_chunks(monkeypatch):
    for lanes, seqlen in [(1, 1), (4096, 4096), (64, 10**6), (10**7, 100)]:
        T, block = chunked.plan(lanes, seqlen)
        assert T >= 1 and block % T == 0 and block >= T
        assert block <= max(T, seqlen, 1) + T  # never more than one padded chunk past the sequence
        assert lanes * block <= max(chunked.BLOCK_ELEMS, lanes * T) + lanes * T  # memory bound per block
    with pytest.raises(ValueError, match="chunk_len"):
        chunked.plan(16, 100, chunk_len=0)


def test_memory_saved_for_backward_is_far_below_one_state_per_step(monkeypatch):
    """Autograd keeps per block only its small inputs and chunk-start states, never (dim, dstate)
    per time step, so training memory does not grow with seqlen * dstate."""
    batch, dim, dstate, seqlen = 1, 32, 16, 2000
    monkeypatch.setattr(chunked, "BLOCK_ELEMS", batch * dim * dstate * 256)  # several blocks
    args = make_case(4, batch, dim, dstate, seqlen, D=False, z=False, delta_bias=False, softplus=False,
                     dtype=torch.float32)
    leaves = {k: v.requires_grad_() for k, v in args.items() if v is not None}
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        out, last = run(functools.partial(chunked.scan_chunked, engine="torch"), leaves, softplus=False)
    # a graph of per-step ops would save several (dim, dstate) tensors per step: > 2 * this bound
    assert sum(saved) < 0.5 * batch * dim * dstate * seqlen
    (out.sum() + last.sum()).backward()
    assert all(torch.isfinite(v.grad).all() for v in leaves.values())


def test_carrying_the_state_across_calls_equals_one_pass_with_gradients():
    """Truncated back-propagation: gradients reach the first initial_state and flow through every
    returned state, exactly as in one pass over the whole sequence."""
    args = make_case(5, batch=2, dim=8, dstate=4, seqlen=50, b_form="grouped", c_form="grouped", groups=(2, 4))
    g = torch.Generator().manual_seed(2)
    cot = torch.randn(2, 8, 50, generator=g, dtype=F64), torch.randn(2, 8, 4, generator=g, dtype=F64)
    whole_out, whole_last, whole_grads = value_and_grads(selective_scan_fn, args, cot)

    leaves = {k: v.detach().clone().requires_grad_() for k, v in args.items()}
    state, outs = leaves["initial_state"], []
    cuts = [0, 1, 14, 15, 37, 50]
    for lo, hi in zip(cuts, cuts[1:]):
        piece = {k: (v[..., lo:hi] if k in ("u", "delta", "z") or (k in "BC" and v.dim() > 2) else v)
                 for k, v in leaves.items()}
        piece["initial_state"] = state
        out, state = run(selective_scan_fn, piece)
        outs.append(out)
    out = torch.cat(outs, dim=-1)
    torch.testing.assert_close(out, whole_out, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(state, whole_last, rtol=1e-10, atol=1e-12)
    loss = (out * cot[0]).sum() + (state * cot[1]).sum()
    grads = dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values()))))
    for name in INPUTS:
        torch.testing.assert_close(grads[name], whole_grads[name], rtol=1e-9, atol=1e-11, msg=name)


def test_gradient_of_the_last_state_alone_reaches_every_input_of_the_state():
    """Everything but C, D and z (which only shape the output) moves the last state."""
    args = make_case(6, seqlen=20, D=False, z=False)
    leaves = {k: v.requires_grad_() for k, v in args.items() if v is not None and k != "C"}
    _, last = run(selective_scan_fn, {**args, **leaves})
    grads = torch.autograd.grad(last.square().sum(), list(leaves.values()))
    ref_leaves = {k: v.detach().clone().requires_grad_() for k, v in leaves.items()}
    _, ref_last = run(selective_scan_ref, {**args, **ref_leaves})
    ref_grads = torch.autograd.grad(ref_last.square().sum(), list(ref_leaves.values()))
    for name, a, b in zip(leaves, grads, ref_grads):
        assert b.abs().sum() > 0, name
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=name)


def realistic(seed, seqlen, delta_max=None, dtype=torch.float32):
    """Mamba's own ranges: A = -(1..16) per channel, delta = softplus(N(0,1)) or up to ``delta_max``."""
    args = make_case(seed, batch=2, dim=16, dstate=16, seqlen=seqlen, delta_bias=False, dtype=F64)
    args["A"] = -torch.arange(1, 17, dtype=F64).repeat(16, 1)
    if delta_max is not None:  # uniform in [0, delta_max], with a run of the extreme itself
        g = torch.Generator().manual_seed(seed)
        args["delta"] = torch.rand(2, 16, seqlen, generator=g, dtype=F64) * delta_max
        args["delta"][..., seqlen // 3: seqlen // 2] = delta_max
    return {k: (v.to(dtype) if v is not None else None) for k, v in args.items()}


@pytest.mark.parametrize("delta_max", [None, 5.0, 1e-4])
def test_realistic_and_extreme_parameters_stay_finite_and_accurate(delta_max):
    """fp32 against the float64 reference over 600 steps: strong decays (exp(-80) per step) must not
    overflow or produce NaN; tiny ones (long memory) must not drift."""
    args = realistic(7, 600, delta_max)
    softplus = delta_max is None
    leaves = {k: v.requires_grad_() for k, v in args.items() if v is not None}
    out, last = run(selective_scan_fn, leaves, softplus)
    (out.sum() + last.square().sum()).backward()
    ref_out, ref_last = run(selective_scan_ref, double(leaves), softplus)
    for name, v in leaves.items():
        assert torch.isfinite(v.grad).all(), name
    scale = ref_out.abs().max()
    torch.testing.assert_close(out.double(), ref_out, rtol=1e-4, atol=1e-5 * scale)
    torch.testing.assert_close(last.double(), ref_last, rtol=1e-4, atol=1e-5 * ref_last.abs().max())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_inputs_compute_in_fp32(dtype):
    """bf16 / fp16 in, same dtype out, close to the float64 reference of the same (rounded) inputs;
    the last state comes back in fp32."""
    args = realistic(8, 300, dtype=dtype)
    out, last = run(selective_scan_fn, args)
    assert out.dtype == dtype and last.dtype == torch.float32
    ref_out, ref_last = run(selective_scan_ref, double(args))
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(out.double(), ref_out, rtol=2 * eps, atol=2 * eps * ref_out.abs().max())
    torch.testing.assert_close(last.double(), ref_last, rtol=1e-5, atol=1e-5 * ref_last.abs().max())


def test_float32_and_float64_keep_their_dtypes():
    for dtype in (torch.float32, F64):
        out, last = run(selective_scan_fn, make_case(9, dtype=dtype))
        assert out.dtype == dtype and last.dtype == dtype
    out = selective_scan_fn(*(make_case(9)[k] for k in ("u", "delta", "A", "B", "C")))
    assert isinstance(out, torch.Tensor)  # return_last_state=False: the output alone


def test_non_contiguous_inputs_give_the_same_result():
    args = make_case(10, batch=2, dim=8, dstate=4, seqlen=17, b_form="grouped", c_form="invariant")
    strided = {}
    for k, v in args.items():
        # same values, different memory: transposed copies viewed back, or every other element
        wide = torch.stack([v, torch.full_like(v, float("nan"))], dim=-1)
        strided[k] = wide[..., 0] if k != "A" else v.t().contiguous().t()
        assert not strided[k].is_contiguous()
    for got, want in zip(run(selective_scan_fn, strided), run(selective_scan_fn, args)):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_sequence_of_length_zero_returns_empty_output_and_the_initial_state():
    args = make_case(11, seqlen=0)
    out, last = run(selective_scan_fn, args)
    assert out.shape == (2, 4, 0)
    torch.testing.assert_close(last, args["initial_state"])


BAD = [
    ("u", lambda a: {"u": a["u"][0]}),
    ("delta", lambda a: {"delta": a["delta"][..., :-1]}),
    ("A", lambda a: {"A": a["A"][:-1]}),
    ("A", lambda a: {"A": a["A"][None]}),
    ("B", lambda a: {"B": a["B"][..., :-1]}),
    ("C", lambda a: {"C": a["C"][0]}),
    ("B", lambda a: {"B": torch.randn(2, 3, 3, 9, dtype=F64)}),  # dim 4 not divisible by 3 groups
    ("C", lambda a: {"C": torch.randn(5, 3, dtype=F64)}),
    ("D", lambda a: {"D": a["D"][:-1]}),
    ("z", lambda a: {"z": a["z"][:1]}),
    ("delta_bias", lambda a: {"delta_bias": a["delta_bias"][None]}),
    ("initial_state", lambda a: {"initial_state": a["initial_state"][..., :-1]}),
]


@pytest.mark.parametrize("name,change", BAD, ids=[f"{n}-{i}" for i, (n, _) in enumerate(BAD)])
def test_bad_shapes_raise_errors_naming_the_argument(name, change):
    args = make_case(12)
    with pytest.raises(ValueError, match=rf"^{name}\b"):
        run(selective_scan_fn, {**args, **change(args)})


def test_integer_inputs_are_rejected_by_name():
    args = make_case(13)
    with pytest.raises(TypeError, match=r"^u\b"):
        run(selective_scan_fn, {**args, "u": args["u"].long()})


def test_softplus_of_large_deltas_matches_reference():
    """delta_softplus on large raw values (softplus(x) ~ x) goes through torch's stable softplus."""
    args = make_case(14, seqlen=12)
    args["delta"] = args["delta"] * 30
    assert_matches_reference(args, True, rtol=1e-8, atol=1e-10)


def test_one_chunk_per_step_and_one_block_per_step_are_exact():
    args = make_case(15, seqlen=10, b_form="invariant", c_form="grouped")
    assert_matches_reference(args, chunk_len=1, block_len=1)
    assert_matches_reference(args, chunk_len=1, block_len=10)
    assert_matches_reference(args, chunk_len=10, block_len=10)


def test_larger_shape_against_reference_in_float32():
    """A shape in the benchmark's regime (several hundred steps, 16 states) in fp32, default plan."""
    args = realistic(16, 700)
    out, last = run(selective_scan_fn, args)
    ref_out, ref_last = run(selective_scan_ref, double(args))
    torch.testing.assert_close(out.double(), ref_out, rtol=1e-4, atol=1e-5 * ref_out.abs().max())
    assert F.cosine_similarity(last.double().flatten(), ref_last.flatten(), dim=0) > 1 - 1e-9


# The numba forward (cpu_numba): what inference on CPU tensors runs when numba is installed.

needs_numba = pytest.mark.skipif(chunked.numba_scan() is None, reason="numba is not installed")


def numba_fwd(*args, **kw):
    return chunked.scan_chunked(*args, engine="numba", **kw)


@needs_numba
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases(), st.sampled_from([torch.float32, F64]))
def test_numba_forward_matches_reference(case, dtype):
    """Every form of B and C, every option, odd lengths, ngroups > 1; float64 runs the exact exp,
    float32 the vectorised one (plus the exact one where delta < 0 without softplus)."""
    kw, _, _ = case
    args = make_case(**{**kw, "dtype": dtype})
    out, last = run(numba_fwd, args, kw["softplus"])
    ref_out, ref_last = run(selective_scan_ref, double(args), kw["softplus"])
    assert out.dtype == dtype and last.dtype == dtype
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == F64 else dict(rtol=2e-5, atol=2e-5)
    torch.testing.assert_close(out.double(), ref_out, **tol)
    torch.testing.assert_close(last.double(), ref_last, **tol)


@needs_numba
@pytest.mark.parametrize("delta_max", [None, 5.0, 1e-4])
def test_numba_forward_realistic_and_extreme_parameters(delta_max):
    """fp32, Mamba's ranges over 600 steps (as for the torch path): finite and close to float64."""
    args = realistic(7, 600, delta_max)
    out, last = run(numba_fwd, args, delta_max is None)
    ref_out, ref_last = run(selective_scan_ref, double(args), delta_max is None)
    assert torch.isfinite(out).all() and torch.isfinite(last).all()
    torch.testing.assert_close(out.double(), ref_out, rtol=1e-4, atol=1e-5 * ref_out.abs().max())
    torch.testing.assert_close(last.double(), ref_last, rtol=1e-4, atol=1e-5 * ref_last.abs().max())


def ulps(got: torch.Tensor, want: torch.Tensor) -> torch.Tensor:
    """|got - want| in units of float32's spacing at want (float64 ``want``)."""
    spacing = torch.finfo(torch.float32).eps * want.abs().clamp_min(torch.finfo(torch.float32).tiny)
    return (got.double() - want).abs() / spacing


@needs_numba
def test_numba_fp32_exp_softplus_and_silu_are_within_a_few_ulp():
    """One step from a unit state isolates each function the fp32 kernel computes its own way:
    y = exp(dt A) with B = 0, h0 = 1, C = 1; y = softplus(delta) with h0 = 0, u = B = C = 1;
    out = u silu(z) with B = 0, D = 1."""
    n = 20001
    floor = math.log(torch.finfo(torch.float32).tiny) + 1  # exp's floor, as in the chunked path
    dt = torch.cat([torch.linspace(0, -floor - 1e-3, n - 1000, dtype=F64), torch.linspace(87, 200, 1000, dtype=F64)])
    dt = dt[None, :, None]  # dt * A from 0 to just above the floor, then below it (A = -1)
    one = torch.ones(1, n, 1, dtype=F64)
    f32 = lambda *ts: [t.float() if t is not None else None for t in ts]
    A, Bz, Cw = -torch.ones(n, 1, dtype=F64), torch.zeros(n, 1, dtype=F64), torch.ones(n, 1, dtype=F64)
    exp_out = numba_fwd(*f32(one, dt, A, Bz, Cw), initial_state=torch.ones(1, n, 1))
    assert ulps(exp_out[:, : n - 1000], torch.exp(-dt.float().double()[:, : n - 1000])).max() <= 2
    below = exp_out[:, n - 1000:]  # floored: tiny, positive, never subnormal
    assert (below >= torch.finfo(torch.float32).tiny).all() and (below < 1e-37).all()

    raw = torch.linspace(-100, 100, n, dtype=F64)[None, :, None]
    sp_out = numba_fwd(*f32(one, raw, A, Cw, Cw), delta_softplus=True)
    want = F.softplus(raw.float().double())
    tiny = want < 1e-30  # exp(v) below the floor: absolute error only
    assert ulps(sp_out, want)[~tiny].max() <= 4 and (sp_out[tiny] - want[tiny]).abs().max() < 1e-37

    z = torch.linspace(-90, 90, n, dtype=F64)[None, :, None]
    silu_out = numba_fwd(*f32(one, one, A, Bz, Cw, torch.ones(n, dtype=F64), z))
    want = F.silu(z.float().double())
    tiny = want.abs() < 1e-30  # below the exp floor: absolute error only
    assert ulps(silu_out, want)[~tiny].max() <= 4 and silu_out[tiny].abs().max() < 1e-30


@needs_numba
def test_numba_positive_decays_take_the_exact_exp():
    """A > 0 (dt A > 0: a growing state) is outside the fast exp's range: the result still matches."""
    args = make_case(21, seqlen=15, dtype=torch.float32)
    args["A"] = args["A"].abs() * 0.3
    out, last = run(numba_fwd, args)
    ref_out, ref_last = run(selective_scan_ref, double(args))
    torch.testing.assert_close(out.double(), ref_out, rtol=1e-5, atol=1e-5 * ref_out.abs().max())
    torch.testing.assert_close(last.double(), ref_last, rtol=1e-5, atol=1e-5 * ref_last.abs().max())


def channel_last_view(t):
    """The same values as a (batch, channels, seqlen) tensor whose memory is (batch, seqlen, channels):
    the transposed view a projection's output gives the Mamba block."""
    return t.transpose(1, 2).contiguous().transpose(1, 2)


def channel_last_rows(args):
    """A case with u, delta and z as channel-last views, as the Mamba block passes them."""
    return {k: channel_last_view(v) if k in ("u", "delta", "z") else v for k, v in args.items()}


@needs_numba
@pytest.mark.parametrize("dim,seqlen,forms", [(8, 17, ("single", "invariant")), (80, 70, ("grouped", "single")),
                                              (130, 33, ("invariant", "grouped"))])
def test_numba_reads_channel_last_inputs_in_place_with_identical_values_and_gradients(dim, seqlen, forms):
    """u, delta and z laid out channel-last (as the Mamba block passes them, uncopied) give bit-identical
    outputs, states and gradients to contiguous ones, across channel blocks (64 wide) and step tiles (32);
    the output is written channel-last, so the block's output projection reads it in place."""
    args = make_case(11, batch=2, dim=dim, dstate=4, seqlen=seqlen, b_form=forms[0], c_form=forms[1],
                     groups=(2, 2), dtype=torch.float32)
    strided = channel_last_rows(args)
    assert strided["u"].stride(1) == 1 and not strided["u"].is_contiguous()
    g = torch.Generator().manual_seed(5)
    cot = (torch.randn(2, dim, seqlen, generator=g, dtype=F64), torch.randn(2, dim, 4, generator=g, dtype=F64))
    out, last, grads = value_and_grads(numba_fwd, strided, cot)
    want_out, want_last, want_grads = value_and_grads(numba_fwd, args, cot)
    assert out.stride(1) == 1  # channel-last output
    torch.testing.assert_close(out, want_out, rtol=0, atol=0)
    torch.testing.assert_close(last, want_last, rtol=0, atol=0)
    for name in want_grads:
        torch.testing.assert_close(grads[name], want_grads[name], rtol=0, atol=0, msg=name)
    ref_out, ref_last = run(selective_scan_ref, double(args))
    torch.testing.assert_close(out.double(), ref_out, rtol=1e-4, atol=1e-5 * ref_out.abs().max())


@needs_numba
def test_numba_compiles_one_scan_per_dtype_whatever_the_layouts():
    """Contiguous, channel-last and single-sequence (Fortran-ordered to numpy) inputs, forward and
    backward, all run the same compiled variant: a variant per layout combination once cost CI minutes."""
    import numpy as np

    from kernels.selective_scan import cpu_numba, cpu_numba_bwd

    for batch in (1, 2):
        args = make_case(12, batch=batch, dim=24, dstate=4, seqlen=20, dtype=torch.float32)
        for case in (args, channel_last_rows(args)):
            cot = (torch.randn(batch, 24, 20, dtype=F64), torch.randn(batch, 24, 4, dtype=F64))
            value_and_grads(numba_fwd, case, cot)
    f32 = np.dtype(np.float32)
    assert len(cpu_numba._scan.compiled(f32).overloads) == 1
    assert len(cpu_numba_bwd._scan_bwd.compiled(f32).overloads) == 1


@needs_numba
def test_numba_runs_on_cpu_tensors_for_inference_and_training():
    args = make_case(22, dtype=torch.float32)
    tensors = [args[k] for k in INPUTS]
    assert chunked._choose_engine(None, tensors) == "numba"
    leaf = args["u"].clone().requires_grad_()
    assert chunked._choose_engine(None, [leaf, *tensors[1:]]) == "numba"
    assert chunked._choose_engine("torch", [leaf, *tensors[1:]]) == "torch"
    with pytest.raises(ValueError, match="engine"):
        chunked._choose_engine("fortran", tensors)


# The numba backward (cpu_numba_bwd): what training on CPU tensors runs when numba is installed.


@needs_numba
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases(), st.integers(1, 9))
def test_numba_gradients_match_reference(case, ckpt):
    """Values and every gradient in float64, for every form of B and C, every option and odd
    lengths, with the stored-state interval anywhere from every step to longer than the sequence."""
    from kernels.selective_scan import cpu_numba_bwd

    kw, _, _ = case
    default, cpu_numba_bwd.CKPT_STEPS = cpu_numba_bwd.CKPT_STEPS, ckpt
    try:
        assert_matches_reference(make_case(**kw), kw["softplus"], rtol=1e-10, atol=1e-12, engine="numba")
    finally:
        cpu_numba_bwd.CKPT_STEPS = default


@needs_numba
@pytest.mark.parametrize("delta_max", [None, 5.0, 1e-4])
def test_numba_gradients_realistic_and_extreme_parameters_in_float32(delta_max):
    """fp32, Mamba's ranges over 600 steps (ten stored-state segments): every gradient finite and
    close to float64's, in the norm (sums over hundreds of steps round differently)."""
    args = realistic(25, 600, delta_max)
    softplus = delta_max is None
    g = torch.Generator().manual_seed(3)
    cot = (torch.randn(2, 16, 600, generator=g, dtype=F64), torch.randn(2, 16, 16, generator=g, dtype=F64))
    _, _, grads = value_and_grads(numba_fwd, args, cot, softplus)
    _, _, ref_grads = value_and_grads(selective_scan_ref, double(args), cot, softplus)
    assert grads.keys() == ref_grads.keys()
    for name, grad in grads.items():
        assert grad.dtype == torch.float32 and torch.isfinite(grad).all(), name
        err = (grad.double() - ref_grads[name]).norm() / ref_grads[name].norm()
        assert err < 1e-4, f"{name}: relative error {err:.1e}"


@needs_numba
def test_numba_training_saves_only_the_inputs():
    """The backward recomputes the states: autograd stores nothing larger than the inputs."""
    batch, dim, dstate, seqlen = 1, 32, 16, 2000
    args = make_case(4, batch, dim, dstate, seqlen, dtype=torch.float32)
    leaves = {k: v.requires_grad_() for k, v in args.items() if v is not None}
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        out, last = run(numba_fwd, leaves)
    assert sum(saved) <= sum(v.numel() for v in leaves.values())
    (out.sum() + last.sum()).backward()
    assert all(torch.isfinite(v.grad).all() for v in leaves.values())


@needs_numba
def test_numba_forward_is_safe_from_several_threads_at_once():
    """The app scores from several threads; numba's workqueue layer must never see two launches."""
    from concurrent.futures import ThreadPoolExecutor

    args = realistic(23, 200)
    want = run(numba_fwd, args)[0]
    with ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(lambda _: run(numba_fwd, args)[0], range(8)))
    for out in outs:
        torch.testing.assert_close(out, want, rtol=0, atol=0)


def test_without_numba_the_torch_path_serves_inference(monkeypatch):
    monkeypatch.setattr(chunked, "numba_scan", lambda: None)
    args = make_case(24, seqlen=40, b_form="grouped", c_form="invariant")
    assert chunked._choose_engine(None, [args[k] for k in INPUTS]) == "torch"
    with pytest.raises(RuntimeError, match="numba"):
        chunked._choose_engine("numba", [args[k] for k in INPUTS])
    out, last = run(selective_scan_fn, args)
    ref_out, ref_last = run(selective_scan_ref, args)
    torch.testing.assert_close(out, ref_out, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(last, ref_last, rtol=1e-10, atol=1e-12)


def test_kernels_import_without_numba_and_never_import_it_eagerly():
    """In a fresh interpreter: importing kernels loads no numba; with numba hidden, inference works."""
    import subprocess
    import sys

    code = (
        "import sys, torch\n"
        "import kernels\n"
        "assert 'numba' not in sys.modules, 'kernels imported numba eagerly'\n"
        "sys.modules['numba'] = None\n"  # as if it were not installed
        "from kernels.selective_scan import chunked\n"
        "assert chunked.numba_scan() is None\n"
        "u = torch.randn(1, 4, 9); A = -torch.rand(4, 2); B = torch.randn(1, 2, 9)\n"
        "with torch.no_grad():\n"
        "    out = kernels.selective_scan_fn(u, u.abs(), A, B, B)\n"
        "assert torch.allclose(out, kernels.selective_scan_ref(u, u.abs(), A, B, B), atol=1e-5)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**__import__("os").environ, "SEQMAMBA_BACKEND": "torch"})
    assert res.returncode == 0, res.stderr
