"""Triton forward kernel of the selective scan.

One program owns BLOCK_D channels (tiles (T, N, BLOCK_D), see triton_common.py) of one batch row and walks the sequence in chunks of T steps,
carrying the (BLOCK_D, N) state in registers. Inside a chunk the recurrence h_t = a_t h_{t-1} + b_t
is an associative scan over (a, b) pairs, so the T steps run in parallel. Inputs are read once; the
state at each chunk start is stored (fp32, (batch, dim, nchunks, dstate)) so the backward pass can
recompute the chunk's states instead of keeping all of them.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .triton_common import LOG2E, affine_combine, bc_mask, bc_offsets, load_dt


@triton.jit
def scan_fwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, h0_ptr,
    out_ptr, last_ptr, ckpt_ptr,
    dim, seqlen, dstate, nchunks,
    B_dpg, B_sb, B_sg, B_sn, B_st,
    C_dpg, C_sb, C_sg, C_sn, C_st,
    BLOCK_D: tl.constexpr, N: tl.constexpr, T: tl.constexpr,
    B_MODE: tl.constexpr, C_MODE: tl.constexpr,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    HAS_H0: tl.constexpr, SAVE_CKPT: tl.constexpr,
):
    pid_d = tl.program_id(0)
    pid_b = tl.program_id(1)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, N)
    d_mask = offs_d < dim
    n_mask = offs_n < dstate
    nd_mask = n_mask[:, None] & d_mask[None, :]
    # (N, BLOCK_D) offsets into (batch, dim, dstate) tensors
    state_offs = (pid_b.to(tl.int64) * dim + offs_d[None, :]) * dstate + offs_n[:, None]

    # exp(Δ A) = exp2(Δ · A log2 e): pre-multiply once.
    A2 = tl.load(A_ptr + offs_d[None, :] * dstate + offs_n[:, None], mask=nd_mask, other=0.0).to(tl.float32) * LOG2E
    bias = tl.zeros([BLOCK_D], dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=d_mask, other=0.0).to(tl.float32)
    if HAS_D:
        Dv = tl.load(D_ptr + offs_d, mask=d_mask, other=0.0).to(tl.float32)
    if HAS_H0:
        h = tl.load(h0_ptr + state_offs, mask=nd_mask, other=0.0).to(tl.float32)
    else:
        h = tl.zeros([N, BLOCK_D], dtype=tl.float32)
    row = (pid_b.to(tl.int64) * dim + offs_d) * seqlen  # (BLOCK_D,) start of each channel's row
    last_step = (tl.arange(0, T) == T - 1)[:, None, None]

    for c in range(nchunks):
        if SAVE_CKPT:
            ck = ((pid_b.to(tl.int64) * dim + offs_d[None, :]) * nchunks + c) * dstate + offs_n[:, None]
            tl.store(ckpt_ptr + ck, h, mask=nd_mask)
        offs_t = c * T + tl.arange(0, T)
        t_mask = offs_t < seqlen
        m2 = t_mask[:, None] & d_mask[None, :]
        ptrs = offs_t[:, None] + row[None, :]  # (T, BLOCK_D)
        u = tl.load(u_ptr + ptrs, mask=m2, other=0.0).to(tl.float32)
        dt, _ = load_dt(delta_ptr + ptrs, m2, bias, HAS_BIAS, SOFTPLUS)
        Bv = tl.load(B_ptr + bc_offsets(pid_b, offs_d, offs_n, offs_t, B_dpg, B_sb, B_sg, B_sn, B_st, BLOCK_D, B_MODE),
                     mask=bc_mask(d_mask, n_mask, t_mask, B_MODE), other=0.0).to(tl.float32)
        Cv = tl.load(C_ptr + bc_offsets(pid_b, offs_d, offs_n, offs_t, C_dpg, C_sb, C_sg, C_sn, C_st, BLOCK_D, C_MODE),
                     mask=bc_mask(d_mask, n_mask, t_mask, C_MODE), other=0.0).to(tl.float32)

        a = tl.exp2(dt[:, None, :] * A2[None, :, :])  # (T, N, BLOCK_D)
        b = (dt * u)[:, None, :] * Bv  # (T, N, BLOCK_D)
        pa, pb = tl.associative_scan((a, b), axis=0, combine_fn=affine_combine)
        hs = pa * h[None, :, :] + pb  # states after each step
        y = tl.sum(hs * Cv, axis=1)  # (T, BLOCK_D)
        # Padded steps are identities, so the last step holds the state after the chunk.
        h = tl.sum(tl.where(last_step, hs, 0.0), axis=0)

        if HAS_D:
            y += u * Dv[None, :]
        if HAS_Z:
            zv = tl.load(z_ptr + ptrs, mask=m2, other=0.0).to(tl.float32)
            y *= zv * tl.sigmoid(zv)
        tl.store(out_ptr + ptrs, y.to(out_ptr.dtype.element_ty), mask=m2)

    tl.store(last_ptr + state_offs, h, mask=nd_mask)
