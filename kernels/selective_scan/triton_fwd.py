"""Triton forward kernel of the selective scan.

One program owns BLOCK_D channels of one batch row (one thread per channel in the usual launch)
and walks the sequence in chunks of T steps. For each state n (a compile-time loop) the chunk's
recurrence h_t = a_t h_{t-1} + b_t runs sequentially inside the thread, the carried state folded
into the first step, and y_t accumulates C_t h_t in registers: no shuffles, one exp2 and a few
FMAs per (channel, step, state). Inputs are read once (the next chunk's u, Δ, z are loaded before
the current one is computed, to hide memory latency); with SAVE_CKPT the state at each chunk
start is stored, fp32 (batch, nchunks, dstate, dim) so each store is coalesced over channels, for
the backward pass to recompute the chunk from; with SAVE_Y (and z) also the output before the
gate, for the backward's dz.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .triton_common import LOG2E, affine_combine, bc_base, column, delta_activation, exp2, load_bc


@triton.jit
def scan_fwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, h0_ptr,
    out_ptr, last_ptr, ckpt_ptr, ypre_ptr,
    dim, seqlen, nchunks,
    B_dpg, B_sb, B_sg, B_sn, B_st,
    C_dpg, C_sb, C_sg, C_sn, C_st,
    BLOCK_D: tl.constexpr, N: tl.constexpr, T: tl.constexpr,
    B_MODE: tl.constexpr, C_MODE: tl.constexpr,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, FAST_EXP2: tl.constexpr,
    HAS_H0: tl.constexpr, SAVE_CKPT: tl.constexpr, SAVE_Y: tl.constexpr, FAST_SOFTPLUS: tl.constexpr = False,
):
    # ypre_ptr (SAVE_Y, with z only): (batch, dim, seqlen) in out's dtype, the output before the
    # gate, y + D u, which the backward needs for dz; storing it spares the backward a pass.
    pid_d = tl.program_id(0)
    pid_b = tl.program_id(1)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    d_mask = offs_d < dim
    state_row = (pid_b.to(tl.int64) * dim + offs_d) * N  # (BLOCK_D,) into (batch, dim, dstate)
    b_base = bc_base(pid_b, offs_d, B_dpg, B_sb, B_sg, BLOCK_D, B_MODE)
    c_base = bc_base(pid_b, offs_d, C_dpg, C_sb, C_sg, BLOCK_D, C_MODE)

    # Per state: A log2(e) (exp(Δ A) = exp2(Δ log2(e) A)) and the carried state, (BLOCK_D,) each.
    A_cols = ()
    h = ()
    for n in tl.static_range(N):
        A_cols = A_cols + (tl.load(A_ptr + offs_d * N + n, mask=d_mask, other=0.0).to(tl.float32) * LOG2E,)
        if HAS_H0:
            h = h + (tl.load(h0_ptr + state_row + n, mask=d_mask, other=0.0).to(tl.float32),)
        else:
            h = h + (tl.zeros([BLOCK_D], dtype=tl.float32),)
    bias = tl.zeros([BLOCK_D], dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=d_mask, other=0.0).to(tl.float32)
    if HAS_D:
        Dv = tl.load(D_ptr + offs_d, mask=d_mask, other=0.0).to(tl.float32)

    row = (pid_b.to(tl.int64) * dim + offs_d) * seqlen  # (BLOCK_D,) start of each channel's row
    steps = tl.arange(0, T)
    first = (steps == 0)[None, :]
    last = (steps == T - 1)[None, :]
    ptrs = row[:, None] + steps[None, :]  # (BLOCK_D, T), chunk 0
    m2 = d_mask[:, None] & (steps < seqlen)[None, :]
    u_raw = tl.load(u_ptr + ptrs, mask=m2, other=0.0)
    dl_raw = tl.load(delta_ptr + ptrs, mask=m2, other=0.0)
    if HAS_Z:
        z_raw = tl.load(z_ptr + ptrs, mask=m2, other=0.0)

    for c in range(nchunks):
        offs_t = c * T + steps
        t_mask = offs_t < seqlen
        m2 = d_mask[:, None] & t_mask[None, :]
        ptrs = row[:, None] + offs_t[None, :]
        # Prefetch the next chunk (all masked off after the last one).
        m_next = d_mask[:, None] & (offs_t + T < seqlen)[None, :]
        u_next = tl.load(u_ptr + ptrs + T, mask=m_next, other=0.0)
        dl_next = tl.load(delta_ptr + ptrs + T, mask=m_next, other=0.0)
        if HAS_Z:
            z_next = tl.load(z_ptr + ptrs + T, mask=m_next, other=0.0)

        u = u_raw.to(tl.float32)
        dt, _ = delta_activation(dl_raw.to(tl.float32), m2, bias, HAS_BIAS, SOFTPLUS, FAST_SOFTPLUS)
        dtu = dt * u
        y = tl.zeros([BLOCK_D, T], dtype=tl.float32)
        h_next = ()
        for n in tl.static_range(N):
            if SAVE_CKPT:
                ck = ((pid_b.to(tl.int64) * nchunks + c) * N + n) * dim + offs_d
                tl.store(ckpt_ptr + ck, h[n], mask=d_mask)
            Bn = load_bc(B_ptr, b_base, n, offs_t, d_mask, t_mask, B_sn, B_st, B_MODE)
            Cn = load_bc(C_ptr, c_base, n, offs_t, d_mask, t_mask, C_sn, C_st, C_MODE)
            a = exp2(dt * A_cols[n][:, None], FAST_EXP2)  # (BLOCK_D, T)
            b = dtu * Bn
            b = tl.where(first, b + a * h[n][:, None], b)  # the carried state enters at step 0
            _, hs = tl.associative_scan((a, b), axis=1, combine_fn=affine_combine)
            y += hs * Cn
            # Padded steps are identities, so the last step holds the state after the chunk.
            h_next = h_next + (column(hs, last),)
        h = h_next

        if HAS_D:
            y += u * Dv[:, None]
        if HAS_Z:
            if SAVE_Y:
                tl.store(ypre_ptr + ptrs, y.to(ypre_ptr.dtype.element_ty), mask=m2)
            zv = z_raw.to(tl.float32)
            y *= zv * tl.sigmoid(zv)
            z_raw = z_next
        tl.store(out_ptr + ptrs, y.to(out_ptr.dtype.element_ty), mask=m2)
        u_raw = u_next
        dl_raw = dl_next

    for n in tl.static_range(N):
        tl.store(last_ptr + state_row + n, h[n], mask=d_mask)
