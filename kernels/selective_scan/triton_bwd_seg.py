"""Triton pre-pass of the sequence-parallel ("segments") selective-scan backward.

The v2-v4 backward (``triton_bwd_v2.py``, ``triton_bwd_v4.py``) may split the sequence into
segments of whole backward chunks, each walked last chunk to first by its own programs. A segment
restarts the states h from the forward's chunk-start checkpoints, as every chunk already does; what
it lacks is the adjoint dL/dh entering it from the right. The adjoint is linear in that carry, and the recurrence is
diagonal in the state, so per (batch, channel, state) a segment [t0, t1] is summarised by

    decay = prod_{t=t0..t1} a_t = exp(A sum_t Δ_t),
    local = sum_{t=t0..t1} (prod_{s=t0..t} a_s) C_t dy_t   (the adjoint at t0 with no carry-in),

and the adjoint before the segment is local + decay * carry. This kernel computes (local, decay)
for segments 1 .. nseg - 1 (segment 0's summary is never needed); the backward then folds them
from the right, per program, to get its own carry-in (dlast, or 0, entering the last segment).

Per chunk, with P_t = Δ_0 + ... + Δ_t the in-chunk prefix sum (one scan per channel, not per
state), the chunk's summary is local_c = Σ_t exp2(A log2(e) P_t) C_t dy_t and
decay_c = exp2(A log2(e) P_{T-1}): per (channel, step, state) one exp2, two multiplies and one
add, no scan. Chunks are folded right to left (local = local_c + decay_c local), so exponents
stay within one chunk. dy is the output gradient after the gate, which needs z but not y.
Writes only (nseg - 1, batch, dstate, dim) fp32 tensors: nothing of size seqlen x dstate.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .triton_common import LOG2E, bc_base, delta_activation, exp2, load_bc


@triton.jit
def scan_bwd_seg_kernel(
    delta_ptr, A_ptr, C_ptr, z_ptr, bias_ptr, dout_ptr, loc_ptr, dec_ptr,
    dim, seqlen, nchunks, chunks_per_seg,
    C_dpg, C_sb, C_sg, C_sn, C_st,
    BLOCK_D: tl.constexpr, N: tl.constexpr, T: tl.constexpr, C_MODE: tl.constexpr,
    HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, FAST_EXP2: tl.constexpr,
    FAST_SOFTPLUS: tl.constexpr = False,
):
    # Grid (dim / BLOCK_D, batch, nseg - 1); program (d, b, s) summarises segment s + 1, which
    # spans backward chunks [(s + 1) chunks_per_seg, min(... + chunks_per_seg, nchunks)) of T steps.
    # loc_ptr / dec_ptr: fp32 (nseg - 1, batch, N, dim), channels contiguous (coalesced stores).
    pid_d = tl.program_id(0)
    pid_b = tl.program_id(1)
    pid_s = tl.program_id(2)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    d_mask = offs_d < dim
    c_base = bc_base(pid_b, offs_d, C_dpg, C_sb, C_sg, BLOCK_D, C_MODE)

    # Per state: A log2(e), and the running summary of the chunks already folded (right of here).
    A2 = ()
    loc = ()
    dec = ()
    for n in tl.static_range(N):
        A2 = A2 + (tl.load(A_ptr + offs_d * N + n, mask=d_mask, other=0.0).to(tl.float32) * LOG2E,)
        loc = loc + (tl.zeros([BLOCK_D], dtype=tl.float32),)
        dec = dec + (tl.full([BLOCK_D], 1.0, dtype=tl.float32),)
    bias = tl.zeros([BLOCK_D], dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=d_mask, other=0.0).to(tl.float32)

    row = (pid_b.to(tl.int64) * dim + offs_d) * seqlen  # (BLOCK_D,) start of each channel's row
    steps = tl.arange(0, T)
    seg_lo = (pid_s + 1) * chunks_per_seg
    seg_hi = tl.minimum(seg_lo + chunks_per_seg, nchunks)
    for i in range(seg_hi - seg_lo):
        c = seg_hi - 1 - i
        offs_t = c * T + steps
        t_mask = offs_t < seqlen
        m2 = d_mask[:, None] & t_mask[None, :]
        ptrs = row[:, None] + offs_t[None, :]  # (BLOCK_D, T)
        # Masked steps: Δ = 0 (identity, so P stops growing) and dy = 0 (no adjoint source).
        dt, _ = delta_activation(tl.load(delta_ptr + ptrs, mask=m2, other=0.0).to(tl.float32), m2, bias,
                                 HAS_BIAS, SOFTPLUS, FAST_SOFTPLUS)
        dy = tl.load(dout_ptr + ptrs, mask=m2, other=0.0).to(tl.float32)
        if HAS_Z:
            zv = tl.load(z_ptr + ptrs, mask=m2, other=0.0).to(tl.float32)
            dy = dy * zv * tl.sigmoid(zv)
        P = tl.cumsum(dt, axis=1)  # (BLOCK_D, T) inclusive prefix sums of Δ within the chunk
        P_all = tl.sum(dt, axis=1)  # (BLOCK_D,) the whole chunk's
        loc_next = ()
        dec_next = ()
        for n in tl.static_range(N):
            Cn = load_bc(C_ptr, c_base, n, offs_t, d_mask, t_mask, C_sn, C_st, C_MODE)
            e = exp2(P * A2[n][:, None], FAST_EXP2)  # (BLOCK_D, T): a_0 ... a_t
            dec_c = exp2(P_all * A2[n], FAST_EXP2)  # (BLOCK_D,)
            loc_next = loc_next + (tl.sum(e * (Cn * dy), axis=1) + dec_c * loc[n],)
            dec_next = dec_next + (dec_c * dec[n],)
        loc = loc_next
        dec = dec_next

    for n in tl.static_range(N):
        out = ((pid_s.to(tl.int64) * tl.num_programs(1) + pid_b) * N + n) * dim + offs_d
        tl.store(loc_ptr + out, loc[n], mask=d_mask)
        tl.store(dec_ptr + out, dec[n], mask=d_mask)
