"""Triton causal depthwise conv1d: forward, backward (recomputing the pre-activation) and the
one-step decoding update.

Each program owns a tile of (BLOCK_D channels, BLOCK_L positions) of one sequence; positions are
the contiguous axis, so every load is coalesced and vectorised. A width-W convolution needs the W
inputs ending at each position: they are read as W shifted tiles of the same rows, which overlap
and so come from L1/L2, not DRAM — the kernel still reads x from device memory once.

Taps are stored "aligned" in four slots: slot j multiplies x[t - 3 + j], so slot 3 is the current
position and the width-W weights fill slots 4 - W .. 3. Widths 2-4 then share one code path with
the unused slots removed at compile time.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._decode_grid import decode_block, sm_count
from .reference import check_conv_args, check_update_args


@triton.jit
def _load_x(x_row, init_row, t, dmask, seqlen, s_xl, s_il, W: tl.constexpr, HAS_INIT: tl.constexpr):
    """Padded input at positions t (1, L) for channel rows (BLOCK_D, 1), in fp32: x inside
    [0, seqlen), initial_states (or zeros) in [-(W-1), 0), zeros past the end."""
    v = tl.load(x_row + t * s_xl, mask=dmask & (t >= 0) & (t < seqlen), other=0.0).to(tl.float32)
    if HAS_INIT:
        in_init = dmask & (t < 0) & (t >= 1 - W)
        v += tl.load(init_row + (t + W - 1) * s_il, mask=in_init, other=0.0).to(tl.float32)
    return v


@triton.jit
def _tap(w_row, s_wk, slot: tl.constexpr, W: tl.constexpr, dmask):
    """Aligned weight of ``slot`` (0-3) for channel rows (BLOCK_D, 1); zero for unused slots."""
    w = tl.zeros_like(dmask.to(tl.float32))
    if slot >= 4 - W:
        w = tl.load(w_row + (slot - 4 + W) * s_wk, mask=dmask, other=0.0).to(tl.float32)
    return w


@triton.jit
def _window(u0, u1, u2, u3, xa, xb, xc, xd, W: tl.constexpr):
    """Convolution over the window (x[p-3], x[p-2], x[p-1], x[p]); unused slots are compiled out."""
    acc = u2 * xc + u3 * xd
    if W >= 3:
        acc += u1 * xb
    if W >= 4:
        acc += u0 * xa
    return acc


@triton.jit
def _silu_grad(g, pre, SILU: tl.constexpr):
    """Gradient w.r.t. the pre-activation from the gradient g w.r.t. the output."""
    if SILU:
        s = tl.sigmoid(pre)
        g = g * s * (1.0 + pre * (1.0 - s))
    return g


@triton.jit
def _conv_at(x_row, init_row, t, dmask, seqlen, s_xl, s_il, u0, u1, u2, u3, W: tl.constexpr, HAS_INIT: tl.constexpr):
    """Convolution (before bias and activation) at positions t, (BLOCK_D, L) in fp32."""
    x0 = _load_x(x_row, init_row, t, dmask, seqlen, s_xl, s_il, W, HAS_INIT)
    xm1 = _load_x(x_row, init_row, t - 1, dmask, seqlen, s_xl, s_il, W, HAS_INIT)
    xm2 = x0  # placeholders for slots this width does not use
    xm3 = x0
    if W >= 3:
        xm2 = _load_x(x_row, init_row, t - 2, dmask, seqlen, s_xl, s_il, W, HAS_INIT)
    if W >= 4:
        xm3 = _load_x(x_row, init_row, t - 3, dmask, seqlen, s_xl, s_il, W, HAS_INIT)
    return _window(u0, u1, u2, u3, xm3, xm2, xm1, x0, W)


@triton.jit
def _conv_fwd_kernel(
    x_ptr, w_ptr, bias_ptr, init_ptr, y_ptr, final_ptr,
    dim, seqlen,
    s_xb, s_xd, s_xl, s_wd, s_wk, s_ib, s_id, s_il, s_yb, s_yd, s_yl, s_fb, s_fd, s_fl,
    W: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_INIT: tl.constexpr, SILU: tl.constexpr,
    WRITE_FINAL: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)  # int64: batch * dim * seqlen may pass 2**31
    pid_l = tl.program_id(2)
    d = (tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D))[:, None]  # (BLOCK_D, 1)
    t = pid_l * BLOCK_L + tl.arange(0, BLOCK_L)[None, :]  # (1, BLOCK_L)
    dmask = d < dim
    x_row = x_ptr + b * s_xb + d.to(tl.int64) * s_xd
    init_row = init_ptr + b * s_ib + d * s_id
    w_row = w_ptr + d * s_wd

    u0 = _tap(w_row, s_wk, 0, W, dmask)
    u1 = _tap(w_row, s_wk, 1, W, dmask)
    u2 = _tap(w_row, s_wk, 2, W, dmask)
    u3 = _tap(w_row, s_wk, 3, W, dmask)
    # Only the first tile reaches back into initial_states; the others skip those loads.
    if HAS_INIT:
        if pid_l == 0:
            pre = _conv_at(x_row, init_row, t, dmask, seqlen, s_xl, s_il, u0, u1, u2, u3, W, True)
        else:
            pre = _conv_at(x_row, init_row, t, dmask, seqlen, s_xl, s_il, u0, u1, u2, u3, W, False)
    else:
        pre = _conv_at(x_row, init_row, t, dmask, seqlen, s_xl, s_il, u0, u1, u2, u3, W, False)
    if HAS_BIAS:
        pre += tl.load(bias_ptr + d, mask=dmask, other=0.0).to(tl.float32)
    out = pre
    if SILU:
        out = pre * tl.sigmoid(pre)
    y_row = y_ptr + b * s_yb + d.to(tl.int64) * s_yd
    tl.store(y_row + t * s_yl, out.to(y_ptr.dtype.element_ty), mask=dmask & (t < seqlen))

    if WRITE_FINAL:
        # The last program along the sequence also writes the last W - 1 inputs.
        if pid_l == tl.num_programs(2) - 1:
            j = tl.arange(0, 4)[None, :]  # (1, 4); slots j >= W - 1 are masked
            v = _load_x(x_row, init_row, seqlen - (W - 1) + j, dmask, seqlen, s_xl, s_il, W, HAS_INIT)
            tl.store(final_ptr + b * s_fb + d * s_fd + j * s_fl, v.to(final_ptr.dtype.element_ty),
                     mask=dmask & (j < W - 1))


@triton.jit
def _bwd_tile(
    x_row, init_row, dy_row, dfin_row, t, dmask, seqlen, s_xl, s_il, s_gl, s_fl,
    u0, u1, u2, u3, bias,
    W: tl.constexpr, HAS_INIT: tl.constexpr, SILU: tl.constexpr, HAS_DFINAL: tl.constexpr,
):
    """Gradient w.r.t. the padded input at positions t, plus what dweight needs.

    dx[t] = sum_j u_j * dpre[t + 3 - j] (+ dfinal where t is one of the last W - 1 inputs).
    Returns (dx, dpre at t, x[t-3], x[t-2], x[t-1], x[t]); for silu, dpre at t + s needs the
    pre-activation there, so the 2W - 1 inputs around t are loaded once and shared.
    """
    x0 = _load_x(x_row, init_row, t, dmask, seqlen, s_xl, s_il, W, HAS_INIT)
    xm1 = _load_x(x_row, init_row, t - 1, dmask, seqlen, s_xl, s_il, W, HAS_INIT)
    xm2 = x0
    xm3 = x0
    if W >= 3:
        xm2 = _load_x(x_row, init_row, t - 2, dmask, seqlen, s_xl, s_il, W, HAS_INIT)
    if W >= 4:
        xm3 = _load_x(x_row, init_row, t - 3, dmask, seqlen, s_xl, s_il, W, HAS_INIT)
    xp1 = x0
    xp2 = x0
    xp3 = x0
    if SILU:
        xp1 = _load_x(x_row, init_row, t + 1, dmask, seqlen, s_xl, s_il, W, HAS_INIT)
        if W >= 3:
            xp2 = _load_x(x_row, init_row, t + 2, dmask, seqlen, s_xl, s_il, W, HAS_INIT)
        if W >= 4:
            xp3 = _load_x(x_row, init_row, t + 3, dmask, seqlen, s_xl, s_il, W, HAS_INIT)

    # dpre at t + s: the output gradient (zero outside [0, seqlen)) through the activation.
    g0 = tl.load(dy_row + t * s_gl, mask=dmask & (t >= 0) & (t < seqlen), other=0.0).to(tl.float32)
    g0 = _silu_grad(g0, bias + _window(u0, u1, u2, u3, xm3, xm2, xm1, x0, W), SILU)
    t1 = t + 1
    g1 = tl.load(dy_row + t1 * s_gl, mask=dmask & (t1 >= 0) & (t1 < seqlen), other=0.0).to(tl.float32)
    g1 = _silu_grad(g1, bias + _window(u0, u1, u2, u3, xm2, xm1, x0, xp1, W), SILU)
    dx = u3 * g0 + u2 * g1
    if W >= 3:
        t2 = t + 2
        g2 = tl.load(dy_row + t2 * s_gl, mask=dmask & (t2 >= 0) & (t2 < seqlen), other=0.0).to(tl.float32)
        g2 = _silu_grad(g2, bias + _window(u0, u1, u2, u3, xm1, x0, xp1, xp2, W), SILU)
        dx += u1 * g2
    if W >= 4:
        t3 = t + 3
        g3 = tl.load(dy_row + t3 * s_gl, mask=dmask & (t3 >= 0) & (t3 < seqlen), other=0.0).to(tl.float32)
        g3 = _silu_grad(g3, bias + _window(u0, u1, u2, u3, x0, xp1, xp2, xp3, W), SILU)
        dx += u0 * g3
    if HAS_DFINAL:
        # final_states[j] is the padded input at seqlen - (W - 1) + j.
        j = t - (seqlen - (W - 1))
        dx += tl.load(dfin_row + j * s_fl, mask=dmask & (j >= 0) & (j < W - 1), other=0.0).to(tl.float32)
    return dx, g0, xm3, xm2, xm1, x0


@triton.jit
def _conv_bwd_kernel(
    x_ptr, w_ptr, bias_ptr, init_ptr, dy_ptr, dfin_ptr, dx_ptr, dinit_ptr, dw_part_ptr, db_part_ptr,
    dim, seqlen,
    s_xb, s_xd, s_xl, s_wd, s_wk, s_ib, s_id, s_il, s_gb, s_gd, s_gl, s_fb, s_fd, s_fl,
    s_dxb, s_dxd, s_dxl, s_dib, s_did, s_dil,
    W: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_INIT: tl.constexpr, SILU: tl.constexpr,
    HAS_DFINAL: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    pid_d = tl.program_id(1)
    pid_l = tl.program_id(2)
    d1 = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)  # (BLOCK_D,)
    d = d1[:, None]  # (BLOCK_D, 1)
    t = pid_l * BLOCK_L + tl.arange(0, BLOCK_L)[None, :]  # (1, BLOCK_L)
    dmask = d < dim
    x_row = x_ptr + b * s_xb + d.to(tl.int64) * s_xd
    init_row = init_ptr + b * s_ib + d * s_id
    dy_row = dy_ptr + b * s_gb + d.to(tl.int64) * s_gd
    dfin_row = dfin_ptr + b * s_fb + d * s_fd
    w_row = w_ptr + d * s_wd
    u0 = _tap(w_row, s_wk, 0, W, dmask)
    u1 = _tap(w_row, s_wk, 1, W, dmask)
    u2 = _tap(w_row, s_wk, 2, W, dmask)
    u3 = _tap(w_row, s_wk, 3, W, dmask)
    bias = tl.zeros_like(u3)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + d, mask=dmask, other=0.0).to(tl.float32)

    if HAS_INIT or HAS_DFINAL:
        # initial_states and dfinal touch only the first tile and the last W - 1 positions; the
        # tiles in between skip those loads.
        edge = (pid_l == 0) | ((pid_l + 1) * BLOCK_L + W - 1 > seqlen)
        if edge:
            dx, g0, xm3, xm2, xm1, x0 = _bwd_tile(x_row, init_row, dy_row, dfin_row, t, dmask, seqlen, s_xl, s_il,
                                                  s_gl, s_fl, u0, u1, u2, u3, bias, W, HAS_INIT, SILU, HAS_DFINAL)
        else:
            dx, g0, xm3, xm2, xm1, x0 = _bwd_tile(x_row, init_row, dy_row, dfin_row, t, dmask, seqlen, s_xl, s_il,
                                                  s_gl, s_fl, u0, u1, u2, u3, bias, W, False, SILU, False)
    else:
        dx, g0, xm3, xm2, xm1, x0 = _bwd_tile(x_row, init_row, dy_row, dfin_row, t, dmask, seqlen, s_xl, s_il,
                                              s_gl, s_fl, u0, u1, u2, u3, bias, W, False, SILU, False)
    tl.store(dx_ptr + b * s_dxb + d.to(tl.int64) * s_dxd + t * s_dxl, dx.to(dx_ptr.dtype.element_ty),
             mask=dmask & (t < seqlen))

    # Per-program fp32 partial sums of dweight (dim, W) and dbias (dim,); the launcher adds them up
    # (deterministic, unlike atomics).
    part = b * tl.num_programs(2) + pid_l
    dw_row = dw_part_ptr + part * dim * W + d1 * W
    dmask1 = d1 < dim
    tl.store(dw_row + (W - 1), tl.sum(g0 * x0, axis=1), mask=dmask1)
    tl.store(dw_row + (W - 2), tl.sum(g0 * xm1, axis=1), mask=dmask1)
    if W >= 3:
        tl.store(dw_row + (W - 3), tl.sum(g0 * xm2, axis=1), mask=dmask1)
    if W >= 4:
        tl.store(dw_row + (W - 4), tl.sum(g0 * xm3, axis=1), mask=dmask1)
    if HAS_BIAS:
        tl.store(db_part_ptr + part * dim + d1, tl.sum(g0, axis=1), mask=dmask1)

    if HAS_INIT:
        # The first program along the sequence also computes dinitial_states: the same gradient
        # at the W - 1 padded positions before the start.
        if pid_l == 0:
            j = tl.arange(0, 4)[None, :]  # (1, 4)
            di, _g, _a, _b, _c, _e = _bwd_tile(x_row, init_row, dy_row, dfin_row, j - (W - 1), dmask, seqlen,
                                               s_xl, s_il, s_gl, s_fl, u0, u1, u2, u3, bias,
                                               W, HAS_INIT, SILU, HAS_DFINAL)
            tl.store(dinit_ptr + b * s_dib + d * s_did + j * s_dil, di.to(dinit_ptr.dtype.element_ty),
                     mask=dmask & (j < W - 1))


# Longest run of positions per tile; tests lower it to cross tile boundaries on small inputs.
MAX_BLOCK_L = 512


def _next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def _tiles(dim: int, seqlen: int, elements: int) -> tuple[int, int]:
    """(BLOCK_D, BLOCK_L): up to MAX_BLOCK_L positions in a row (long coalesced runs), about
    ``elements`` per tile."""
    block_l = min(MAX_BLOCK_L, max(16, _next_pow2(seqlen)))
    block_d = max(1, min(_next_pow2(dim), elements // block_l))
    return block_d, block_l


def _strides(t: torch.Tensor | None, n: int) -> tuple[int, ...]:
    return tuple(t.stride()) if t is not None else (0,) * n


class _CausalConv1dTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, initial_states, final_states_out, return_final_states, silu):
        batch, dim, seqlen = x.shape
        width = weight.shape[1]
        y = torch.empty((batch, dim, seqlen), dtype=x.dtype, device=x.device)
        final = None
        if return_final_states:
            final = final_states_out if final_states_out is not None else x.new_empty(batch, dim, width - 1)
        block_d, block_l = _tiles(dim, seqlen, 2048)
        grid = (batch, triton.cdiv(dim, block_d), max(1, triton.cdiv(seqlen, block_l)))
        if batch > 0 and dim > 0:
            _conv_fwd_kernel[grid](
                x, weight, bias if bias is not None else x, initial_states if initial_states is not None else x,
                y, final if final is not None else y,
                dim, seqlen,
                *x.stride(), *weight.stride(), *_strides(initial_states, 3), *y.stride(), *_strides(final, 3),
                W=width, HAS_BIAS=bias is not None, HAS_INIT=initial_states is not None, SILU=silu,
                WRITE_FINAL=final is not None, BLOCK_D=block_d, BLOCK_L=block_l, num_warps=4,
            )
        ctx.save_for_backward(x, weight, bias, initial_states)
        ctx.silu = silu
        if final is None:
            return y
        if final_states_out is not None:
            ctx.mark_dirty(final_states_out)
        return y, final

    @staticmethod
    def backward(ctx, dy, dfinal=None):
        x, weight, bias, initial_states = ctx.saved_tensors
        batch, dim, seqlen = x.shape
        width = weight.shape[1]
        block_d, block_l = _tiles(dim, seqlen, 2048)
        n_l = max(1, triton.cdiv(seqlen, block_l))
        dx = torch.empty((batch, dim, seqlen), dtype=x.dtype, device=x.device)
        dinit = torch.empty_like(initial_states) if initial_states is not None else None
        # fp32 partial sums per (batch, sequence tile), reduced below.
        dw_part = torch.empty((batch * n_l, dim, width), dtype=torch.float32, device=x.device)
        db_part = torch.empty((batch * n_l, dim), dtype=torch.float32, device=x.device) if bias is not None else None
        if batch > 0 and dim > 0:
            _conv_bwd_kernel[(batch, triton.cdiv(dim, block_d), n_l)](
                x, weight, bias if bias is not None else x, initial_states if initial_states is not None else x,
                dy, dfinal if dfinal is not None else dy, dx, dinit if dinit is not None else dx,
                dw_part, db_part if db_part is not None else dw_part,
                dim, seqlen,
                *x.stride(), *weight.stride(), *_strides(initial_states, 3), *dy.stride(), *_strides(dfinal, 3),
                *dx.stride(), *_strides(dinit, 3),
                W=width, HAS_BIAS=bias is not None, HAS_INIT=initial_states is not None, SILU=ctx.silu,
                HAS_DFINAL=dfinal is not None, BLOCK_D=block_d, BLOCK_L=block_l, num_warps=8,
            )
        dweight = dw_part.sum(0).to(weight.dtype)
        dbias = db_part.sum(0).to(bias.dtype) if bias is not None else None
        return dx, dweight, dbias, dinit, None, None, None


def causal_conv1d_triton(x, weight, bias=None, initial_states=None, return_final_states=False,
                         final_states_out=None, activation=None):
    """causal_conv1d_fn with Triton kernels (CUDA, or CPU under TRITON_INTERPRET=1).

    x: (batch, dim, seqlen), any strides; weight: (dim, width), width 2-4; bias: (dim,);
    initial_states: (batch, dim, width - 1). fp32 arithmetic (also for float64 inputs); y in x's
    dtype; with ``return_final_states`` also the last width - 1 inputs (batch, dim, width - 1),
    written into ``final_states_out`` when given. Differentiable w.r.t. x, weight, bias,
    initial_states, also through the final states.
    """
    check_conv_args(x, weight, bias, activation, initial_states, final_states_out if return_final_states else None)
    return _CausalConv1dTriton.apply(x, weight, bias, initial_states,
                                     final_states_out if return_final_states else None,
                                     bool(return_final_states), activation in ("silu", "swish"))


@triton.jit
def _conv_update_kernel(
    x_ptr, state_ptr, w_ptr, bias_ptr, y_ptr,
    dim,
    s_xb, s_xd, s_sb, s_sd, s_sk, s_wd, s_wk, s_yb, s_yd,
    W: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr, BLOCK_D: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)  # (BLOCK_D,)
    k = tl.arange(0, 4)[None, :]  # (1, 4): state column; k >= W is masked
    dmask = d < dim
    d2 = d[:, None]
    m2 = (d2 < dim) & (k < W)
    row = state_ptr + b * s_sb + d2 * s_sd
    # Every load (x, the state, the weights, the bias) is issued before the in-place store, so the
    # program waits for one memory round trip: this kernel is all latency.
    xv = tl.load(x_ptr + b * s_xb + d * s_xd, mask=dmask, other=0.0)
    # The new state is the old one shifted left by one column, x entering at the right end.
    shifted = tl.load(row + (k + 1) * s_sk, mask=m2 & (k + 1 < W), other=0.0)  # (BLOCK_D, 4)
    w = tl.load(w_ptr + d2 * s_wd + k * s_wk, mask=m2, other=0.0).to(tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + d, mask=dmask, other=0.0).to(tl.float32)
    new = tl.where(k == W - 1, xv.to(state_ptr.dtype.element_ty)[:, None], shifted)  # (BLOCK_D, 4)
    # Every thread must have read the old state before any thread overwrites it.
    tl.debug_barrier()
    tl.store(row + k * s_sk, new, mask=m2)
    # The output uses x as stored in the state (rounded to its dtype), as the reference does.
    y = tl.sum(new.to(tl.float32) * w, axis=1)  # (BLOCK_D,)
    if HAS_BIAS:
        y += bias
    if SILU:
        y = y * tl.sigmoid(y)
    tl.store(y_ptr + b * s_yb + d * s_yd, y.to(y_ptr.dtype.element_ty), mask=dmask)


def causal_conv1d_update_triton(x, conv_state, weight, bias=None, activation=None):
    """One decoding step: x (batch, dim) enters conv_state (batch, dim, width), updated in place;
    returns act(conv at the new position) (batch, dim) in x's dtype. One launch, no host sync and
    no allocation beyond the output, so a CUDA graph of a step holds exactly this kernel node."""
    batch, dim, width = check_update_args(x, conv_state, weight, bias, activation)
    y = torch.empty((batch, dim), dtype=x.dtype, device=x.device)
    if batch > 0 and dim > 0:
        # The same launch shape as the state update: every SM busy at batch 1, one warp a program.
        block_d, num_warps = decode_block(batch, dim, 4, sm_count(x.device))
        _conv_update_kernel[(batch, triton.cdiv(dim, block_d))](
            x, conv_state, weight, bias if bias is not None else x, y,
            dim,
            *x.stride(), *conv_state.stride(), *weight.stride(), *y.stride(),
            W=width, HAS_BIAS=bias is not None, SILU=activation in ("silu", "swish"), BLOCK_D=block_d,
            num_warps=num_warps,
        )
    return y
