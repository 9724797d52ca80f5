"""The Triton selective scan against the float64 sequential reference: values and every gradient.

On a CPU-only machine the kernels run in Triton's interpreter (tests/conftest.py sets
TRITON_INTERPRET=1), small shapes, float32. The ``gpu`` tests run the same kernels natively in
fp32 / bf16 / fp16 at larger shapes. Every test runs once per backward kernel ("v1", "v2", "v3", "v4").
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kernels import selective_scan_fn, selective_scan_ref

triton = pytest.importorskip("triton")
triton_scan = pytest.importorskip("kernels.selective_scan.triton_scan")

GRAD_NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state")
ON_GPU = torch.cuda.is_available()


@pytest.fixture(autouse=True, params=triton_scan.BWD_KERNELS)
def bwd_kernel(request, monkeypatch):
    """Run the test with each backward kernel (the default launch parameters otherwise)."""
    default = triton_scan.default_config
    # v1 has its own launch (4-channel one-warp programs, the forward's chunk, no segments, no
    # register cap).
    v1 = (dict(bwd_block_d=4, bwd_num_warps=1, bwd_chunk_factor=1, bwd_segments=1, bwd_maxnreg=None)
          if request.param == "v1" else {})
    monkeypatch.setattr(triton_scan, "default_config",
                        lambda *a, **kw: dataclasses.replace(default(*a, **kw), bwd_kernel=request.param, **v1))
    return request.param


@pytest.fixture(autouse=True)
def triton_backend(monkeypatch):
    """Route ``selective_scan_fn`` to the Triton kernels; vectorise the interpreter's scan."""
    monkeypatch.setenv("SEQMAMBA_BACKEND", "triton")
    if not ON_GPU:
        _vectorise_interpreter_scan(monkeypatch)


def _vectorise_interpreter_scan(monkeypatch):
    """The interpreter folds ``tl.associative_scan`` one element at a time in Python (about a
    millisecond each). This fold is the same left fold, combine(acc, x) along the axis with the
    input flipped for ``reverse``, applied to whole slices across the other axes at once."""
    interp = pytest.importorskip("triton.runtime.interpreter")
    scan_ops = getattr(interp, "ScanOps", None)
    if scan_ops is None or not hasattr(scan_ops, "generic_scan"):
        return

    def generic_scan(self, inputs):
        datas = [t.handle.data for t in inputs]
        outs = [np.empty_like(d) for d in datas]
        acc = None
        for i in range(datas[0].shape[self.axis]):
            cur = tuple(self.to_tensor(np.take(d, i, axis=self.axis), t.dtype) for d, t in zip(datas, inputs))
            if acc is None:
                acc = cur
            else:
                ret = self.combine_fn.fn(*acc, *cur)
                acc = ret if isinstance(ret, tuple) else (ret,)
            index = (slice(None),) * self.axis + (i,)
            for out, a in zip(outs, acc):
                out[index] = a.handle.data
        return [self.to_tensor(o, t.dtype) for o, t in zip(outs, inputs)]

    monkeypatch.setattr(scan_ops, "generic_scan", generic_scan)


def make_inputs(batch, dim, seqlen, dstate, bc="shared", ngroups=1, *, seed=0, device="cpu",
                dtype=torch.float32, realistic=False):
    """Random inputs (never zeros). ``bc``: "invariant" (dim, dstate), "shared" (batch, dstate,
    seqlen) or "grouped" (batch, ngroups, dstate, seqlen). ``realistic``: A = -(1..dstate) per
    channel (S4D-real) and Δ before softplus up to 5."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    if realistic:
        A = -torch.arange(1, dstate + 1, dtype=torch.float32).repeat(dim, 1)
        delta = torch.rand(batch, dim, seqlen, generator=g) * 9.0 - 4.0  # softplus: ~0.02 .. ~5
    else:
        A = -(0.2 + 2.0 * torch.rand(dim, dstate, generator=g))
        delta = 0.5 * r(batch, dim, seqlen)
    if bc == "invariant":
        B, C = r(dim, dstate), r(dim, dstate)
    elif bc == "shared":
        B, C = r(batch, dstate, seqlen), r(batch, dstate, seqlen)
    else:
        B, C = r(batch, ngroups, dstate, seqlen), r(batch, ngroups, dstate, seqlen)
    t = dict(u=r(batch, dim, seqlen), delta=delta, A=A, B=B, C=C, D=r(dim), z=r(batch, dim, seqlen),
             delta_bias=0.3 * r(dim), initial_state=r(batch, dim, dstate))
    keep_fp32 = ("A", "D", "initial_state")  # as the Mamba block: fp32 parameters and state
    return {k: v.to(device=device, dtype=torch.float32 if k in keep_fp32 else dtype) for k, v in t.items()}


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """Norm-wise relative error of ``a`` against the reference ``b``."""
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def run(inputs, fn, *, softplus=True, omit=(), dtype=None, seed=1, last_loss=True):
    """Run ``fn`` with every input not in ``omit``; return out, last state and all gradients for a
    random cotangent on both outputs (seeded, so two calls see the same cotangents). With
    ``last_loss=False`` only out carries a cotangent: no gradient reaches the returned last state."""
    leaves = {k: (v.to(dtype) if dtype else v).detach().clone().requires_grad_(k not in omit)
              for k, v in inputs.items()}
    kw = {k: (None if k in omit else leaves[k]) for k in ("D", "z", "delta_bias")}
    out, last = fn(leaves["u"], leaves["delta"], leaves["A"], leaves["B"], leaves["C"], kw["D"], kw["z"],
                   kw["delta_bias"], softplus, True,
                   initial_state=None if "initial_state" in omit else leaves["initial_state"])
    g = torch.Generator().manual_seed(seed)
    d_out = torch.randn(out.shape, generator=g, dtype=torch.float64).to(out.device)
    d_last = torch.randn(last.shape, generator=g, dtype=torch.float64).to(out.device)
    loss = (out.double() * d_out).sum()
    if last_loss:
        loss = loss + (last.double() * d_last).sum()
    loss.backward()
    grads = {k: v.grad for k, v in leaves.items() if k not in omit}
    return out, last, grads


def use_config(monkeypatch, **kw):
    """Launch every kernel with an interpreter-sized config (4 channels, chunk 8, the v3 backward)
    overridden by ``kw``."""
    base = dict(block_d=4, chunk=8, num_warps=1, bwd_kernel="v3", bwd_block_d=4)
    monkeypatch.setattr(triton_scan, "CONFIG_OVERRIDE", triton_scan.ScanConfig(**{**base, **kw}))


def assert_matches_reference(inputs, *, softplus=True, omit=(), tol=2e-5, grad_tol=None):
    """Triton (through the public dispatcher) vs the float64 reference: out, last state, gradients.

    ``grad_tol``: {input name: tolerance} where a gradient needs its own (default ``tol``)."""
    out, last, grads = run(inputs, selective_scan_fn, softplus=softplus, omit=omit)
    ref_out, ref_last, ref_grads = run(inputs, selective_scan_ref, softplus=softplus, omit=omit,
                                       dtype=torch.float64)
    assert out.dtype == inputs["u"].dtype and last.dtype == torch.float32
    assert out.shape == ref_out.shape and last.shape == ref_last.shape
    assert torch.isfinite(out).all() and all(torch.isfinite(g).all() for g in grads.values())
    errors = {"out": rel_err(out, ref_out), "last": rel_err(last, ref_last)}
    errors.update({f"d{k}": rel_err(grads[k], ref_grads[k]) for k in grads})
    for k in grads:
        assert grads[k].shape == inputs[k].shape and grads[k].dtype == inputs[k].dtype, k
    limit = {k: (grad_tol or {}).get(k[1:], tol) for k in errors}
    bad = {k: e for k, e in errors.items() if not e <= limit[k]}
    assert not bad, f"relative errors above tolerance: {bad} (all: {errors})"


# --- values and gradients over shapes and options -------------------------------------------


@pytest.mark.parametrize(
    "batch,dim,seqlen,dstate,bc,ngroups",
    [
        (2, 6, 37, 4, "shared", 1),  # dim not a multiple of the channel block, 3 chunks
        (1, 8, 20, 3, "invariant", 1),  # dstate not a power of two
        (2, 8, 19, 4, "grouped", 2),  # groups aligned with channel blocks
        (1, 6, 23, 4, "grouped", 3),  # a channel block spans several groups
    ],
)
def test_matches_reference_with_every_option(batch, dim, seqlen, dstate, bc, ngroups):
    assert_matches_reference(make_inputs(batch, dim, seqlen, dstate, bc, ngroups, seed=seqlen))


@pytest.mark.parametrize("seqlen", [1, 2, 16, 17, 31, 32, 33])
def test_sequence_lengths_around_chunk_boundaries(seqlen):
    # The interpreter's chunk is 16 steps: 1 step, one partial chunk, exact multiples, one step over.
    assert_matches_reference(make_inputs(1, 4, seqlen, 4, seed=seqlen))


@pytest.mark.parametrize(
    "omit,softplus",
    [
        (("D", "z", "delta_bias", "initial_state"), False),
        (("z",), True),
        (("D", "delta_bias"), False),
        (("initial_state",), True),
    ],
)
def test_optional_arguments_off(omit, softplus):
    assert_matches_reference(make_inputs(2, 4, 21, 4, "grouped", 2, seed=7), omit=omit, softplus=softplus)


def test_realistic_and_extreme_parameters_stay_finite_and_accurate():
    # A = -(1..16) with Δ up to 5 after softplus: decays down to exp(-80), no overflow, no NaN.
    inputs = make_inputs(1, 4, 40, 16, realistic=True, seed=3)
    assert float(F.softplus(inputs["delta"] + inputs["delta_bias"][:, None]).max()) > 4.0
    assert_matches_reference(inputs, tol=5e-5)


def test_very_large_delta_and_no_softplus_underflow_cleanly():
    # exp(Δ A) falls to 1e-29 and below: the state forgets, nothing becomes NaN or inf.
    inputs = make_inputs(1, 4, 18, 4, seed=4)
    inputs["delta"] = 30.0 + inputs["delta"].abs()
    # dA sums r_t Δ_t (a_t h_{t-1}) with a_t h_{t-1} taken as h_t - b_t (as mamba_ssm does): an
    # absolute error of eps |b_t| on a term that is almost 0 here, hence the looser relative bound.
    assert_matches_reference(inputs, softplus=False, tol=5e-5, grad_tol={"A": 5e-3})


def test_non_contiguous_inputs():
    base = make_inputs(2, 4, 19, 4, seed=5)
    # Same values, transposed storage: (batch, seqlen, dim) memory viewed as (batch, dim, seqlen).
    strided = {k: (v.transpose(-1, -2).contiguous().transpose(-1, -2) if k in ("u", "delta", "z", "B", "C") else v)
               for k, v in base.items()}
    assert not strided["u"].is_contiguous()
    out_s, last_s, grads_s = run(strided, selective_scan_fn)
    out_c, last_c, grads_c = run(base, selective_scan_fn)
    assert torch.equal(out_s, out_c) and torch.equal(last_s, last_c)
    for k in grads_c:
        assert torch.equal(grads_s[k], grads_c[k]), k


# --- state carried across chunks of the sequence (truncated BPTT) ----------------------------


def test_chunked_with_initial_state_equals_one_pass_values_and_gradients():
    inputs = make_inputs(2, 4, 41, 4, seed=11)
    cuts = [0, 13, 16, 41]  # uneven pieces, one shorter than a kernel chunk

    def one_pass(u, delta, A, B, C, D, z, delta_bias, softplus, ret, *, initial_state):
        return selective_scan_fn(u, delta, A, B, C, D, z, delta_bias, softplus, ret, initial_state=initial_state)

    def in_pieces(u, delta, A, B, C, D, z, delta_bias, softplus, ret, *, initial_state):
        state, outs = initial_state, []
        for lo, hi in zip(cuts[:-1], cuts[1:]):
            out, state = selective_scan_fn(u[..., lo:hi], delta[..., lo:hi], A, B[..., lo:hi], C[..., lo:hi], D,
                                           z[..., lo:hi], delta_bias, softplus, True, initial_state=state)
            outs.append(out)
        return torch.cat(outs, dim=-1), state

    out1, last1, grads1 = run(inputs, one_pass)
    out2, last2, grads2 = run(inputs, in_pieces)
    assert rel_err(out2, out1) < 1e-6 and rel_err(last2, last1) < 1e-6
    for k in grads1:
        assert rel_err(grads2[k], grads1[k]) < 1e-5, k


def test_gradient_through_returned_state_alone():
    # Loss on the last state only: every input still gets the reference gradient.
    inputs = make_inputs(1, 4, 20, 4, seed=13)

    def loss(fn, dtype):
        leaves = {k: v.to(dtype).detach().requires_grad_() for k, v in inputs.items()}
        _, last = fn(*(leaves[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")), True, True,
                     initial_state=leaves["initial_state"])
        (last.double() ** 2).sum().backward()
        return {k: v.grad for k, v in leaves.items()}

    got, want = loss(selective_scan_fn, torch.float32), loss(selective_scan_ref, torch.float64)
    for k in ("z", "D", "C"):  # they act on the output only
        assert want[k] is None and (got[k] is None or float(got[k].abs().max()) == 0.0), k
    for k in ("u", "delta", "A", "B", "delta_bias", "initial_state"):
        assert rel_err(got[k], want[k]) < 2e-5, k


def test_inference_without_grad_returns_the_same_values():
    inputs = make_inputs(1, 4, 19, 4, seed=17)
    with torch.no_grad():
        out, last = selective_scan_fn(*(inputs[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")),
                                      True, True, initial_state=inputs["initial_state"])
    ref_out, ref_last = selective_scan_ref(*(inputs[k].double() for k in ("u", "delta", "A", "B", "C", "D", "z",
                                                                          "delta_bias")),
                                           True, True, initial_state=inputs["initial_state"].double())
    assert rel_err(out, ref_out) < 2e-5 and rel_err(last, ref_last) < 2e-5


def test_bad_shapes_raise_errors_naming_the_argument():
    inputs = make_inputs(1, 4, 8, 4)
    with pytest.raises(ValueError, match="delta"):
        selective_scan_fn(inputs["u"], inputs["delta"][..., :-1], inputs["A"], inputs["B"], inputs["C"])
    with pytest.raises(ValueError, match="ngroups"):
        B3 = torch.randn(1, 3, 4, 8)
        selective_scan_fn(inputs["u"], inputs["delta"], inputs["A"], B3, inputs["C"])


# --- larger sweeps ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(6))
def test_random_shapes_sweep(seed):
    rng = np.random.default_rng(seed)
    dim = int(rng.choice([4, 8, 12]))
    ngroups = int(rng.choice([g for g in (1, 2, 4) if dim % g == 0]))
    bc = str(rng.choice(["invariant", "shared", "grouped"]))
    seqlen = int(rng.integers(1, 70))
    assert_matches_reference(make_inputs(int(rng.integers(1, 3)), dim, seqlen, int(rng.choice([2, 4, 5, 16])),
                                         bc, ngroups, seed=seed, realistic=bool(seed % 2)), tol=5e-5)


@pytest.mark.slow
@pytest.mark.parametrize("block_d,chunk,bwd_block_d", [(1, 8, 8), (2, 32, 1), (8, 4, 2)])
def test_other_launch_configurations(monkeypatch, bwd_kernel, block_d, chunk, bwd_block_d):
    # Backward channel blocks that split a group (8 / 2 = 4 channels per group) and that span two.
    cfg = triton_scan.ScanConfig(block_d, chunk, 1, bwd_block_d=bwd_block_d, bwd_kernel=bwd_kernel,
                                 bwd_num_warps=2)
    monkeypatch.setattr(triton_scan, "CONFIG_OVERRIDE", cfg)
    assert_matches_reference(make_inputs(2, 8, 45, 4, "grouped", 2, seed=block_d))


def test_unknown_backward_kernel_is_refused():
    with pytest.raises(ValueError, match="bwd_kernel"):
        triton_scan.ScanConfig(16, 16, 1, bwd_kernel="v9")


def test_per_program_bc_partial_sums(monkeypatch, bwd_kernel):
    # Group-tile B/C (groups of 8 channels, 4-channel programs: two programs per group, two chunks)
    # with the channel sums stored per program and summed by the launcher instead of atomics.
    if bwd_kernel == "v1":
        pytest.skip("v1 has no per-program partial sums")
    cfg = triton_scan.ScanConfig(4, 16, 1, bwd_block_d=4, bwd_kernel=bwd_kernel, bwd_bc_partials=True)
    monkeypatch.setattr(triton_scan, "CONFIG_OVERRIDE", cfg)
    assert_matches_reference(make_inputs(1, 16, 20, 3, "grouped", 2, seed=16))


@pytest.mark.parametrize("factor,seqlen", [(2, 37), (4, 16)])
def test_backward_chunk_spanning_several_forward_chunks(monkeypatch, bwd_kernel, factor, seqlen):
    # v2 / v3 walk the sequence in chunks of `factor` forward chunks, restarting from every
    # factor-th stored state; the tail chunk is partial (37 = 2 x 16 + 5) or the only one (16 < 32).
    if bwd_kernel == "v1":
        with pytest.raises(ValueError, match="bwd_chunk_factor"):
            triton_scan.ScanConfig(4, 8, 1, bwd_kernel="v1", bwd_chunk_factor=factor)
        return
    with pytest.raises(ValueError, match="power of two"):
        triton_scan.ScanConfig(4, 8, 1, bwd_kernel=bwd_kernel, bwd_chunk_factor=3)
    cfg = triton_scan.ScanConfig(4, 8, 1, bwd_block_d=4, bwd_kernel=bwd_kernel, bwd_chunk_factor=factor)
    monkeypatch.setattr(triton_scan, "CONFIG_OVERRIDE", cfg)
    assert_matches_reference(make_inputs(2, 8, seqlen, 4, "shared", seed=factor), tol=5e-5)


def test_forward_stores_the_output_before_the_gate_only_when_needed(monkeypatch, bwd_kernel):
    # The "v3" and "v4" backwards read y + D u from the forward instead of recomputing it: stored
    # exactly when z is given and gradients are needed, and equal (fp32) to the reference's
    # pre-gate output.
    inputs = make_inputs(1, 4, 21, 4, seed=23)
    cfg = triton_scan.default_config(4, 21, 4, 4)
    args = [inputs[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]
    _, _, _, ypre = triton_scan._forward(*args, None, True, True, cfg)
    assert (ypre is not None) == (bwd_kernel in ("v3", "v4"))
    _, _, _, none_without_grads = triton_scan._forward(*args, None, True, False, cfg)
    no_z = list(args)
    no_z[6] = None
    _, _, _, none_without_z = triton_scan._forward(*no_z, None, True, True, cfg)
    assert none_without_grads is None and none_without_z is None
    if ypre is not None:
        want = selective_scan_ref(*(t.double() for t in no_z[:6]), None, inputs["delta_bias"].double(), True)
        assert rel_err(ypre, want) < 2e-6


# --- natively on the GPU ---------------------------------------------------------------------

GPU_TOL = {torch.float32: (1e-4, 2e-4), torch.bfloat16: (1e-2, 2e-2), torch.float16: (2e-3, 5e-3)}


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("seqlen,bc,ngroups", [(1, "shared", 1), (1000, "shared", 1), (2048, "grouped", 2),
                                               (777, "invariant", 1), (4099, "grouped", 3)])
def test_gpu_matches_reference(dtype, seqlen, bc, ngroups):
    # Reference on the same (rounded) inputs in float64, so only the kernel's error is measured.
    inputs = make_inputs(2, 96, seqlen, 16, bc, ngroups, device="cuda", dtype=dtype, realistic=True, seed=seqlen)
    out, last, grads = run(inputs, selective_scan_fn)
    ref_out, ref_last, ref_grads = run(inputs, selective_scan_ref, dtype=torch.float64)
    tol, grad_tol = GPU_TOL[dtype]
    assert out.dtype == dtype and rel_err(out, ref_out) < tol and rel_err(last, ref_last) < tol
    for k in grads:
        assert grads[k].dtype == inputs[k].dtype
        assert rel_err(grads[k], ref_grads[k]) < grad_tol, (k, rel_err(grads[k], ref_grads[k]))


@pytest.mark.gpu
def test_gpu_chunked_state_equals_one_pass_long_sequence():
    inputs = make_inputs(1, 64, 8192, 16, device="cuda", realistic=True, seed=2)
    args = [inputs[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]
    out1, last1 = selective_scan_fn(*args, True, True, initial_state=inputs["initial_state"])
    state, outs = inputs["initial_state"], []
    for lo in range(0, 8192, 3000):
        u, delta, A, B, C, D, z, bias = (t[..., lo:lo + 3000] if t.dim() == 3 else t for t in args)
        out, state = selective_scan_fn(u, delta, A, B, C, D, z, bias, True, True, initial_state=state)
        outs.append(out)
    assert rel_err(torch.cat(outs, -1), out1) < 1e-5 and rel_err(state, last1) < 1e-5
    assert math.isfinite(float(out1.abs().max()))
