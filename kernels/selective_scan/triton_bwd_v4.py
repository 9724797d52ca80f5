"""Triton backward kernel of the selective scan with fewer live registers per lane ("v4").

The math is v3's (``triton_bwd_v2.py`` with the forward's pre-gate output, ``Y_SAVED``): per chunk,
last to first, and per state n (a run-time loop) recompute a_t = exp(Δ_t A), h_t from the stored
chunk-start state, run the adjoint r_t = C_t dy_t + a_{t+1} r_{t+1} backwards, and accumulate

    dΔ_t = Σ_n r_t (A a_t h_{t-1} + B_t u_t),   dA = Σ_t r_t a_t h_{t-1} Δ_t,   du_t = Δ_t Σ_n r_t B_t + D dy_t,
    dB_t = Σ_d r_t Δ_t u_t,   dC_t = Σ_d dy_t h_t,   carry = a_0 r_0.

What differs is how the two scans cross lanes. At the GPU launch (16 channels, one warp, chunk 16)
a channel's 16 steps lie in two lanes of 8 (16-byte vectors). ``tl.associative_scan`` over that
axis keeps, per operand, the lane's 8 local prefixes live until the other lane's aggregate
arrives, then patches every element (v3: ~168 registers per thread, 12 one-warp programs per SM).
Here every tile is (BLOCK_D, 2, T / 2): the chunk as two sub-chunks, each a lane's run of steps at
that launch, and each scan is done in two in-lane folds:

1. fold each sub-chunk from a zero carry and keep only its summary (the decay product D and the
   local end value), whose intermediates die at once;
2. combine the two summaries (one cross-lane exchange of a (BLOCK_D, 2) tile);
3. fold each sub-chunk again from its true carry, keeping the 8 outputs.

Two folds cost about what the patch-up did (a multiply-add per element), but only the outputs
stay live. The decay product of a sub-chunk is the same in both directions, so the reverse scan
reuses the forward's. With ``RELOAD`` the kernel also keeps u and the pre-softplus Δ out of the
state loop (reloaded from L1/L2 after it) and rebuilds b = Δ B u where it is needed instead of
keeping it: three fewer (BLOCK_D, T) tiles live across the loop.

The two-sub-chunk split is a property of the tiles, not of the hardware: any BLOCK_D, warps and
even T are correct (at other launches a sub-chunk may span lanes and the compiler inserts the
exchanges). Layout of scratch, segments, partial sums and dB / dC accumulation: as v3.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .triton_bwd_v2 import LN2, init_state_scratch
from .triton_common import LOG2E, bc_base, delta_activation, exp2, softplus_grad

SUB = tl.constexpr(2)  # sub-chunks per chunk (a lane each at the GPU launch)


@triton.jit
def _steps(x, BLOCK_D: tl.constexpr, H: tl.constexpr, LOG2H: tl.constexpr):
    """A (BLOCK_D, SUB, H) tile as a tuple of its H steps, each (BLOCK_D, SUB, 1), by repeated
    halving (reshape / permute / split of an in-lane axis: register renaming, no data movement).
    Folding a tuple in Python order is the in-lane scan without ``tl.associative_scan``, whose
    lowering shuffles even along an in-lane axis (8 SHFL forward, 31 reverse, offline sm_90)."""
    parts = (x,)
    for lvl in tl.static_range(LOG2H):
        halves = ()
        for p in tl.static_range(1 << lvl):
            lo, hi = tl.split(tl.permute(tl.reshape(parts[p], (BLOCK_D, SUB, 2, (H >> lvl) // 2)), (0, 1, 3, 2)))
            halves = halves + (lo, hi)
        parts = halves
    return parts


@triton.jit
def _join_steps(parts, BLOCK_D: tl.constexpr, H: tl.constexpr, LOG2H: tl.constexpr):
    """The inverse of ``_steps``: a tuple of H (BLOCK_D, SUB, 1) steps as one (BLOCK_D, SUB, H) tile."""
    for lvl in tl.static_range(LOG2H):
        merged = ()  # parts of 2 << lvl steps
        for p in tl.static_range(H // (2 << lvl)):
            both = tl.permute(tl.join(parts[2 * p], parts[2 * p + 1]), (0, 1, 3, 2))  # (BLOCK_D, SUB, 2, 1 << lvl)
            merged = merged + (tl.reshape(both, (BLOCK_D, SUB, 2 << lvl)),)
        parts = merged
    return parts[0]


@triton.jit
def _sub0(x):
    """Sub-chunk 0's value of a (BLOCK_D, SUB, 1) tile, as (BLOCK_D,)."""
    j = tl.arange(0, SUB)[None, :, None]
    return tl.sum(tl.sum(tl.where(j == 0, x, 0.0), axis=2), axis=1)


@triton.jit
def _sub1(x):
    """Sub-chunk 1's value of a (BLOCK_D, SUB, 1) tile, as (BLOCK_D,)."""
    j = tl.arange(0, SUB)[None, :, None]
    return tl.sum(tl.sum(tl.where(j == 1, x, 0.0), axis=2), axis=1)


@triton.jit
def _bc3(ptr, base, n, offs_t, d_mask, t_mask, s_n, s_t, MODE: tl.constexpr):
    """State n's B or C for one chunk in fp32, broadcastable to (BLOCK_D, SUB, H); 0 when masked.
    ``offs_t`` / ``t_mask``: (1, SUB, H). MODE as ``triton_common.BC_*``."""
    if MODE == 0:
        v = tl.load(ptr + (base + n * s_n)[:, None, None], mask=d_mask[:, None, None], other=0.0)
    elif MODE == 1:
        v = tl.load(ptr + base + n * s_n + offs_t.to(tl.int64) * s_t, mask=t_mask, other=0.0)
    else:
        v = tl.load(ptr + (base + n * s_n)[:, None, None] + offs_t.to(tl.int64) * s_t,
                    mask=d_mask[:, None, None] & t_mask, other=0.0)
    return v.to(tl.float32)


@triton.jit
def _add_bc3(val, ptr, inv_offs, base, n, offs_t, d_mask, t_mask, s_n, s_t, part_row, seqlen,
             MODE: tl.constexpr, PARTIALS: tl.constexpr):
    """``triton_bwd_v2._add_bc_grad`` for (BLOCK_D, SUB, H) tiles: time-invariant per-row sums,
    group-tile channel sums (atomics, or stored per program with PARTIALS), or per-element atomics."""
    if MODE == 0:
        tot = tl.sum(tl.sum(val, axis=2), axis=1)
        tl.store(ptr + inv_offs, tl.load(ptr + inv_offs, mask=d_mask, other=0.0) + tot, mask=d_mask)
    elif MODE == 1:
        row_sum = tl.sum(val, axis=0, keep_dims=True)  # (1, SUB, H)
        if PARTIALS:
            tl.store(ptr + (part_row + n) * seqlen + offs_t, row_sum, mask=t_mask)
        else:
            tl.atomic_add(ptr + base + n * s_n + offs_t.to(tl.int64) * s_t, row_sum, mask=t_mask, sem="relaxed")
    else:
        tl.atomic_add(ptr + (base + n * s_n)[:, None, None] + offs_t.to(tl.int64) * s_t, val,
                      mask=d_mask[:, None, None] & t_mask, sem="relaxed")


@triton.jit
def scan_bwd_v4_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, dout_ptr, ckpt_ptr, dlast_ptr,
    du_ptr, ddelta_ptr, dz_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr, dh0_ptr, ypre_ptr,
    dim, seqlen, dstate, nchunks, ckpt_chunks,
    seg_loc_ptr, seg_dec_ptr, chunks_per_seg, nseg,
    B_dpg, B_sb, B_sg, B_sn, B_st,
    C_dpg, C_sb, C_sg, C_sn, C_st,
    BLOCK_D: tl.constexpr, T: tl.constexpr,
    B_MODE: tl.constexpr, C_MODE: tl.constexpr,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, FAST_EXP2: tl.constexpr,
    HAS_DLAST: tl.constexpr, BC_PARTIALS: tl.constexpr = False,
    CKPT_EVERY: tl.constexpr = 1, SEGMENTED: tl.constexpr = False, FAST_SOFTPLUS: tl.constexpr = False,
    LOG2H: tl.constexpr = 3, RELOAD: tl.constexpr = True,
):
    # Arguments and buffers exactly as ``scan_bwd_v2_kernel`` with Y_SAVED (ypre_ptr holds the
    # forward's pre-gate output when z is given; without z it is unused). T is even.
    H: tl.constexpr = T // SUB  # steps per sub-chunk
    pid_d = tl.program_id(0)
    pid_b = tl.program_id(1)
    pid_s = tl.program_id(2)
    nbatch = tl.num_programs(1)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    d_mask = offs_d < dim
    state_row = (pid_b.to(tl.int64) * dim + offs_d) * dstate  # (BLOCK_D,) into (batch, dim, dstate)
    seg_row = (pid_s.to(tl.int64) * nbatch + pid_b) * dim + offs_d  # (BLOCK_D,) into (nseg, batch, dim)
    scratch_row = seg_row * dstate  # into (nseg, batch, dim, dstate)
    b_base = bc_base(pid_b, offs_d, B_dpg, B_sb, B_sg, BLOCK_D, B_MODE)
    c_base = bc_base(pid_b, offs_d, C_dpg, C_sb, C_sg, BLOCK_D, C_MODE)

    # The adjoint entering this segment from the right, per state, into the scratch (as v3).
    init_state_scratch(dlast_ptr, seg_loc_ptr, seg_dec_ptr, dh0_ptr, dA_ptr, dB_ptr, dC_ptr, state_row, scratch_row,
                       offs_d, d_mask, pid_b, pid_s, nbatch, nseg, dim, dstate,
                       BLOCK_D, B_MODE, C_MODE, HAS_DLAST, SEGMENTED)
    bias = tl.zeros([BLOCK_D, 1], dtype=tl.float32)  # (BLOCK_D, 1): delta_activation adds bias[:, None]
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=d_mask, other=0.0).to(tl.float32)[:, None]
    if HAS_D:
        Dv = tl.load(D_ptr + offs_d, mask=d_mask, other=0.0).to(tl.float32)[:, None, None]
    dD_acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    dbias_acc = tl.zeros([BLOCK_D], dtype=tl.float32)

    row = (pid_b.to(tl.int64) * dim + offs_d) * seqlen  # (BLOCK_D,) start of each channel's row
    sub = tl.arange(0, SUB)
    steps = sub[None, :, None] * H + tl.arange(0, H)[None, None, :]  # (1, SUB, H): step within the chunk
    is_sub0 = (sub == 0)[None, :, None]  # (1, SUB, 1)
    part_row = (pid_b.to(tl.int64) * tl.num_programs(0) + pid_d) * dstate

    seg_lo = pid_s * chunks_per_seg
    seg_hi = tl.minimum(seg_lo + chunks_per_seg, nchunks)
    for i in range(seg_hi - seg_lo):
        tl.debug_barrier()  # scratch written by other lanes of this program must be visible
        c = seg_hi - 1 - i
        offs_t = c * T + steps  # (1, SUB, H)
        t_mask = offs_t < seqlen
        m3 = d_mask[:, None, None] & t_mask
        ptrs = row[:, None, None] + offs_t  # (BLOCK_D, SUB, H)
        ck = (pid_b.to(tl.int64) * ckpt_chunks + c * CKPT_EVERY) * dstate * dim + offs_d  # (BLOCK_D,)
        # Masked steps and channels: Δ = 0 (identities) and dout = 0 (no adjoint source).
        u = tl.load(u_ptr + ptrs, mask=m3, other=0.0).to(tl.float32)
        dt, raw = delta_activation(tl.load(delta_ptr + ptrs, mask=m3, other=0.0).to(tl.float32), m3, bias,
                                   HAS_BIAS, SOFTPLUS, FAST_SOFTPLUS)
        dtu = dt * u
        dy = tl.load(dout_ptr + ptrs, mask=m3, other=0.0).to(tl.float32)
        if HAS_Z:
            y = tl.load(ypre_ptr + ptrs, mask=m3, other=0.0).to(tl.float32)
            zv = tl.load(z_ptr + ptrs, mask=m3, other=0.0).to(tl.float32)
            sz = tl.sigmoid(zv)
            tl.store(dz_ptr + ptrs, (dy * y * sz * (1.0 + zv * (1.0 - sz))).to(dz_ptr.dtype.element_ty), mask=m3)
            dy = dy * zv * sz
        if HAS_D:
            dD_acc += tl.sum(tl.sum(dy * u, axis=2), axis=1)

        rhbA = tl.zeros([BLOCK_D, SUB, H], dtype=tl.float32)  # Σ_n r a h_prev A log2(e)
        rB = tl.zeros([BLOCK_D, SUB, H], dtype=tl.float32)  # Σ_n r B
        dt_s = _steps(dt, BLOCK_D, H, LOG2H)  # H tiles (BLOCK_D, SUB, 1): renamed registers
        dtu_s = _steps(dtu, BLOCK_D, H, LOG2H)
        dy_s = _steps(dy, BLOCK_D, H, LOG2H)
        for n in range(dstate):
            A2n = tl.load(A_ptr + offs_d * dstate + n, mask=d_mask, other=0.0).to(tl.float32) * LOG2E
            A2 = A2n[:, None, None]
            h0n = tl.load(ckpt_ptr + ck + n * dim, mask=d_mask, other=0.0)  # (BLOCK_D,)
            carry = tl.load(dh0_ptr + scratch_row + n, mask=d_mask, other=0.0)  # adjoint after the chunk
            zero = tl.zeros([BLOCK_D, SUB, H], dtype=tl.float32)  # broadcasts every B / C layout to a tile
            B_s = _steps(_bc3(B_ptr, b_base, n, offs_t, d_mask, t_mask, B_sn, B_st, B_MODE) + zero, BLOCK_D, H, LOG2H)
            C_s = _steps(_bc3(C_ptr, c_base, n, offs_t, d_mask, t_mask, C_sn, C_st, C_MODE) + zero, BLOCK_D, H, LOG2H)
            a_s = ()
            for t in tl.static_range(H):
                a_s = a_s + (exp2(dt_s[t] * A2, FAST_EXP2),)
            # Forward, fold 1: each sub-chunk from a zero state; keep its decay and end state.
            dec = a_s[0]
            loc = dtu_s[0] * B_s[0]
            for t in tl.static_range(1, H):
                dec = dec * a_s[t]
                loc = a_s[t] * loc + dtu_s[t] * B_s[t]
            start1 = _sub0(loc) + _sub0(dec) * h0n  # the state after sub-chunk 0
            h = tl.where(is_sub0, h0n[:, None, None], start1[:, None, None])  # (BLOCK_D, SUB, 1)
            # Fold 2: the states from the true starts.
            hs_s = ()
            for t in tl.static_range(H):
                h = a_s[t] * h + dtu_s[t] * B_s[t]
                hs_s = hs_s + (h,)
            # Reverse, fold 1: r_t = dy_t C_t + q_{t+1}, q_t = a_t r_t, nothing entering a sub-chunk;
            # what a sub-chunk passes back is then (that) + (its decay) x (what enters it).
            q = tl.zeros([BLOCK_D, SUB, 1], dtype=tl.float32)
            for t in tl.static_range(H):
                q = a_s[H - 1 - t] * (dy_s[H - 1 - t] * C_s[H - 1 - t] + q)
            q = tl.where(is_sub0, (_sub1(q) + _sub1(dec) * carry)[:, None, None], carry[:, None, None])
            # Fold 2 from the true adjoints, accumulating every gradient step by step.
            r_s = ()
            rhb_s = ()
            dA_t = tl.zeros([BLOCK_D, SUB, 1], dtype=tl.float32)
            for t in tl.static_range(H):
                r = dy_s[H - 1 - t] * C_s[H - 1 - t] + q
                q = a_s[H - 1 - t] * r
                rhb = r * (hs_s[H - 1 - t] - dtu_s[H - 1 - t] * B_s[H - 1 - t])  # r_t a_t h_{t-1}, b_t rebuilt
                dA_t += rhb * dt_s[H - 1 - t]
                r_s = (r,) + r_s
                rhb_s = (rhb,) + rhb_s
            tl.store(dh0_ptr + scratch_row + n, _sub0(q), mask=d_mask)  # a_0 r_0 of the chunk
            r_all = _join_steps(r_s, BLOCK_D, H, LOG2H)
            rhbA += _join_steps(rhb_s, BLOCK_D, H, LOG2H) * A2
            Bt = _join_steps(B_s, BLOCK_D, H, LOG2H)
            rB += r_all * Bt
            dA_n = tl.load(dA_ptr + scratch_row + n, mask=d_mask, other=0.0)
            tl.store(dA_ptr + scratch_row + n, dA_n + tl.sum(tl.sum(dA_t, axis=2), axis=1), mask=d_mask)
            _add_bc3(r_all * dtu, dB_ptr, scratch_row + n, b_base, n, offs_t, d_mask, t_mask, B_sn, B_st,
                     part_row, seqlen, B_MODE, BC_PARTIALS)
            _add_bc3(_join_steps(hs_s, BLOCK_D, H, LOG2H) * dy, dC_ptr, scratch_row + n, c_base, n, offs_t, d_mask,
                     t_mask, C_sn, C_st, part_row, seqlen, C_MODE, BC_PARTIALS)

        if RELOAD:  # u and the pre-softplus Δ again (L1 / L2 hits): not live across the state loop
            u = tl.load(u_ptr + ptrs, mask=m3, other=0.0).to(tl.float32)
            dt, raw = delta_activation(tl.load(delta_ptr + ptrs, mask=m3, other=0.0).to(tl.float32), m3, bias,
                                       HAS_BIAS, SOFTPLUS, FAST_SOFTPLUS)
        ddt = rhbA * LN2 + u * rB
        du = dt * rB
        if HAS_D:
            du += dy * Dv
        if SOFTPLUS:
            ddt = ddt * softplus_grad(raw, FAST_SOFTPLUS)
        ddt = tl.where(m3, ddt, 0.0)
        dbias_acc += tl.sum(tl.sum(ddt, axis=2), axis=1)
        tl.store(du_ptr + ptrs, du.to(du_ptr.dtype.element_ty), mask=m3)
        tl.store(ddelta_ptr + ptrs, ddt.to(ddelta_ptr.dtype.element_ty), mask=m3)

    if HAS_D:
        tl.store(dD_ptr + seg_row, dD_acc, mask=d_mask)
    if HAS_BIAS:
        tl.store(dbias_ptr + seg_row, dbias_acc, mask=d_mask)
