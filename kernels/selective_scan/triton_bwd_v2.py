"""Triton backward kernel of the selective scan, in the forward kernel's layout (version 2).

One program owns BLOCK_D channels of one batch row (a channel per lane, as ``triton_fwd.py``) and
walks the chunks from last to first. Tiles are (BLOCK_D, T) with each channel's steps inside its
thread (up to a 16-byte vector per lane); the state index is a run-time loop, and what a state
carries between chunks (the adjoint, dA, time-invariant dB/dC) is kept in the output buffers
(see the kernel's comment). Per chunk:

- pass 1 (only with z, which needs y): for each state, recompute the chunk's states from the
  stored chunk-start state and accumulate y = Σ_n C_n h_n; then dz and dy;
- pass 2, each state on its own: recompute a_t = exp(Δ_t A) and h_t, run the adjoint
  r_t = C_t dy_t + a_{t+1} r_{t+1} as a reverse scan with the adjoint carried from the next chunk
  folded into the last step, and accumulate every gradient from r_t, h_t and b_t = Δ_t B_t u_t:

    a_t h_{t-1} = h_t - b_t,   dΔ_t = Σ_n r_t (A (h_t - b_t) + B_t u_t),
    dA = Σ_t r_t (h_t - b_t) Δ_t,   du_t = Δ_t Σ_n r_t B_t + D dy_t,
    dB_t = Σ_d r_t Δ_t u_t,   dC_t = Σ_d dy_t h_t,   carry = a_0 r_0 (dL/dh before the chunk).

Only (BLOCK_D, T) accumulators (Σ_n r (h - b) A, Σ_n r B) and (T,) rows of dB/dC leave a state's
iteration, so nothing of size N x T stays live: that is what keeps this layout out of spills (the
round-2 attempt kept every state's tiles alive across an unrolled loop). dB and dC of the
time-varying forms are channel sums added to fp32 buffers with relaxed atomics; per-channel
parameter gradients are written per batch row and summed by the launcher (deterministic).

Costs per (channel, step, state): one exp2 in pass 2 and another in pass 1 when z is given.
"v3" is this kernel with Y_SAVED: the forward stores the output before the gate (2 bytes per
element in bf16) and pass 1 becomes one load; optionally (BC_PARTIALS) the dB / dC channel sums
go to a per-program buffer with plain stores instead of atomics.

Sequence-parallel segments (SEGMENTED): the grid gains a third axis, program (d, b, s) walking
only the chunks of segment s. Its carry-in, the adjoint after the segment's last step, is folded
at the start from the per-segment summaries (local adjoint, total decay) of every later segment
that the pre-pass ``triton_bwd_seg.py`` computed, starting from dlast (or 0) after the last one.
Each segment keeps its own scratch (adjoint, dA, time-invariant dB / dC) and per-row partials
(dD, d(delta_bias)), summed by the launcher; segment 0's adjoint scratch ends as dL/d initial_state.
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
    softplus_grad,
)

LN2 = tl.constexpr(0.6931471805599453)  # 1 / log2(e): undoes the log2(e) folded into A


@triton.jit
def _chunk_states(dt, dtu, A2n, h0n, Bn, first, FAST_EXP2: tl.constexpr):
    """Decays a, inputs b (without the carried state) and states hs of one state index over a
    chunk, each (BLOCK_D, T), from the state h0n (BLOCK_D,) before the chunk."""
    a = exp2(dt * A2n[:, None], FAST_EXP2)
    b = dtu * Bn
    b_first = tl.where(first, b + a * h0n[:, None], b)  # the carried state enters at step 0
    _, hs = tl.associative_scan((a, b_first), axis=1, combine_fn=affine_combine)
    return a, b, hs


@triton.jit
def _add_bc_grad(val, ptr, inv_offs, base, n, offs_t, d_mask, t_mask, s_n, s_t, part_row, seqlen,
                 MODE: tl.constexpr, PARTIALS: tl.constexpr):
    """Add a (BLOCK_D, T) gradient tile of B or C where it belongs: summed over time into the
    per-row partial sums at ``inv_offs`` (BLOCK_D,) (time-invariant form; each element owned by
    one program), or summed over the program's channels and added atomically (fp32, relaxed) into
    the buffer shaped like B or C. With PARTIALS (group-tile form only) the channel sum is stored,
    not added, at row ``part_row + n`` of a (batch, programs, dstate, seqlen) buffer that the
    launcher sums over programs: plain stores instead of atomics, deterministic."""
    if MODE == 0:
        m = d_mask
        tl.store(ptr + inv_offs, tl.load(ptr + inv_offs, mask=m, other=0.0) + tl.sum(val, axis=1), mask=m)
    elif MODE == 1:
        # Every channel of the block is in one group: one (1, T) row per state leaves the program.
        row_sum = tl.sum(val, axis=0, keep_dims=True)
        if PARTIALS:
            tl.store(ptr + ((part_row + n) * seqlen + offs_t)[None, :], row_sum, mask=t_mask[None, :])
        else:
            tl.atomic_add(ptr + bc_offsets(base, n, offs_t, s_n, s_t, MODE), row_sum,
                          mask=bc_mask(d_mask, t_mask, MODE), sem="relaxed")
    else:
        tl.atomic_add(ptr + bc_offsets(base, n, offs_t, s_n, s_t, MODE), val,
                      mask=bc_mask(d_mask, t_mask, MODE), sem="relaxed")


@triton.jit
def init_state_scratch(dlast_ptr, seg_loc_ptr, seg_dec_ptr, dh0_ptr, dA_ptr, dB_ptr, dC_ptr, state_row, scratch_row,
                       offs_d, d_mask, pid_b, pid_s, nbatch, nseg, dim, dstate,
                       BLOCK_D: tl.constexpr, B_MODE: tl.constexpr, C_MODE: tl.constexpr,
                       HAS_DLAST: tl.constexpr, SEGMENTED: tl.constexpr):
    """Per state, the adjoint entering this program's segment from the right into the dh0 scratch,
    and zeros into its dA (and time-invariant dB / dC) scratch; shared by the v2/v3 and v4 kernels."""
    zero_d = tl.zeros([BLOCK_D], dtype=tl.float32)
    for n in range(dstate):
        carry = zero_d
        if HAS_DLAST:  # the adjoint of the state after the last chunk
            carry = tl.load(dlast_ptr + state_row + n, mask=d_mask, other=0.0)
        if SEGMENTED:
            # Through the later segments, last first: the adjoint before segment j is
            # local_j + decay_j * (the adjoint after it).
            for k in range(nseg - 1 - pid_s):
                j = nseg - 1 - k
                summ = ((j - 1).to(tl.int64) * nbatch + pid_b) * dstate * dim + n * dim + offs_d
                carry = (tl.load(seg_loc_ptr + summ, mask=d_mask, other=0.0)
                         + tl.load(seg_dec_ptr + summ, mask=d_mask, other=0.0) * carry)
        tl.store(dh0_ptr + scratch_row + n, carry, mask=d_mask)
        tl.store(dA_ptr + scratch_row + n, zero_d, mask=d_mask)
        if B_MODE == 0:
            tl.store(dB_ptr + scratch_row + n, zero_d, mask=d_mask)
        if C_MODE == 0:
            tl.store(dC_ptr + scratch_row + n, zero_d, mask=d_mask)


@triton.jit
def scan_bwd_v2_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, dout_ptr, ckpt_ptr, dlast_ptr,
    du_ptr, ddelta_ptr, dz_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr, dh0_ptr, ypre_ptr,
    dim, seqlen, dstate, nchunks, ckpt_chunks,
    seg_loc_ptr, seg_dec_ptr, chunks_per_seg, nseg,
    B_dpg, B_sb, B_sg, B_sn, B_st,
    C_dpg, C_sb, C_sg, C_sn, C_st,
    BLOCK_D: tl.constexpr, T: tl.constexpr,
    B_MODE: tl.constexpr, C_MODE: tl.constexpr,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, FAST_EXP2: tl.constexpr,
    HAS_DLAST: tl.constexpr, Y_SAVED: tl.constexpr = False, BC_PARTIALS: tl.constexpr = False,
    CKPT_EVERY: tl.constexpr = 1, SEGMENTED: tl.constexpr = False, FAST_SOFTPLUS: tl.constexpr = False,
):
    # ckpt_ptr: fp32 (batch, ckpt_chunks, dstate, dim), the state before each forward chunk; the
    # backward's chunk T spans CKPT_EVERY of them (a longer chunk amortises the per-chunk work of
    # the backward without changing the forward's, which is fastest at its own chunk).
    # dB_ptr / dC_ptr: fp32 buffers shaped like B / C (time-varying forms, same strides as B / C),
    # or (batch, dim, dstate) per-row partial sums (time-invariant form).
    # dA_ptr, dh0_ptr: (nseg, batch, dim, dstate); dD_ptr / dbias_ptr: (nseg, batch, dim) per-row
    # partials, fp32; time-invariant dB / dC partials (nseg, batch, dim, dstate) too.
    # SEGMENTED: grid (dim / BLOCK_D, batch, nseg); segment s spans backward chunks
    # [s chunks_per_seg, min((s + 1) chunks_per_seg, nchunks)); seg_loc_ptr / seg_dec_ptr are the
    # pre-pass's fp32 (nseg - 1, batch, dstate, dim) summaries of segments 1 .. nseg - 1.
    # Y_SAVED (with z): ypre_ptr is the forward's output before the gate, (batch, dim, seqlen), so
    # pass 1 is a load. BC_PARTIALS: group-tile dB / dC are (batch, programs, dstate, seqlen)
    # buffers of per-program channel sums (see _add_bc_grad).
    #
    # The state loop is a run-time loop (dstate is not a constexpr): unrolled, the compiler hoists
    # every state's loads and overlaps the states' live ranges, and spills (sm_90, offline: 255
    # registers and 2 KB of stack per thread). What a state carries from chunk to chunk (the
    # adjoint, dA, time-invariant dB / dC) therefore lives in the output buffers themselves, each
    # (channel, state) read and written only by its own program: L1-resident scratch.
    pid_d = tl.program_id(0)
    pid_b = tl.program_id(1)
    pid_s = tl.program_id(2)
    nbatch = tl.num_programs(1)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    d_mask = offs_d < dim
    state_row = (pid_b.to(tl.int64) * dim + offs_d) * dstate  # (BLOCK_D,) into (batch, dim, dstate)
    # (BLOCK_D,) this segment's rows of the (nseg, batch, dim) partials and scratch
    seg_row = (pid_s.to(tl.int64) * nbatch + pid_b) * dim + offs_d
    scratch_row = seg_row * dstate  # into (nseg, batch, dim, dstate)
    b_base = bc_base(pid_b, offs_d, B_dpg, B_sb, B_sg, BLOCK_D, B_MODE)
    c_base = bc_base(pid_b, offs_d, C_dpg, C_sb, C_sg, BLOCK_D, C_MODE)

    init_state_scratch(dlast_ptr, seg_loc_ptr, seg_dec_ptr, dh0_ptr, dA_ptr, dB_ptr, dC_ptr, state_row, scratch_row,
                       offs_d, d_mask, pid_b, pid_s, nbatch, nseg, dim, dstate,
                       BLOCK_D, B_MODE, C_MODE, HAS_DLAST, SEGMENTED)
    bias = tl.zeros([BLOCK_D], dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=d_mask, other=0.0).to(tl.float32)
    if HAS_D:
        Dv = tl.load(D_ptr + offs_d, mask=d_mask, other=0.0).to(tl.float32)
    dD_acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    dbias_acc = tl.zeros([BLOCK_D], dtype=tl.float32)

    row = (pid_b.to(tl.int64) * dim + offs_d) * seqlen  # (BLOCK_D,) start of each channel's row
    steps = tl.arange(0, T)
    first = (steps == 0)[None, :]
    last = (steps == T - 1)[None, :]
    ones = tl.full([BLOCK_D, T], 1.0, dtype=tl.float32)
    part_row = (pid_b.to(tl.int64) * tl.num_programs(0) + pid_d) * dstate  # BC_PARTIALS: state 0's row

    seg_lo = pid_s * chunks_per_seg
    seg_hi = tl.minimum(seg_lo + chunks_per_seg, nchunks)
    for i in range(seg_hi - seg_lo):
        # Scratch written by other lanes of this program (replicated layouts) must be visible.
        tl.debug_barrier()
        c = seg_hi - 1 - i
        offs_t = c * T + steps
        t_mask = offs_t < seqlen
        m2 = d_mask[:, None] & t_mask[None, :]
        ptrs = row[:, None] + offs_t[None, :]  # (BLOCK_D, T)
        ck = (pid_b.to(tl.int64) * ckpt_chunks + c * CKPT_EVERY) * dstate * dim + offs_d  # (BLOCK_D,) state 0
        # Masked steps and channels load 0: Δ = 0 makes them identities, dout = 0 gives them no
        # adjoint source, so they add nothing to any sum below.
        u = tl.load(u_ptr + ptrs, mask=m2, other=0.0).to(tl.float32)
        dt, raw = delta_activation(tl.load(delta_ptr + ptrs, mask=m2, other=0.0).to(tl.float32), m2, bias,
                                   HAS_BIAS, SOFTPLUS, FAST_SOFTPLUS)
        dtu = dt * u
        dout = tl.load(dout_ptr + ptrs, mask=m2, other=0.0).to(tl.float32)

        # Pass 1, output gate: out = (y + D u) * silu(z) needs y for dz.
        dy = dout
        if HAS_Z and Y_SAVED:
            y = tl.load(ypre_ptr + ptrs, mask=m2, other=0.0).to(tl.float32)
        elif HAS_Z:
            y = tl.zeros([BLOCK_D, T], dtype=tl.float32)
            for n in range(dstate):
                A2n = tl.load(A_ptr + offs_d * dstate + n, mask=d_mask, other=0.0).to(tl.float32) * LOG2E
                h0n = tl.load(ckpt_ptr + ck + n * dim, mask=d_mask, other=0.0)
                Bn = load_bc(B_ptr, b_base, n, offs_t, d_mask, t_mask, B_sn, B_st, B_MODE)
                Cn = load_bc(C_ptr, c_base, n, offs_t, d_mask, t_mask, C_sn, C_st, C_MODE)
                _, _, hs = _chunk_states(dt, dtu, A2n, h0n, Bn, first, FAST_EXP2)
                y += hs * Cn
            if HAS_D:
                y += u * Dv[:, None]
        if HAS_Z:
            zv = tl.load(z_ptr + ptrs, mask=m2, other=0.0).to(tl.float32)
            sz = tl.sigmoid(zv)
            dy = dout * zv * sz
            dz = dout * y * sz * (1.0 + zv * (1.0 - sz))
            tl.store(dz_ptr + ptrs, dz.to(dz_ptr.dtype.element_ty), mask=m2)
        if HAS_D:
            dD_acc += tl.sum(dy * u, axis=1)

        # Pass 2, the adjoint per state.
        rhbA = tl.zeros([BLOCK_D, T], dtype=tl.float32)  # Σ_n r (h - b) A log2(e)
        rB = tl.zeros([BLOCK_D, T], dtype=tl.float32)  # Σ_n r B
        for n in range(dstate):
            A2n = tl.load(A_ptr + offs_d * dstate + n, mask=d_mask, other=0.0).to(tl.float32) * LOG2E
            h0n = tl.load(ckpt_ptr + ck + n * dim, mask=d_mask, other=0.0)
            carry = tl.load(dh0_ptr + scratch_row + n, mask=d_mask, other=0.0)
            Bn = load_bc(B_ptr, b_base, n, offs_t, d_mask, t_mask, B_sn, B_st, B_MODE)
            Cn = load_bc(C_ptr, c_base, n, offs_t, d_mask, t_mask, C_sn, C_st, C_MODE)
            a, b, hs = _chunk_states(dt, dtu, A2n, h0n, Bn, first, FAST_EXP2)
            # r_t = c_t + a_{t+1} r_{t+1}; the adjoint from after the chunk enters at the last step
            # (padded steps are identities, so it reaches the last real step unchanged).
            src = dy * Cn
            src = tl.where(last, src + carry[:, None], src)
            _, _, r = tl.associative_scan((a, ones, src), axis=1, combine_fn=adjoint_combine, reverse=True)
            tl.store(dh0_ptr + scratch_row + n, column(a * r, first), mask=d_mask)
            rhb = r * (hs - b)  # r_t a_t h_{t-1}
            rhbA += rhb * A2n[:, None]
            rB += r * Bn
            dA_n = tl.load(dA_ptr + scratch_row + n, mask=d_mask, other=0.0)
            tl.store(dA_ptr + scratch_row + n, dA_n + tl.sum(rhb * dt, axis=1), mask=d_mask)
            _add_bc_grad(r * dtu, dB_ptr, scratch_row + n, b_base, n, offs_t, d_mask, t_mask, B_sn, B_st,
                         part_row, seqlen, B_MODE, BC_PARTIALS)
            _add_bc_grad(hs * dy, dC_ptr, scratch_row + n, c_base, n, offs_t, d_mask, t_mask, C_sn, C_st,
                         part_row, seqlen, C_MODE, BC_PARTIALS)

        ddt = rhbA * LN2 + u * rB
        du = dt * rB
        if HAS_D:
            du += dy * Dv[:, None]
        if SOFTPLUS:
            ddt = ddt * softplus_grad(raw, FAST_SOFTPLUS)
        ddt = tl.where(m2, ddt, 0.0)
        dbias_acc += tl.sum(ddt, axis=1)
        tl.store(du_ptr + ptrs, du.to(du_ptr.dtype.element_ty), mask=m2)
        tl.store(ddelta_ptr + ptrs, ddt.to(ddelta_ptr.dtype.element_ty), mask=m2)

    if HAS_D:
        tl.store(dD_ptr + seg_row, dD_acc, mask=d_mask)
    if HAS_BIAS:
        tl.store(dbias_ptr + seg_row, dbias_acc, mask=d_mask)
