"""Triton backward kernel of the selective scan.

One program owns BLOCK_D channels of one batch row and walks the chunks from last to first. For a
chunk it reloads the inputs, recomputes the states from the stored chunk-start state (forward scan),
then runs the adjoint recurrence r_t = C_t dy_t + a_{t+1} r_{t+1} as a reverse scan, carrying
a_t r_t (the gradient of the state before the chunk) to the previous chunk. All gradients follow
from r_t, h_t and b_t at the same step:

    d b_t = r_t,   a_t h_{t-1} = h_t - b_t,
    dΔ_t = Σ_n r_t (A (h_t - b_t) + B_t u_t),   dA = Σ_t r_t (h_t - b_t) Δ_t,
    du_t = Δ_t Σ_n r_t B_t + D dy_t,   dB_t = Σ_d r_t Δ_t u_t,   dC_t = Σ_d dy_t h_t.

dB and dC of the time-varying forms are fp32 sums over channel blocks (relaxed atomics); every
per-channel parameter gradient is written per batch row and summed by the launcher, so those are
deterministic.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .triton_common import LOG2E, adjoint_combine, affine_combine, exp2


@triton.jit
def _load_dt_tnd(delta_ptrs, mask, bias, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """Δ tile (T, BLOCK_D) in fp32 after bias and softplus; 0 outside ``mask`` so padded steps are
    identities (exp(0·A) = 1, Δ·B·u = 0). Also returns the pre-softplus value for the backward."""
    raw = tl.load(delta_ptrs, mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        raw = raw + bias[None, :]
    dt = raw
    if SOFTPLUS:
        # log(1 + e^x) for x <= 20, x above (as mamba_ssm); the clamp keeps exp finite.
        dt = tl.where(raw > 20.0, raw, tl.log(1.0 + tl.exp(tl.minimum(raw, 20.0))))
    return tl.where(mask, dt, 0.0), raw


@triton.jit
def _bc_offsets_tnd(pid_b, offs_d, offs_n, offs_t, dim_per_group, s_b, s_g, s_n, s_t,
               BLOCK_D: tl.constexpr, MODE: tl.constexpr):
    """Element offsets of the B or C tile. MODE BC_INVARIANT: (1, N, BLOCK_D) with s_g the channel
    stride; BC_GROUP_TILE: (T, N, 1) for the group of the block's first channel; BC_PER_CHANNEL:
    (T, N, BLOCK_D), each channel reading its own group."""
    if MODE == 0:
        offs = (offs_n[:, None] * s_n + offs_d[None, :] * s_g)[None, :, :]
    elif MODE == 1:
        g = (tl.program_id(0) * BLOCK_D) // dim_per_group
        base = pid_b.to(tl.int64) * s_b + g * s_g
        offs = (base + offs_t[:, None].to(tl.int64) * s_t + offs_n[None, :] * s_n)[:, :, None]
    else:
        g = offs_d // dim_per_group
        base = pid_b.to(tl.int64) * s_b + g.to(tl.int64) * s_g
        offs = (base[None, None, :] + offs_t[:, None, None].to(tl.int64) * s_t
                + offs_n[None, :, None] * s_n)
    return offs


@triton.jit
def _bc_mask_tnd(d_mask, n_mask, t_mask, MODE: tl.constexpr):
    """Mask matching ``bc_offsets``'s tile shape."""
    if MODE == 0:
        m = (n_mask[:, None] & d_mask[None, :])[None, :, :]
    elif MODE == 1:
        m = (t_mask[:, None] & n_mask[None, :])[:, :, None]
    else:
        m = t_mask[:, None, None] & n_mask[None, :, None] & d_mask[None, None, :]
    return m


@triton.jit
def _reduce_bc_grad(val, acc, ptr, pid_b, offs_d, offs_n, offs_t, d_mask, n_mask, t_mask,
                    dpg, s_b, s_g, s_n, s_t, BLOCK_D: tl.constexpr, MODE: tl.constexpr):
    """Add a (T, N, BLOCK_D) gradient tile of B or C where it belongs: summed over time into the
    per-program accumulator (time-invariant form) or over channels into the fp32 buffer."""
    if MODE == 0:
        acc += tl.sum(val, axis=0)
    elif MODE == 1:
        offs = _bc_offsets_tnd(pid_b, offs_d, offs_n, offs_t, dpg, s_b, s_g, s_n, s_t, BLOCK_D, MODE)
        m = _bc_mask_tnd(d_mask, n_mask, t_mask, MODE)
        tl.atomic_add(ptr + offs, tl.sum(val, axis=2)[:, :, None], mask=m, sem="relaxed")
    else:
        offs = _bc_offsets_tnd(pid_b, offs_d, offs_n, offs_t, dpg, s_b, s_g, s_n, s_t, BLOCK_D, MODE)
        m = _bc_mask_tnd(d_mask, n_mask, t_mask, MODE)
        tl.atomic_add(ptr + offs, val, mask=m, sem="relaxed")
    return acc


@triton.jit
def scan_bwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, dout_ptr, ckpt_ptr, dlast_ptr,
    du_ptr, ddelta_ptr, dz_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr, dh0_ptr,
    dim, seqlen, dstate, nchunks,
    B_dpg, B_sb, B_sg, B_sn, B_st,
    C_dpg, C_sb, C_sg, C_sn, C_st,
    BLOCK_D: tl.constexpr, N: tl.constexpr, T: tl.constexpr,
    B_MODE: tl.constexpr, C_MODE: tl.constexpr,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, FAST_EXP2: tl.constexpr,
    HAS_DLAST: tl.constexpr,
):
    # dB_ptr / dC_ptr: fp32 buffers shaped like B / C (time-varying forms, same strides as B / C),
    # or (batch, dim, dstate) per-row partial sums (time-invariant form).
    # dA_ptr: (batch, dim, dstate), dD_ptr / dbias_ptr: (batch, dim) per-row partial sums, fp32.
    pid_d = tl.program_id(0)
    pid_b = tl.program_id(1)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, N)
    d_mask = offs_d < dim
    n_mask = offs_n < dstate
    nd_mask = n_mask[:, None] & d_mask[None, :]
    state_offs = (pid_b.to(tl.int64) * dim + offs_d[None, :]) * dstate + offs_n[:, None]  # (N, BLOCK_D)

    A = tl.load(A_ptr + offs_d[None, :] * dstate + offs_n[:, None], mask=nd_mask, other=0.0).to(tl.float32)
    A2 = A * LOG2E
    bias = tl.zeros([BLOCK_D], dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=d_mask, other=0.0).to(tl.float32)
    if HAS_D:
        Dv = tl.load(D_ptr + offs_d, mask=d_mask, other=0.0).to(tl.float32)
    # carry: gradient w.r.t. the state at the end of the current chunk from everything after it
    if HAS_DLAST:
        carry = tl.load(dlast_ptr + state_offs, mask=nd_mask, other=0.0).to(tl.float32)
    else:
        carry = tl.zeros([N, BLOCK_D], dtype=tl.float32)
    row = (pid_b.to(tl.int64) * dim + offs_d) * seqlen
    first_step = (tl.arange(0, T) == 0)[:, None, None]
    ones = tl.full([T, N, BLOCK_D], 1.0, dtype=tl.float32)
    dA_acc = tl.zeros([N, BLOCK_D], dtype=tl.float32)
    dB_acc = tl.zeros([N, BLOCK_D], dtype=tl.float32)
    dC_acc = tl.zeros([N, BLOCK_D], dtype=tl.float32)
    dD_acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    dbias_acc = tl.zeros([BLOCK_D], dtype=tl.float32)

    for i in range(nchunks):
        c = nchunks - 1 - i
        ck = ((pid_b.to(tl.int64) * nchunks + c) * dstate + offs_n[:, None]) * dim + offs_d[None, :]
        h0 = tl.load(ckpt_ptr + ck, mask=nd_mask, other=0.0)
        offs_t = c * T + tl.arange(0, T)
        t_mask = offs_t < seqlen
        m2 = t_mask[:, None] & d_mask[None, :]
        ptrs = offs_t[:, None] + row[None, :]  # (T, BLOCK_D)
        u = tl.load(u_ptr + ptrs, mask=m2, other=0.0).to(tl.float32)
        dt, raw = _load_dt_tnd(delta_ptr + ptrs, m2, bias, HAS_BIAS, SOFTPLUS)
        Bv = tl.load(B_ptr + _bc_offsets_tnd(pid_b, offs_d, offs_n, offs_t, B_dpg, B_sb, B_sg, B_sn, B_st, BLOCK_D, B_MODE),
                     mask=_bc_mask_tnd(d_mask, n_mask, t_mask, B_MODE), other=0.0).to(tl.float32)
        Cv = tl.load(C_ptr + _bc_offsets_tnd(pid_b, offs_d, offs_n, offs_t, C_dpg, C_sb, C_sg, C_sn, C_st, BLOCK_D, C_MODE),
                     mask=_bc_mask_tnd(d_mask, n_mask, t_mask, C_MODE), other=0.0).to(tl.float32)
        dout = tl.load(dout_ptr + ptrs, mask=m2, other=0.0).to(tl.float32)

        # Recompute the chunk's states.
        a = exp2(dt[:, None, :] * A2[None, :, :], FAST_EXP2)  # (T, N, BLOCK_D)
        b = (dt * u)[:, None, :] * Bv  # (T, N, BLOCK_D)
        pa, pb = tl.associative_scan((a, b), axis=0, combine_fn=affine_combine)
        hs = pa * h0[None, :, :] + pb

        # Output gate: out = (y + D u) * silu(z).
        dy = dout
        if HAS_Z:
            y = tl.sum(hs * Cv, axis=1)  # (T, BLOCK_D)
            if HAS_D:
                y += u * Dv[None, :]
            zv = tl.load(z_ptr + ptrs, mask=m2, other=0.0).to(tl.float32)
            sz = tl.sigmoid(zv)
            dy = dout * zv * sz
            dz = dout * y * sz * (1.0 + zv * (1.0 - sz))
            tl.store(dz_ptr + ptrs, dz.to(dz_ptr.dtype.element_ty), mask=m2)
        if HAS_D:
            dD_acc += tl.sum(dy * u, axis=0)

        # Adjoint: r_t = C_t dy_t + a_{t+1} r_{t+1}, as a reverse scan plus the carried tail.
        cterm = dy[:, None, :] * Cv
        _, xs, rs = tl.associative_scan((a, ones, cterm), axis=0, combine_fn=adjoint_combine, reverse=True)
        r = rs + xs * carry[None, :, :]  # (T, N, BLOCK_D)
        carry = tl.sum(tl.where(first_step, a * r, 0.0), axis=0)

        hb = hs - b  # a_t h_{t-1}
        rB = tl.sum(r * Bv, axis=1)  # (T, BLOCK_D)
        ddt = tl.sum(r * hb * A[None, :, :], axis=1) + u * rB
        du = dt * rB
        if HAS_D:
            du += dy * Dv[None, :]
        dA_acc += tl.sum(r * hb * dt[:, None, :], axis=0)
        dB_acc = _reduce_bc_grad(r * (dt * u)[:, None, :], dB_acc, dB_ptr, pid_b, offs_d, offs_n, offs_t,
                                 d_mask, n_mask, t_mask, B_dpg, B_sb, B_sg, B_sn, B_st, BLOCK_D, B_MODE)
        dC_acc = _reduce_bc_grad(hs * dy[:, None, :], dC_acc, dC_ptr, pid_b, offs_d, offs_n, offs_t,
                                 d_mask, n_mask, t_mask, C_dpg, C_sb, C_sg, C_sn, C_st, BLOCK_D, C_MODE)
        if SOFTPLUS:
            ddt = ddt * tl.sigmoid(raw)
        ddt = tl.where(m2, ddt, 0.0)
        dbias_acc += tl.sum(ddt, axis=0)
        tl.store(du_ptr + ptrs, du.to(du_ptr.dtype.element_ty), mask=m2)
        tl.store(ddelta_ptr + ptrs, ddt.to(ddelta_ptr.dtype.element_ty), mask=m2)

    row_offs = pid_b.to(tl.int64) * dim + offs_d
    tl.store(dh0_ptr + state_offs, carry, mask=nd_mask)
    tl.store(dA_ptr + state_offs, dA_acc, mask=nd_mask)
    if B_MODE == 0:
        tl.store(dB_ptr + state_offs, dB_acc, mask=nd_mask)
    if C_MODE == 0:
        tl.store(dC_ptr + state_offs, dC_acc, mask=nd_mask)
    if HAS_D:
        tl.store(dD_ptr + row_offs, dD_acc, mask=d_mask)
    if HAS_BIAS:
        tl.store(dbias_ptr + row_offs, dbias_acc, mask=d_mask)
