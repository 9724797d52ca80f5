"""The "v4" backward of the Triton selective scan (``triton_bwd_v4.py``) against float64.

v4 is v3's math with each in-chunk scan split into two sub-chunks folded in-lane; out and every
gradient must equal the sequential reference's for every option (z, D, delta_bias, softplus on
and off, each B / C layout, initial_state, a loss on the last state or not), with and without
sequence segments, over chunk lengths whose sub-chunks are 1, 4 and 8 steps (optional arguments
off and no loss on the last state: ``test_selective_scan_segments.py``, run for v3 and v4). CPU:
Triton's interpreter, fp32; ``gpu``: bf16 at a size divisible like the timed one.
"""

from __future__ import annotations

import pytest
import torch

from kernels import selective_scan_fn

triton_scan = pytest.importorskip("kernels.selective_scan.triton_scan")
from test_selective_scan_triton import (  # noqa: E402
    ON_GPU,
    assert_matches_reference,
    make_inputs,
    rel_err,
    run,
    triton_backend,  # noqa: F401  (the autouse fixture: Triton backend, vectorised interpreter scan)
    use_config,
)


def use_v4(monkeypatch, **kw):
    """The interpreter-sized launch of ``use_config`` with the v4 backward."""
    use_config(monkeypatch, bwd_kernel="v4", **kw)


@pytest.mark.parametrize(
    "shape,cfg",
    [
        # 5 chunks of 8 (sub-chunks of 4), the last partial; dim not a multiple of the block
        ((2, 6, 37, 4, "shared", 1), {}),
        # time-invariant B / C, dstate not a power of two, 3 segments
        ((1, 8, 20, 3, "invariant", 1), dict(bwd_segments=3)),
        # backward chunk of two forward chunks (16 steps, sub-chunks of 8, the GPU's), segments
        ((2, 8, 75, 4, "grouped", 2), dict(bwd_segments=2, bwd_chunk_factor=2)),
        # a channel block spanning groups (per-channel B / C), chunk 2 (sub-chunks of one step)
        ((1, 6, 23, 4, "grouped", 3), dict(chunk=2)),
        # dB / dC channel sums stored per program instead of atomics
        ((1, 16, 45, 3, "grouped", 2), dict(bwd_segments=2, bwd_bc_partials=True)),
    ],
    ids=["shared-uneven", "invariant-segments", "chunk-16", "per-channel-chunk-2", "partials"],
)
def test_v4_matches_reference_with_every_option(monkeypatch, shape, cfg):
    use_v4(monkeypatch, **cfg)
    assert_matches_reference(make_inputs(*shape, seed=shape[2]), tol=5e-5)


def test_v4_equals_v3_to_rounding(monkeypatch):
    # Same forward (v4 stores the pre-gate output as v3 does), same gradients up to fp32 rounding.
    inputs = make_inputs(1, 4, 40, 4, "shared", seed=21)
    results = []
    for kernel in ("v3", "v4"):
        monkeypatch.setattr(triton_scan, "CONFIG_OVERRIDE", triton_scan.ScanConfig(
            4, 8, 1, bwd_kernel=kernel, bwd_block_d=4, bwd_segments=2))
        results.append(run(inputs, selective_scan_fn))
    (out3, last3, g3), (out4, last4, g4) = results
    assert torch.equal(out3, out4) and torch.equal(last3, last4)
    for k in g3:
        assert rel_err(g4[k], g3[k]) < 2e-6, k


def test_v4_needs_an_even_backward_chunk():
    with pytest.raises(ValueError, match="v4.*even"):
        triton_scan.ScanConfig(4, 1, 1, bwd_kernel="v4")


@pytest.mark.parametrize("registers,warps,want", [(168, 1, 12), (162, 1, 12), (128, 1, 16), (96, 1, 21),
                                                  (64, 1, 32), (32, 1, 32), (128, 2, 8), (255, 1, 8)])
def test_resident_programs_follow_the_register_file(registers, warps, want):
    assert triton_scan.resident_programs(registers, warps) == want


def test_segment_rule_with_another_launchs_slots():
    # v3 uncapped (12 slots per SM): 1,584 slots at 132 SMs; batch 8's 768 programs fill under
    # half of them (792), so 3 x 1,584 // 768 = 6 segments; batch 16's 1,536 programs: none.
    assert triton_scan.backward_segments(8, 1536, 16, 132, programs_per_sm=12) == 6
    assert triton_scan.backward_segments(16, 1536, 16, 132, programs_per_sm=12) == 1
    assert triton_scan.backward_segments(1, 1536, 16, 132, programs_per_sm=12, max_segments=8) == 8


@pytest.mark.gpu
@pytest.mark.skipif(not ON_GPU, reason="needs a CUDA GPU")
@pytest.mark.parametrize("segments,cap", [(1, None), (2, None), (2, 128), (8, 128)])
def test_v4_on_gpu_bf16_matches_reference(monkeypatch, segments, cap):
    monkeypatch.setattr(triton_scan, "CONFIG_OVERRIDE", triton_scan.ScanConfig(
        16, 16, 1, bwd_kernel="v4", bwd_block_d=16, bwd_segments=segments, bwd_maxnreg=cap))
    inputs = make_inputs(2, 256, 512, 16, "shared", device="cuda", seed=segments)
    assert_matches_reference(inputs, tol=5e-5)
