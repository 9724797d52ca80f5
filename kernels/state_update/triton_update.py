"""Triton selective state update: one decoding step of the selective scan, state updated in place.

Each program owns (BLOCK_D channels, all dstate) of one sequence: it reads the state tile once,
applies state <- exp(dt A) state + dt x B, writes it back and reduces y = C · state in registers.
A decoding step is latency-bound (a few µs of GPU work), so the kernel issues every load before
its first store (one memory round trip, not two), the grid is spread over all SMs even at batch 1
(``grid.decode_block``), and the launcher does no more than the argument checks, one output
allocation and one launch: no host sync and no other kernel, so a CUDA graph of a step holds
exactly this node (dt_bias, softplus, D, the z gate and every dtype conversion happen in here).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._decode_grid import decode_block, sm_count
from .reference import check_state_update_args


@triton.jit
def _state_update_kernel(
    state_ptr, x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, dt_bias_ptr, y_ptr,
    dim, dstate, dim_per_group_B, dim_per_group_C,
    s_sb, s_sd, s_sn, s_xb, s_xd, s_tb, s_td, s_ad, s_an,
    s_Bb, s_Bg, s_Bn, s_Cb, s_Cg, s_Cn, s_D, s_zb, s_zd, s_tbias, s_yb, s_yd,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_DT_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)  # (BLOCK_D,)
    n = tl.arange(0, BLOCK_N)[None, :]  # (1, BLOCK_N)
    dmask = d < dim
    d2 = d[:, None]  # (BLOCK_D, 1)
    m2 = (d2 < dim) & (n < dstate)

    # Every load is issued before the in-place store below, so the program waits for one memory
    # round trip; loads after the barrier would add a second one to this latency-bound kernel.
    x = tl.load(x_ptr + b * s_xb + d * s_xd, mask=dmask, other=0.0).to(tl.float32)
    dt = tl.load(dt_ptr + b * s_tb + d * s_td, mask=dmask, other=0.0).to(tl.float32)
    if HAS_DT_BIAS:
        dt += tl.load(dt_bias_ptr + d * s_tbias, mask=dmask, other=0.0).to(tl.float32)
    A = tl.load(A_ptr + d2 * s_ad + n * s_an, mask=m2, other=0.0).to(tl.float32)
    # Channel d reads group d // (dim / ngroups); (batch, dstate) inputs are one group.
    Bv = tl.load(B_ptr + b * s_Bb + (d2 // dim_per_group_B) * s_Bg + n * s_Bn, mask=m2, other=0.0).to(tl.float32)
    Cv = tl.load(C_ptr + b * s_Cb + (d2 // dim_per_group_C) * s_Cg + n * s_Cn, mask=m2, other=0.0).to(tl.float32)
    state_tile = state_ptr + b * s_sb + d2 * s_sd + n * s_sn
    s = tl.load(state_tile, mask=m2, other=0.0).to(tl.float32)  # (BLOCK_D, BLOCK_N)
    if HAS_D:
        Dv = tl.load(D_ptr + d * s_D, mask=dmask, other=0.0).to(tl.float32)
    if HAS_Z:
        z = tl.load(z_ptr + b * s_zb + d * s_zd, mask=dmask, other=0.0).to(tl.float32)
    if SOFTPLUS:
        # torch's softplus threshold: linear above 20, where log(1 + e^x) == x in fp32.
        dt = tl.where(dt <= 20.0, tl.log(1.0 + tl.exp(dt)), dt)

    dt2 = dt[:, None]
    s = s * tl.exp(dt2 * A) + Bv * (dt2 * x[:, None])
    # Threads that hold copies of one element must all have read it before it is overwritten.
    tl.debug_barrier()
    tl.store(state_tile, s.to(state_ptr.dtype.element_ty), mask=m2)

    y = tl.sum(s * Cv, axis=1)  # (BLOCK_D,), from the fp32 state as the reference does
    if HAS_D:
        y += x * Dv
    if HAS_Z:
        y *= z * tl.sigmoid(z)
    tl.store(y_ptr + b * s_yb + d * s_yd, y.to(y_ptr.dtype.element_ty), mask=dmask)


def _next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def _group_args(t: torch.Tensor, dim: int) -> tuple[int, int, int, int]:
    """(dim_per_group, stride_batch, stride_group, stride_state) for B or C in either form."""
    if t.dim() == 2:  # (batch, dstate): every channel reads the one row
        return dim, t.stride(0), 0, t.stride(1)
    return dim // t.shape[1], *t.stride()


def selective_state_update_triton(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False):
    """selective_state_update with a Triton kernel (CUDA, or CPU under TRITON_INTERPRET=1).

    state (batch, dim, dstate) is updated in place (fp32 arithmetic, stored in its own dtype);
    x, dt, z: (batch, dim); A: (dim, dstate); B, C: (batch, dstate) or (batch, ngroups, dstate);
    D, dt_bias: (dim,). Returns y = (C · state + D x) * silu(z), (batch, dim) in x's dtype.
    """
    batch, dim, dstate = check_state_update_args(state, x, dt, A, B, C, D, z, dt_bias)
    y = torch.empty((batch, dim), dtype=x.dtype, device=x.device)
    if batch == 0 or dim == 0:
        return y
    block_n = max(2, _next_pow2(dstate))
    block_d, num_warps = decode_block(batch, dim, block_n, sm_count(x.device))
    gB, gC = _group_args(B, dim), _group_args(C, dim)
    _state_update_kernel[(batch, triton.cdiv(dim, block_d))](
        state, x, dt, A, B, C,
        D if D is not None else x, z if z is not None else x, dt_bias if dt_bias is not None else x, y,
        dim, dstate, gB[0], gC[0],
        *state.stride(), *x.stride(), *dt.stride(), *A.stride(), *gB[1:], *gC[1:],
        D.stride(0) if D is not None else 0, *(z.stride() if z is not None else (0, 0)),
        dt_bias.stride(0) if dt_bias is not None else 0, *y.stride(),
        HAS_D=D is not None, HAS_Z=z is not None, HAS_DT_BIAS=dt_bias is not None, SOFTPLUS=bool(dt_softplus),
        BLOCK_D=block_d, BLOCK_N=block_n, num_warps=num_warps,
    )
    return y
