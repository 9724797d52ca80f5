"""The sequence-parallel ("segments") backward of the Triton selective scan against float64.

``ScanConfig.bwd_segments`` splits the v2-v4 backward's chunks into segments walked by separate
programs; a pre-pass (``triton_bwd_seg.py``) summarises each segment by its local adjoint and its
decay, from which every segment folds the adjoint entering it. Out and every gradient must equal
the sequential reference's whatever the split: uneven segments, more segments asked for than
there are chunks, every optional input, every B / C layout, with and without a loss on the last
state. CPU: Triton's interpreter, fp32, small shapes; ``gpu``: bf16 / fp32 at larger shapes.
"""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F

from kernels import selective_scan_fn, selective_scan_ref

triton_scan = pytest.importorskip("kernels.selective_scan.triton_scan")
# The shared helpers of the Triton scan tests (random inputs, runs with seeded cotangents).
from test_selective_scan_triton import (  # noqa: E402
    GPU_TOL,
    assert_matches_reference,
    make_inputs,
    rel_err,
    run,
    triton_backend,  # noqa: F401  (the autouse fixture: Triton backend, vectorised interpreter scan)
    use_config,
)

# --- how the sequence is split ---------------------------------------------------------------


@pytest.mark.parametrize(
    "nchunks,segments,want",
    [(10, 1, (10, 1)), (10, 2, (5, 2)), (10, 3, (4, 3)), (10, 4, (3, 4)), (5, 4, (2, 3)), (3, 8, (1, 3)),
     (1, 8, (1, 1)), (0, 4, (1, 1))],
)
def test_segment_split_uses_whole_chunks_and_never_an_empty_segment(nchunks, segments, want):
    per_seg, nseg = triton_scan.segment_split(nchunks, segments)
    assert (per_seg, nseg) == want
    assert nseg <= max(segments, 1) and (nseg - 1) * per_seg < max(nchunks, 1) <= nseg * per_seg


@pytest.mark.parametrize("bad", [0, -2, 2.0, True, "4"])
def test_bad_segment_counts_are_refused(bad):
    with pytest.raises(ValueError, match="bwd_segments"):
        triton_scan.ScanConfig(16, 16, 1, bwd_kernel="v3", bwd_segments=bad)


@pytest.mark.parametrize("bad", [0, 16, 256, 128.0, True])
def test_bad_register_caps_are_refused(bad):
    with pytest.raises(ValueError, match="bwd_maxnreg"):
        triton_scan.ScanConfig(16, 16, 1, bwd_kernel="v3", bwd_maxnreg=bad)


def test_v1_takes_no_register_cap():
    with pytest.raises(ValueError, match="bwd_maxnreg.*v1"):
        triton_scan.ScanConfig(16, 16, 1, bwd_kernel="v1", bwd_maxnreg=128)


@pytest.mark.parametrize("batch,dim,sms,want", [
    # 132 SMs x 16 slots (one-warp programs at 128 registers) = 2,112; aim at 3 waves
    (8, 1536, 132, 8),  # issue 3's size: 768 programs, 3 x 2,112 // 768 = 8 segments
    (4, 1536, 132, 16),  # 384 programs: 16 (the most allowed)
    (1, 1536, 132, 16),
    (16, 1536, 132, 1),  # 1,536 programs fill more than half the slots: no segments
    (64, 1536, 132, 1),
    (8, 1536, None, 1),  # no GPU to size for
])
def test_backward_segments_only_for_grids_under_half_the_slots(batch, dim, sms, want):
    assert triton_scan.backward_segments(batch, dim, 16, sms) == want


def test_gpu_default_launch_is_the_one_warp_v4_capped_with_segments(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    cfg = triton_scan.default_config(1536, 4096, 16, 2, batch=8, sm_count=132)
    assert (cfg.bwd_kernel, cfg.bwd_block_d, cfg.bwd_num_warps, cfg.chunk * cfg.bwd_chunk_factor) == ("v4", 16, 1, 16)
    assert (cfg.bwd_segments, cfg.bwd_maxnreg) == (8, 128)
    assert triton_scan.default_config(1536, 4096, 16, 4, batch=8).bwd_segments == 1  # fp32, SMs unknown


def test_v1_has_no_segments():
    with pytest.raises(ValueError, match="bwd_segments.*v1"):
        triton_scan.ScanConfig(16, 16, 1, bwd_kernel="v1", bwd_segments=2)


# --- the pre-pass on its own -----------------------------------------------------------------


def test_segment_summaries_are_the_local_adjoint_and_the_decay():
    # Segment j (steps t0..t1) of a 5-chunk sequence split in 3: decay = exp(A Σ Δ) and
    # local = Σ_t exp(A (Δ_t0 + ... + Δ_t)) C_t dy_t, with dy the gradient after the gate.
    batch, dim, seqlen, dstate, T = 2, 6, 37, 3, 8
    t = make_inputs(batch, dim, seqlen, dstate, "grouped", 2, seed=31)
    dout = torch.randn(batch, dim, seqlen, generator=torch.Generator().manual_seed(2))
    per_seg, nseg = triton_scan.segment_split(triton_scan.triton.cdiv(seqlen, T), 3)
    assert (per_seg, nseg) == (2, 3)
    c_mode, c_dpg, c_str = triton_scan._bc_layout(t["C"], dim, 4)
    loc, dec = triton_scan._segment_summaries(t["delta"], t["A"], t["C"], t["z"], t["delta_bias"], dout, True,
                                              c_mode, c_dpg, c_str, 5, per_seg, nseg, T, 4, 1)
    assert loc.shape == dec.shape == (nseg - 1, batch, dstate, dim)

    dt = F.softplus(t["delta"].double() + t["delta_bias"].double()[:, None])  # (batch, dim, seqlen)
    dy = dout.double() * F.silu(t["z"].double())
    C = t["C"].double().repeat_interleave(dim // 2, dim=1)  # (batch, dim, dstate, seqlen)
    A = t["A"].double()  # (dim, dstate)
    for j in range(1, nseg):
        t0, t1 = j * per_seg * T, min((j + 1) * per_seg * T, seqlen)
        cum = dt[..., t0:t1].cumsum(-1)  # (batch, dim, steps)
        e = torch.exp(A[None, :, :, None] * cum[:, :, None, :])  # (batch, dim, dstate, steps)
        want_dec = e[..., -1]
        want_loc = (e * C[..., t0:t1] * dy[:, :, None, t0:t1]).sum(-1)  # (batch, dim, dstate)
        assert rel_err(dec[j - 1].transpose(1, 2), want_dec) < 1e-6
        assert rel_err(loc[j - 1].transpose(1, 2), want_loc) < 1e-5


# --- values and gradients against the reference ---------------------------------------------


@pytest.mark.parametrize(
    "shape,cfg",
    [
        # 5 chunks of 8 in segments of 3 + 2 (the last one partial); dim not a multiple of the block
        ((2, 6, 37, 4, "shared", 1), dict(bwd_segments=2)),
        # 8 segments asked for, 3 chunks: 3 segments of one chunk; dstate not a power of two
        ((1, 8, 20, 3, "invariant", 1), dict(bwd_segments=8)),
        # backward chunk of two forward chunks: 5 chunks of 16 in segments of 2 + 2 + 1
        ((2, 8, 75, 4, "grouped", 2), dict(bwd_segments=4, bwd_chunk_factor=2)),
        # v2 (recomputes the pre-gate output), a channel block spanning groups
        ((1, 6, 41, 4, "grouped", 3), dict(bwd_segments=3, bwd_kernel="v2")),
        # dB / dC channel sums stored per program: segments share the rows, on disjoint steps
        ((1, 16, 45, 3, "grouped", 2), dict(bwd_segments=2, bwd_bc_partials=True)),
        # a register cap is a compiler option only: the launch must accept it and compute the same
        ((2, 6, 37, 4, "shared", 1), dict(bwd_segments=2, bwd_maxnreg=128)),
    ],
    ids=["uneven", "more-segments-than-chunks", "chunk-factor", "v2-per-channel-bc", "partials", "register-cap"],
)
def test_segmented_backward_matches_reference(monkeypatch, shape, cfg):
    use_config(monkeypatch, **cfg)
    assert_matches_reference(make_inputs(*shape, seed=shape[2]), tol=5e-5)


@pytest.mark.parametrize(
    "omit,softplus",
    [(("D", "z", "delta_bias", "initial_state"), False), (("z",), True), (("initial_state",), True)],
)
@pytest.mark.parametrize("kernel", ["v3", "v4"])
def test_segmented_backward_with_optional_arguments_off(monkeypatch, omit, softplus, kernel):
    use_config(monkeypatch, bwd_kernel=kernel, bwd_segments=3)
    assert_matches_reference(make_inputs(2, 4, 39, 4, "grouped", 2, seed=9), omit=omit, softplus=softplus, tol=5e-5)


@pytest.mark.parametrize("kernel", ["v3", "v4"])
def test_segmented_backward_without_a_loss_on_the_last_state(monkeypatch, kernel):
    # No gradient reaches the returned state: the last segment's carry-in is 0, not dlast.
    use_config(monkeypatch, bwd_kernel=kernel, bwd_segments=3)
    inputs = make_inputs(1, 4, 35, 4, seed=12)
    got = run(inputs, selective_scan_fn, last_loss=False)[2]
    want = run(inputs, selective_scan_ref, dtype=torch.float64, last_loss=False)[2]
    for k in want:
        assert rel_err(got[k], want[k]) < 5e-5, k


def test_segments_change_nothing_but_rounding(monkeypatch):
    # The same problem with 1 and 3 segments: out and last state identical (the forward is not
    # touched), gradients equal to fp32 rounding.
    inputs = make_inputs(1, 4, 40, 4, "shared", seed=21)
    results = []
    for segments in (1, 3):
        use_config(monkeypatch, bwd_segments=segments)
        results.append(run(inputs, selective_scan_fn))
    (out1, last1, g1), (out3, last3, g3) = results
    assert torch.equal(out1, out3) and torch.equal(last1, last3)
    for k in g1:
        assert rel_err(g3[k], g1[k]) < 2e-6, k


@pytest.mark.slow
def test_segmented_backward_realistic_parameters(monkeypatch):
    # A = -(1..16), Δ up to ~5 after softplus: segment decays underflow towards 0 without NaN.
    use_config(monkeypatch, bwd_segments=4, bwd_chunk_factor=2)
    assert_matches_reference(make_inputs(2, 8, 90, 16, "shared", realistic=True, seed=5), tol=5e-5)


# --- natively on the GPU ---------------------------------------------------------------------


@functools.cache
def _gpu_problem(dtype, seqlen, bc, ngroups):
    """Inputs and the float64 reference's out, last state and gradients, once per problem (the
    sequential reference is most of a GPU test's time; the launch under test varies)."""
    inputs = make_inputs(2, 96, seqlen, 16, bc, ngroups, device="cuda", dtype=dtype, realistic=True, seed=seqlen)
    return inputs, run(inputs, selective_scan_ref, dtype=torch.float64)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("launch", ["16:2:32", "8:1:16", "16:2:32:128"])  # the last: registers capped at 128
@pytest.mark.parametrize("segments", [2, 4, 8])
@pytest.mark.parametrize("seqlen,bc,ngroups", [(1000, "shared", 1), (777, "invariant", 1), (4099, "grouped", 3)])
def test_gpu_segmented_backward_matches_reference(monkeypatch, dtype, launch, segments, seqlen, bc, ngroups):
    block_d, warps, chunk, *cap = (int(x) for x in launch.split(":"))
    monkeypatch.setattr(triton_scan, "CONFIG_OVERRIDE", triton_scan.ScanConfig(
        16, 16, 1, bwd_kernel="v3", bwd_block_d=block_d, bwd_num_warps=warps, bwd_chunk_factor=chunk // 16,
        bwd_segments=segments, bwd_maxnreg=cap[0] if cap else None))
    inputs, (ref_out, ref_last, ref_grads) = _gpu_problem(dtype, seqlen, bc, ngroups)
    out, last, grads = run(inputs, selective_scan_fn)
    tol, grad_tol = GPU_TOL[dtype]
    assert rel_err(out, ref_out) < tol and rel_err(last, ref_last) < tol
    for k in grads:
        assert grads[k].dtype == inputs[k].dtype
        assert rel_err(grads[k], ref_grads[k]) < grad_tol, (k, rel_err(grads[k], ref_grads[k]))
