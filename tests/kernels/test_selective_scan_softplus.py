"""Softplus off the special-function unit (``ScanConfig.fast_softplus``) against float64.

``softplus_fma`` and ``softplus_grad(FAST=True)`` replace the MUFU's exp / log / reciprocal by
polynomials and Newton steps on the FMA pipe. Their stated errors (``triton_common.py``): at most
4.8e-7 absolute everywhere and 2e-6 relative on [-40, 60] (the derivative: 2.5e-6); the scan
with them must still match the sequential reference. CPU: Triton's interpreter (fp32
semantics); ``gpu``: natively.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kernels import selective_scan_ref

triton = pytest.importorskip("triton")
tl = pytest.importorskip("triton.language")
triton_scan = pytest.importorskip("kernels.selective_scan.triton_scan")
from test_selective_scan_triton import (  # noqa: E402
    GPU_TOL,
    ON_GPU,
    assert_matches_reference,
    make_inputs,
    rel_err,
    run,
    triton_backend,  # noqa: F401  (the autouse fixture: Triton backend, vectorised interpreter scan)
)

from kernels.selective_scan.triton_common import softplus_fma, softplus_grad  # noqa: E402

DEVICE = "cuda" if ON_GPU else "cpu"


@triton.jit
def _softplus_kernel(x_ptr, sp_ptr, grad_ptr, n, FAST: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    x = tl.load(x_ptr + offs, mask=m, other=0.0)
    if FAST:
        sp = softplus_fma(x)
    else:
        sp = tl.where(x > 20.0, x, tl.log(1.0 + tl.exp(tl.minimum(x, 20.0))))
    tl.store(sp_ptr + offs, sp, mask=m)
    tl.store(grad_ptr + offs, softplus_grad(x, FAST), mask=m)


def _apply(x: torch.Tensor, fast: bool):
    sp, grad = torch.empty_like(x), torch.empty_like(x)
    block = 1024
    _softplus_kernel[(triton.cdiv(x.numel(), block),)](x, sp, grad, x.numel(), FAST=fast, BLOCK=block)
    return sp, grad


def test_softplus_fma_and_its_derivative_within_the_stated_error():
    check_softplus_fma(DEVICE)


@pytest.mark.gpu
def test_gpu_softplus_fma_and_its_derivative_within_the_stated_error():
    # Compiled for the GPU: FMA contraction and the bit tricks as the hardware does them.
    check_softplus_fma("cuda")


def check_softplus_fma(device):
    """softplus_fma and its derivative on a dense grid over [-60, 60] plus random points (fp32)
    against float64: the errors stated in ``triton_common.py``."""
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.linspace(-60.0, 60.0, 60001), 8.0 * torch.randn(20000, generator=g)]).to(device)
    sp, grad = _apply(x, fast=True)
    x64 = x.double()
    want_sp, want_grad = F.softplus(x64), torch.sigmoid(x64)
    sp, grad = sp.double(), grad.double()
    assert float((sp - want_sp).abs().max()) <= 4.8e-7
    assert float((grad - want_grad).abs().max()) <= 2e-7
    inside = (x64 >= -40.0) & (x64 <= 60.0)
    assert float(((sp - want_sp).abs() / want_sp)[inside].max()) <= 2e-6
    assert float(((grad - want_grad).abs() / want_grad)[inside].max()) <= 2.5e-6
    # No worse than the MUFU form where softplus matters (Δ of order 1e-3 .. 10), which it replaces.
    sp_mufu, _ = _apply(x, fast=False)
    band = (x64 > -7.0) & (x64 < 10.0)
    assert float((sp - want_sp).abs()[band].max()) <= 2.0 * float((sp_mufu.double() - want_sp).abs()[band].max())


def test_fast_softplus_needs_the_v2_or_v3_backward():
    with pytest.raises(ValueError, match="fast_softplus"):
        triton_scan.ScanConfig(16, 16, 1, bwd_kernel="v1", fast_softplus=True)


@pytest.mark.parametrize("kernel,segments", [("v3", 1), ("v2", 1), ("v3", 3)])
def test_scan_with_fast_softplus_matches_reference(monkeypatch, kernel, segments):
    # Δ before softplus spread over [-4, 5] (realistic): both branches of softplus and its slope.
    monkeypatch.setattr(triton_scan, "CONFIG_OVERRIDE", triton_scan.ScanConfig(
        4, 8, 1, bwd_kernel=kernel, bwd_block_d=4, bwd_segments=segments, fast_softplus=True))
    assert_matches_reference(make_inputs(2, 6, 37, 4, "shared", realistic=True, seed=3), tol=5e-5)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("segments", [1, 4])
def test_gpu_scan_with_fast_softplus_matches_reference(monkeypatch, dtype, segments):
    monkeypatch.setattr(triton_scan, "CONFIG_OVERRIDE", triton_scan.ScanConfig(
        16, 16, 1, bwd_kernel="v3", bwd_block_d=16, bwd_num_warps=2, bwd_chunk_factor=2, bwd_segments=segments,
        fast_softplus=True))
    inputs = make_inputs(2, 96, 2048, 16, "grouped", 2, device="cuda", dtype=dtype, realistic=True, seed=11)
    out, last, grads = run(inputs, triton_scan.selective_scan_triton)
    ref_out, ref_last, ref_grads = run(inputs, selective_scan_ref, dtype=torch.float64)
    tol, grad_tol = GPU_TOL[dtype]
    assert rel_err(out, ref_out) < tol and rel_err(last, ref_last) < tol
    for k in grads:
        assert rel_err(grads[k], ref_grads[k]) < grad_tol, (k, rel_err(grads[k], ref_grads[k]))
