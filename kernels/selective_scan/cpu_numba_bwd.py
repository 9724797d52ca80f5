"""Selective scan backward as one compiled numba loop: training on the CPU.

The reverse of ``cpu_numba._scan``, block by block of channels (the same blocks, so a block never
crosses a group of B or C). The forward's states are not stored: a first pass over the sequence
keeps the state every ``ckpt`` steps (ckpt x smaller than all of them), then the sequence is walked
backwards one checkpoint segment at a time, recomputing that segment's states (and the pre-gate
output, for dz) from its checkpoint and carrying the adjoint of the state, G_t = dL/dh_t:

    G_t = dlast (t = L - 1) or exp(dt_{t+1} A) G_{t+1},  plus C_t dy_t
    d dt_t = sum_n G_t (A exp(dt_t A) h_{t-1} + u_t B_t),   dA += G_t exp(dt_t A) h_{t-1} dt_t
    du_t = dy_t D + sum_n G_t dt_t B_t,   dB_t = sum_channels G_t dt_t u_t,   dC_t = sum_channels dy_t h_t
    dh0 = exp(dt_0 A) G_0

with dy = dout silu(z) (or dout) and dz = dout (y + u D) silu'(z). dA, dD and d delta_bias are summed
per batch row here and over rows by the caller; time-varying dB / dC per block and step (the caller
sums the blocks of a group), time-invariant ones per batch row. Same exp, softplus and SiLU as the
forward (``cpu_numba``'s notes); fastmath off.

Imports numba at module level: import it only through ``chunked.numba_scan()``'s module.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit, prange, types

from .cpu_numba import (
    _EXP_FLOOR,
    _LAUNCH,
    MAX_BLOCK,
    ScanArrays,
    _decay,
    _dt_row,
    _exp_f32,
    _load_block,
    _load_rows,
    _store_rows,
    _threads,
    compiled_per_dtype,
    contiguous,
    scan_inputs,
)

# Steps between stored states: the recomputed segment (ckpt + 1 states of (dstate, block)) stays in
# L2 while the stored ones cost seqlen / ckpt states per block.
CKPT_STEPS = 64


@njit(inline="always", fastmath=False)
def _sigmoid(v, fast):
    """1 / (1 + exp(-v)), through e = exp(-|v|) <= 1 (the fast exp's range)."""
    if fast:
        e = _exp_f32(max(-abs(v), np.float32(_EXP_FLOOR)))
        s = np.float32(1.0) / (np.float32(1.0) + e)
        return s if v >= 0 else e * s
    return 1.0 / (1.0 + np.exp(-v))


@njit(inline="always", fastmath=False)
def _bc_row(row, inv, X, xb, xt, n, col, per, w):
    """row[j] = B or C of state n at step xt for the block's channels (one value per group)."""
    if per == 0:
        for j in range(w):
            row[j] = inv[n, j]
    else:
        v = X[xb, xt, n, col]
        for j in range(w):
            row[j] = v


def _scan_bwd_signature(f):
    # ... then h0, dout, dlast, seg, the six flags, ckpt, and the gradients du ... dC
    i, st, row2, bc = types.int64, contiguous(f, 3), contiguous(f, 2), contiguous(f, 4)
    return types.void(*scan_inputs(f), st, st, st, i, *[types.boolean] * 6, i,
                      st, st, st, st, row2, row2, st, bc, bc)


@compiled_per_dtype(_scan_bwd_signature)
def _scan_bwd(u, delta, z, D, bias, At, B, C, b_per, c_per, h0, dout, dlast, seg,
              has_z, has_D, has_bias, softplus, fast, a_nonpos, ckpt,
              du, ddelta, dz, dA, dD, dbias, dh0, dB, dC):
    """Gradients of ``cpu_numba._scan``'s out and last state (shapes as there).

    dout: (batch, dim, seqlen); dlast, h0 (the initial state; zeros when absent): (batch, dim,
    dstate). Written: du, ddelta, dz (batch, dim, seqlen); dA (batch, dstate, dim) and dD, dbias
    (batch, dim) per batch row; dh0 (batch, dim, dstate); dB, dC: (batch, 1, dstate, dim) per batch
    row when time-invariant (per = 0), else (batch, blocks, seqlen, dstate) per block of channels.
    """
    batch, dim, seqlen = u.shape
    dstate = At.shape[0]
    nseg = dim // seg if seg > 0 else 0
    per_seg = (seg + MAX_BLOCK - 1) // MAX_BLOCK
    nblk = nseg * per_seg
    nck = (seqlen + ckpt - 1) // ckpt
    for item in prange(batch * nblk):
        b = item // nblk
        blk = item % nblk
        d0 = blk // per_seg * seg + (blk % per_seg) * MAX_BLOCK
        d1 = min(d0 + MAX_BLOCK, (d0 // seg + 1) * seg)
        w = d1 - d0
        bb, cb = min(b, B.shape[0] - 1), min(b, C.shape[0] - 1)
        bcol = d0 // b_per if b_per > 0 else 0
        ccol = d0 // c_per if c_per > 0 else 0
        ub, deltab, zb, doutb = u[b, d0:d1], delta[b, d0:d1], z[b, d0:d1], dout[b, d0:d1]
        dub, ddeltab, dzb = du[b, d0:d1], ddelta[b, d0:d1], dz[b, d0:d1]
        Db, biasb = D[d0:d1], bias[d0:d1]
        ab = np.empty((dstate, w), dtype=u.dtype)
        bi = np.zeros((dstate, w), dtype=u.dtype)  # B and C when time-invariant
        ci = np.zeros((dstate, w), dtype=u.dtype)
        st = np.empty((dstate, w), dtype=u.dtype)
        g = np.empty((dstate, w), dtype=u.dtype)  # adjoint of the state
        dAb = np.zeros((dstate, w), dtype=u.dtype)
        dBi = np.zeros((dstate, w), dtype=u.dtype)
        dCi = np.zeros((dstate, w), dtype=u.dtype)
        _load_block(st, ab, bi, ci, h0, At, B, C, b, d0, w, b_per, c_per)
        for n in range(dstate):
            for j in range(w):
                g[n, j] = dlast[b, d0 + j, n]
        saved = np.empty((nck, dstate, w), dtype=u.dtype)  # the state before steps 0, ckpt, 2 ckpt, ...
        hs = np.empty((ckpt + 1, dstate, w), dtype=u.dtype)  # one segment's states, recomputed
        decs = np.empty((ckpt, dstate, w), dtype=u.dtype)  # and its decays exp(dt A), kept for the adjoint
        ys = np.empty((ckpt, w), dtype=u.dtype)  # and its outputs before the gate
        # The segment's per-step rows as (steps, channels) tiles, read and written along the sequence.
        dtile, utile = np.empty((ckpt, w), dtype=u.dtype), np.empty((ckpt, w), dtype=u.dtype)
        ztile, gtile = np.empty((ckpt, w), dtype=u.dtype), np.empty((ckpt, w), dtype=u.dtype)
        dutile, ddtile = np.empty((ckpt, w), dtype=u.dtype), np.empty((ckpt, w), dtype=u.dtype)
        dztile = np.empty((ckpt, w), dtype=u.dtype)
        dtr = np.empty(w, dtype=u.dtype)  # per step: dt, delta + bias (softplus' argument), dt * u
        vr = np.empty(w, dtype=u.dtype)
        xr = np.empty(w, dtype=u.dtype)
        sgr = np.empty(w, dtype=u.dtype)  # sigmoid(z), then sigmoid(delta + bias)
        dyr = np.empty(w, dtype=u.dtype)
        ddtr = np.empty(w, dtype=u.dtype)
        dur = np.empty(w, dtype=u.dtype)
        dDr = np.zeros(w, dtype=u.dtype)
        dbr = np.zeros(w, dtype=u.dtype)
        brow = np.empty(w, dtype=u.dtype)
        crow = np.empty(w, dtype=u.dtype)
        xb = np.empty(w, dtype=u.dtype)  # this step's dB / dC terms per channel
        xc = np.empty(w, dtype=u.dtype)

        # Pass 1: the states at the checkpoints.
        for k in range(nck):
            s0 = k * ckpt
            steps = min(ckpt, seqlen - s0)
            for n in range(dstate):
                for j in range(w):
                    saved[k, n, j] = st[n, j]
            _load_rows(dtile, deltab, s0, steps, w)
            _load_rows(utile, ub, s0, steps, w)
            for i in range(steps):
                tb = min(s0 + i, B.shape[1] - 1)
                _dt_row(dtr, vr, dtile, i, biasb, has_bias, softplus, fast, w)
                negative = 0
                for j in range(w):
                    xr[j] = dtr[j] * utile[i, j]
                    negative += 0 if dtr[j] >= 0 else 1
                fast_step = fast and a_nonpos and negative == 0
                for n in range(dstate):
                    _bc_row(brow, bi, B, bb, tb, n, bcol, b_per, w)
                    if fast_step:
                        for j in range(w):
                            st[n, j] = _decay(dtr[j] * ab[n, j], True) * st[n, j] + xr[j] * brow[j]
                    else:
                        for j in range(w):
                            st[n, j] = _decay(dtr[j] * ab[n, j], False) * st[n, j] + xr[j] * brow[j]

        # Pass 2: segments from last to first.
        for k in range(nck - 1, -1, -1):
            s0 = k * ckpt
            steps = min(ckpt, seqlen - s0)
            _load_rows(dtile, deltab, s0, steps, w)
            _load_rows(utile, ub, s0, steps, w)
            _load_rows(gtile, doutb, s0, steps, w)
            if has_z:
                _load_rows(ztile, zb, s0, steps, w)
            for n in range(dstate):
                for j in range(w):
                    hs[0, n, j] = saved[k, n, j]
            for i in range(steps):  # recompute the segment's states, decays and pre-gate outputs
                tb, tc = min(s0 + i, B.shape[1] - 1), min(s0 + i, C.shape[1] - 1)
                _dt_row(dtr, vr, dtile, i, biasb, has_bias, softplus, fast, w)
                negative = 0
                for j in range(w):
                    xr[j] = dtr[j] * utile[i, j]
                    ys[i, j] = 0
                    negative += 0 if dtr[j] >= 0 else 1
                if has_D:
                    for j in range(w):
                        ys[i, j] = utile[i, j] * Db[j]
                fast_step = fast and a_nonpos and negative == 0
                for n in range(dstate):
                    _bc_row(brow, bi, B, bb, tb, n, bcol, b_per, w)
                    _bc_row(crow, ci, C, cb, tc, n, ccol, c_per, w)
                    if fast_step:
                        for j in range(w):
                            decs[i, n, j] = _decay(dtr[j] * ab[n, j], True)
                    else:
                        for j in range(w):
                            decs[i, n, j] = _decay(dtr[j] * ab[n, j], False)
                    for j in range(w):
                        hn = decs[i, n, j] * hs[i, n, j] + xr[j] * brow[j]
                        hs[i + 1, n, j] = hn
                        ys[i, j] += hn * crow[j]
            for i in range(steps - 1, -1, -1):  # the adjoint, backwards through the segment
                t = s0 + i
                tb, tc = min(t, B.shape[1] - 1), min(t, C.shape[1] - 1)
                _dt_row(dtr, vr, dtile, i, biasb, has_bias, softplus, fast, w)
                if has_z:  # dy = dout silu(z), dz = dout y silu'(z)
                    if fast:
                        for j in range(w):
                            sgr[j] = _sigmoid(ztile[i, j], True)
                    else:
                        for j in range(w):
                            sgr[j] = _sigmoid(ztile[i, j], False)
                    for j in range(w):
                        zv, sg, go = ztile[i, j], sgr[j], gtile[i, j]
                        dyr[j] = go * zv * sg
                        dztile[i, j] = go * ys[i, j] * sg * (1 + zv * (1 - sg))
                else:
                    for j in range(w):
                        dyr[j] = gtile[i, j]
                if has_D:
                    for j in range(w):
                        dDr[j] += dyr[j] * utile[i, j]
                        dur[j] = dyr[j] * Db[j]
                else:
                    for j in range(w):
                        dur[j] = 0
                for j in range(w):
                    ddtr[j] = 0
                for n in range(dstate):
                    _bc_row(brow, bi, B, bb, tb, n, bcol, b_per, w)
                    _bc_row(crow, ci, C, cb, tc, n, ccol, c_per, w)
                    for j in range(w):
                        gn = g[n, j] + crow[j] * dyr[j]  # dL/dh_t
                        a = decs[i, n, j]
                        gh = gn * a * hs[i, n, j]
                        gb = gn * brow[j]
                        ddtr[j] += gh * ab[n, j] + gb * utile[i, j]
                        dAb[n, j] += gh * dtr[j]
                        dur[j] += gb * dtr[j]
                        xb[j] = gn * dtr[j] * utile[i, j]
                        xc[j] = dyr[j] * hs[i + 1, n, j]
                        g[n, j] = gn * a  # dL/dh_{t-1}, before C_{t-1} dy_{t-1} is added
                    if b_per == 0:
                        for j in range(w):
                            dBi[n, j] += xb[j]
                    else:  # one group per block: the step's dB is the sum over its channels
                        acc = xb[0]
                        for j in range(1, w):
                            acc += xb[j]
                        dB[b, blk, t, n] = acc
                    if c_per == 0:
                        for j in range(w):
                            dCi[n, j] += xc[j]
                    else:
                        acc = xc[0]
                        for j in range(1, w):
                            acc += xc[j]
                        dC[b, blk, t, n] = acc
                if softplus:  # d softplus(v) / dv = sigmoid(v)
                    if fast:
                        for j in range(w):
                            sgr[j] = _sigmoid(vr[j], True)
                    else:
                        for j in range(w):
                            sgr[j] = _sigmoid(vr[j], False)
                    for j in range(w):
                        ddtr[j] *= sgr[j]
                for j in range(w):
                    ddtile[i, j] = ddtr[j]
                    dbr[j] += ddtr[j]
                    dutile[i, j] = dur[j]
            _store_rows(dub, dutile, s0, steps, w)
            _store_rows(ddeltab, ddtile, s0, steps, w)
            if has_z:
                _store_rows(dzb, dztile, s0, steps, w)
        for n in range(dstate):
            for j in range(w):
                dh0[b, d0 + j, n] = g[n, j]
                dA[b, n, d0 + j] = dAb[n, j]
                if b_per == 0:
                    dB[b, 0, n, d0 + j] = dBi[n, j]
                if c_per == 0:
                    dC[b, 0, n, d0 + j] = dCi[n, j]
        for j in range(w):
            dD[b, d0 + j] = dDr[j]
            dbias[b, d0 + j] = dbr[j]


def _group_sum(parts: torch.Tensor, like: torch.Tensor, dim: int, per: int, seg: int) -> torch.Tensor:
    """dB or dC in ``like``'s shape from the kernel's per-block (batch, blocks, seqlen, dstate) sums."""
    per_seg = -(-seg // MAX_BLOCK)
    starts = [blk // per_seg * seg + (blk % per_seg) * MAX_BLOCK for blk in range(parts.shape[1])]
    columns = torch.tensor([d0 // per for d0 in starts])
    groups = dim // per
    summed = parts.new_zeros(parts.shape[0], groups, *parts.shape[2:]).index_add_(1, columns, parts)
    summed = summed.permute(0, 1, 3, 2)  # (batch, groups, dstate, seqlen)
    return summed[:, 0] if like.dim() == 3 else summed


def scan_backward(u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus, dout, dlast):
    """Gradients of (out, last state) for every input, in each input's dtype (None for absent ones)."""
    a = ScanArrays(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    batch, dim, seqlen, dstate, work = a.batch, a.dim, a.seqlen, a.dstate, a.work
    f = dict(dtype=work)
    g_out = (dout.detach().to(work).contiguous() if dout is not None else torch.zeros(batch, dim, seqlen, **f))
    g_last = (dlast.detach().to(work).contiguous() if dlast is not None else torch.zeros(batch, dim, dstate, **f))
    h0 = a.initial(initial_state)
    du, ddelta, dz = (torch.empty(batch, dim, seqlen, **f) for _ in range(3))
    dA = torch.empty(batch, dstate, dim, **f)
    dD, dbias = torch.empty(batch, dim, **f), torch.empty(batch, dim, **f)
    dh0 = torch.empty(batch, dim, dstate, **f)
    nblk = (dim // a.seg) * -(-a.seg // MAX_BLOCK)
    bc_buf = lambda per: (torch.empty(batch, 1, dstate, dim, **f) if per == 0  # noqa: E731
                          else torch.empty(batch, nblk, seqlen, dstate, **f))
    dBk, dCk = bc_buf(a.b_per), bc_buf(a.c_per)
    with _LAUNCH:
        _threads()
        _scan_bwd(a.u, a.delta, a.z, a.D, a.bias, a.At, a.B, a.C, a.b_per, a.c_per, h0.numpy(), g_out.numpy(),
                  g_last.numpy(), a.seg, *a.flags, CKPT_STEPS, du.numpy(), ddelta.numpy(), dz.numpy(),
                  dA.numpy(), dD.numpy(), dbias.numpy(), dh0.numpy(), dBk.numpy(), dCk.numpy())

    def bc_grad(parts, per, like):
        if per == 0:  # (batch, 1, dstate, dim) per batch row -> (dim, dstate)
            return parts.sum((0, 1)).t()
        return _group_sum(parts, like, dim, per, a.seg)

    cast = lambda g, like: None if like is None else g.to(like.dtype)  # noqa: E731
    return (cast(du, u), cast(ddelta, delta), cast(dA.sum(0).t(), A), cast(bc_grad(dBk, a.b_per, B), B),
            cast(bc_grad(dCk, a.c_per, C), C), cast(dD.sum(0), D), cast(dz, z), cast(dbias.sum(0), delta_bias),
            cast(dh0, initial_state))
