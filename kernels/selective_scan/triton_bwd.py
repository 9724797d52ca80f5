"""Triton backward kernel of the selective scan.

One program owns BLOCK_D channels of one batch row (tiles as in ``triton_common``) and walks the
chunks from last to first. For each chunk and each state n (a compile-time loop) it recomputes the
chunk's states from the stored chunk-start state (a sequential fold inside the thread), then runs
the adjoint r_t = C_t dy_t + a_{t+1} r_{t+1} as a reverse fold with the adjoint from beyond the
chunk folded into the last step, carrying a_0 r_0 (the gradient of the state before the chunk)
to the previous chunk. All gradients follow from r_t, h_t and b_t at the same step:

    d b_t = r_t,   a_t h_{t-1} = h_t - b_t,
    dΔ_t = Σ_n r_t (A (h_t - b_t) + B_t u_t),   dA = Σ_t r_t (h_t - b_t) Δ_t,
    du_t = Δ_t Σ_n r_t B_t + D dy_t,   dB_t = Σ_d r_t Δ_t u_t,   dC_t = Σ_d dy_t h_t.

dB and dC of the time-varying forms are summed over the program's channels, then added into fp32
buffers with relaxed atomics; every per-channel parameter gradient (and the time-invariant dB, dC)
is written per batch row and summed by the launcher, so those are deterministic.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .triton_common import (
    LOG2E,
    adjoint_combine,
    affine_combine,
    bc_base,
    bc_mask,
    bc_offsets,
    column,
    delta_activation,
    exp2,
    load_bc,
)


@triton.jit
def _add_bc_grad(val, acc, ptr, base, n, offs_t, d_mask, t_mask, s_n, s_t, MODE: tl.constexpr):
    """Add state n's (BLOCK_D, T) gradient tile of B or C where it belongs: summed over time into
    the per-channel accumulator ``acc`` (time-invariant form, returned updated) or over the
    program's channels into the fp32 buffer (relaxed atomics)."""
    if MODE == 0:
        acc += tl.sum(val, axis=1)
    elif MODE == 1:
        offs = bc_offsets(base, n, offs_t, s_n, s_t, MODE)
        tl.atomic_add(ptr + offs, tl.sum(val, axis=0)[None, :], mask=bc_mask(d_mask, t_mask, MODE), sem="relaxed")
    else:
        offs = bc_offsets(base, n, offs_t, s_n, s_t, MODE)
        tl.atomic_add(ptr + offs, val, mask=bc_mask(d_mask, t_mask, MODE), sem="relaxed")
    return acc


@triton.jit
def scan_bwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, dout_ptr, ckpt_ptr, dlast_ptr,
    du_ptr, ddelta_ptr, dz_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr, dh0_ptr,
    dim, seqlen, nchunks,
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
    d_mask = offs_d < dim
    state_row = (pid_b.to(tl.int64) * dim + offs_d) * N  # (BLOCK_D,) into (batch, dim, dstate)
    b_base = bc_base(pid_b, offs_d, B_dpg, B_sb, B_sg, BLOCK_D, B_MODE)
    c_base = bc_base(pid_b, offs_d, C_dpg, C_sb, C_sg, BLOCK_D, C_MODE)

    # Per state, (BLOCK_D,) each: A, the adjoint carried from the chunk after the current one
    # (the gradient of the state at the end of the chunk), and the dA, dB, dC accumulators.
    A_cols = ()
    carry = ()
    dA_acc = ()
    dB_acc = ()
    dC_acc = ()
    for n in tl.static_range(N):
        A_cols = A_cols + (tl.load(A_ptr + offs_d * N + n, mask=d_mask, other=0.0).to(tl.float32),)
        if HAS_DLAST:
            carry = carry + (tl.load(dlast_ptr + state_row + n, mask=d_mask, other=0.0).to(tl.float32),)
        else:
            carry = carry + (tl.zeros([BLOCK_D], dtype=tl.float32),)
        dA_acc = dA_acc + (tl.zeros([BLOCK_D], dtype=tl.float32),)
        dB_acc = dB_acc + (tl.zeros([BLOCK_D], dtype=tl.float32),)
        dC_acc = dC_acc + (tl.zeros([BLOCK_D], dtype=tl.float32),)
    bias = tl.zeros([BLOCK_D], dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=d_mask, other=0.0).to(tl.float32)
    if HAS_D:
        Dv = tl.load(D_ptr + offs_d, mask=d_mask, other=0.0).to(tl.float32)
    dD_acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    dbias_acc = tl.zeros([BLOCK_D], dtype=tl.float32)

    row = (pid_b.to(tl.int64) * dim + offs_d) * seqlen
    steps = tl.arange(0, T)
    first = (steps == 0)[None, :]
    last = (steps == T - 1)[None, :]
    ones = tl.full([BLOCK_D, T], 1.0, dtype=tl.float32)

    for i in range(nchunks):
        c = nchunks - 1 - i
        offs_t = c * T + steps
        t_mask = offs_t < seqlen
        m2 = d_mask[:, None] & t_mask[None, :]
        ptrs = row[:, None] + offs_t[None, :]  # (BLOCK_D, T)
        u = tl.load(u_ptr + ptrs, mask=m2, other=0.0).to(tl.float32)
        raw = tl.load(delta_ptr + ptrs, mask=m2, other=0.0).to(tl.float32)
        dout = tl.load(dout_ptr + ptrs, mask=m2, other=0.0).to(tl.float32)
        dt, raw = delta_activation(raw, m2, bias, HAS_BIAS, SOFTPLUS)
        dt2 = dt * LOG2E
        dtu = dt * u

        # Output gate: out = (y + D u) * silu(z), so dy = dout silu(z) needs no y; dz does.
        dy = dout
        if HAS_Z:
            zv = tl.load(z_ptr + ptrs, mask=m2, other=0.0).to(tl.float32)
            sz = tl.sigmoid(zv)
            dy = dout * zv * sz
        y = tl.zeros([BLOCK_D, T], dtype=tl.float32)
        ddt = tl.zeros([BLOCK_D, T], dtype=tl.float32)
        rB = tl.zeros([BLOCK_D, T], dtype=tl.float32)
        carry_prev = ()
        dA_new = ()
        dB_new = ()
        dC_new = ()
        for n in tl.static_range(N):
            h0 = tl.load(ckpt_ptr + ((pid_b.to(tl.int64) * nchunks + c) * N + n) * dim + offs_d, mask=d_mask, other=0.0)
            Bn = load_bc(B_ptr, b_base, n, offs_t, d_mask, t_mask, B_sn, B_st, B_MODE)
            Cn = load_bc(C_ptr, c_base, n, offs_t, d_mask, t_mask, C_sn, C_st, C_MODE)
            # Recompute the chunk's states.
            a = exp2(dt2 * A_cols[n][:, None], FAST_EXP2)  # (BLOCK_D, T)
            b = dtu * Bn
            _, hs = tl.associative_scan((a, tl.where(first, b + a * h0[:, None], b)), axis=1,
                                        combine_fn=affine_combine)
            if HAS_Z:
                y += hs * Cn
            # Adjoint, the gradient from beyond the chunk entering at its last step.
            cterm = dy * Cn
            _, _, r = tl.associative_scan((a, ones, tl.where(last, cterm + carry[n][:, None], cterm)), axis=1,
                                          combine_fn=adjoint_combine, reverse=True)
            carry_prev = carry_prev + (column(a * r, first),)

            rhb = r * (hs - b)  # r_t a_t h_{t-1}
            ddt += rhb * A_cols[n][:, None]
            rB += r * Bn
            dA_new = dA_new + (dA_acc[n] + tl.sum(rhb * dt, axis=1),)
            dB_new = dB_new + (_add_bc_grad(r * dtu, dB_acc[n], dB_ptr, b_base, n, offs_t, d_mask, t_mask,
                                            B_sn, B_st, B_MODE),)
            dC_new = dC_new + (_add_bc_grad(hs * dy, dC_acc[n], dC_ptr, c_base, n, offs_t, d_mask, t_mask,
                                            C_sn, C_st, C_MODE),)
        carry = carry_prev
        dA_acc = dA_new
        dB_acc = dB_new
        dC_acc = dC_new

        if HAS_Z:
            if HAS_D:
                y += u * Dv[:, None]
            dz = dout * y * sz * (1.0 + zv * (1.0 - sz))
            tl.store(dz_ptr + ptrs, dz.to(dz_ptr.dtype.element_ty), mask=m2)
        du = dt * rB
        if HAS_D:
            dD_acc += tl.sum(dy * u, axis=1)
            du += dy * Dv[:, None]
        ddt += u * rB
        if SOFTPLUS:
            ddt = ddt * tl.sigmoid(raw)
        ddt = tl.where(m2, ddt, 0.0)
        dbias_acc += tl.sum(ddt, axis=1)
        tl.store(du_ptr + ptrs, du.to(du_ptr.dtype.element_ty), mask=m2)
        tl.store(ddelta_ptr + ptrs, ddt.to(ddelta_ptr.dtype.element_ty), mask=m2)

    row_offs = pid_b.to(tl.int64) * dim + offs_d
    for n in tl.static_range(N):
        tl.store(dh0_ptr + state_row + n, carry[n], mask=d_mask)
        tl.store(dA_ptr + state_row + n, dA_acc[n], mask=d_mask)
        if B_MODE == 0:
            tl.store(dB_ptr + state_row + n, dB_acc[n], mask=d_mask)
        if C_MODE == 0:
            tl.store(dC_ptr + state_row + n, dC_acc[n], mask=d_mask)
    if HAS_D:
        tl.store(dD_ptr + row_offs, dD_acc, mask=d_mask)
    if HAS_BIAS:
        tl.store(dbias_ptr + row_offs, dbias_acc, mask=d_mask)
