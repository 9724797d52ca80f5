"""Selective scan forward as one compiled numba loop: the CPU path (its backward: ``cpu_numba_bwd``).

The chunked PyTorch path (``chunked.py``) spends most of its time in memory passes and per-op
overhead; here every (batch, channel block) walks the sequence once with its state in a small local
array, so the work is the arithmetic alone. Channels are the innermost (SIMD) loop: the state of a
block is (dstate, channels), the output y_t = sum_n C_t[n] h_t[n] becomes vertical adds, and B_t, C_t
are one scalar per (step, state) for a whole block (blocks never cross a group boundary).

numba has no vectorised ``exp`` without Intel's SVML, and libm's scalar expf costs more than the rest
of the step, so float32 uses an inlined exp of its own (Cody-Waite reduction, degree-7 polynomial,
exponent built in the float's bits): within 2 ulp of expf, and vectorised. It is valid for the
arguments dt * A <= 0 that Mamba always has (dt >= 0, A < 0); the kernel checks that for every step
(A <= 0 everywhere, the step's dt all >= 0) and otherwise, and for float64, calls math.exp.
Arguments below log(FLT_MIN) + 1 are floored there, as in the chunked path; softplus and SiLU use
the same exp, so their results below ~1e-37 are off by less than that, absolutely. Everything else
is the reference's arithmetic (fastmath off).

Imports numba at module level: import this module only through ``chunked.numba_scan()``, which
returns None where numba is missing.
"""

from __future__ import annotations

import functools
import math
import os
import threading

import numba
import numpy as np
import torch
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

# Widest channel block: (dstate, 64) fp32 state = 4 KiB, several rows of scratch, all in L1.
MAX_BLOCK = 64
# Steps per (steps, channels) tile of the per-step inputs: four 8 KiB fp32 tiles stay in L1.
TILE = 32

_LOG2E = 1.4426950408889634
_LN2_HI = 0.693145751953125  # ln 2 with a short mantissa: k * _LN2_HI is exact for |k| < 256
_LN2_LO = 1.4286068203094173e-06
_ROUND = 12582912.0  # 1.5 * 2**23: v + _ROUND rounds v to an integer held in the low mantissa bits
# bits(k + _ROUND) - _EXP_OFFSET = k + 127, the biased exponent of 2**k
_EXP_OFFSET = 0x4B400000 - 127
_EXP_FLOOR = math.log(np.finfo(np.float32).tiny) + 1.0

# numba's OpenMP layer, next to torch's own OpenMP runtime, left torch's ops ~80x slower after a
# launch (spinning threads), and was slower itself; the portable workqueue layer has neither problem.
# A user's NUMBA_THREADING_LAYER still wins.
if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"

# numba's workqueue threading layer aborts on concurrent launches (the app serves sessions from
# several threads), and set_num_threads is per calling thread: one launch at a time.
_LAUNCH = threading.Lock()


@intrinsic
def _f32_bits(typingctx, v):
    """The bits of a float32 as an int32 (a bitcast; numba has no scalar ``view``)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))
    return types.int32(types.float32), codegen


@intrinsic
def _f32_from_bits(typingctx, v):
    """The float32 whose bits are the int32 ``v``."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())
    return types.float32(types.int32), codegen


@njit(inline="always", fastmath=False)
def _exp_f32(a):
    """exp(a) for a float32 in [_EXP_FLOOR, 0], to within 2 ulp: branch-free, so loops over it vectorise."""
    v = a * np.float32(_LOG2E) + np.float32(_ROUND)
    k = v - np.float32(_ROUND)  # round(a / ln 2), held in v's low mantissa bits as well
    r = (a - k * np.float32(_LN2_HI)) - k * np.float32(_LN2_LO)  # |r| <= ln(2) / 2
    p = np.float32(1.0 / 5040.0)  # exp(r), Taylor to degree 7: truncation < 5e-9 relative
    p = p * r + np.float32(1.0 / 720.0)
    p = p * r + np.float32(1.0 / 120.0)
    p = p * r + np.float32(1.0 / 24.0)
    p = p * r + np.float32(1.0 / 6.0)
    p = p * r + np.float32(0.5)
    p = p * r + np.float32(1.0)
    p = p * r + np.float32(1.0)
    return p * _f32_from_bits((_f32_bits(v) - np.int32(_EXP_OFFSET)) << np.int32(23))  # p * 2**k


@njit(inline="always", fastmath=False)
def _decay(a, fast):
    """exp(a) for a = dt * A; ``fast`` (float32, a <= 0 known) takes the vectorised exp."""
    if fast:
        return _exp_f32(max(a, np.float32(_EXP_FLOOR)))
    return math.exp(a)


@njit(inline="always", fastmath=False)
def _softplus(v, fast):
    """log(1 + exp(v)) as torch computes it (v itself above 20)."""
    if fast:  # max(v, 0) + log1p(q), q = exp(-|v|) in (0, 1]: log1p(q) = 2 atanh(s), s = q / (2 + q) <= 1/3
        q = _exp_f32(max(-abs(v), np.float32(_EXP_FLOOR)))
        s = q / (np.float32(2.0) + q)
        s2 = s * s
        p = np.float32(1.0 / 15.0)  # 2 atanh(s) = 2 s sum_k s^2k / (2k + 1); dropped terms < 3e-9 relative
        p = p * s2 + np.float32(1.0 / 13.0)
        p = p * s2 + np.float32(1.0 / 11.0)
        p = p * s2 + np.float32(1.0 / 9.0)
        p = p * s2 + np.float32(1.0 / 7.0)
        p = p * s2 + np.float32(1.0 / 5.0)
        p = p * s2 + np.float32(1.0 / 3.0)
        p = p * s2 + np.float32(1.0)
        return max(v, np.float32(0.0)) + np.float32(2.0) * s * p
    return v if v > 20 else math.log1p(math.exp(v))


@njit(inline="always", fastmath=False)
def _silu(z, fast):
    """z * sigmoid(z)."""
    if fast:  # through e = exp(-|z|) <= 1, the range of the fast exp
        e = _exp_f32(max(-abs(z), np.float32(_EXP_FLOOR)))
        sig = np.float32(1.0) / (np.float32(1.0) + e)
        return z * (sig if z >= 0 else e * sig)
    return z / (1 + math.exp(-z))


@njit(inline="always")
def _load_block(st, ab, bi, ci, h, At, B, C, b, d0, w, b_per, c_per):
    """A block's (dstate, channels) arrays: its state from h, A, and B / C where time-invariant."""
    for n in range(st.shape[0]):
        for j in range(w):
            st[n, j] = h[b, d0 + j, n]
            ab[n, j] = At[n, d0 + j]
            if b_per == 0:
                bi[n, j] = B[0, 0, n, d0 + j]
            if c_per == 0:
                ci[n, j] = C[0, 0, n, d0 + j]


@njit(inline="always")
def _load_rows(tile, rows, t0, steps, w):
    """tile[i, j] = rows[j, t0 + i] for i < steps, from a (channels, seqlen) view of either memory
    layout: the inner loop runs along whichever axis is contiguous."""
    if rows.strides[1] == rows.itemsize:  # (channels, seqlen) rows: read along the sequence
        for j in range(w):
            for i in range(steps):
                tile[i, j] = rows[j, t0 + i]
    else:  # channel-last memory (a projection's output, transposed): a step's channels are adjacent
        for i in range(steps):
            for j in range(w):
                tile[i, j] = rows[j, t0 + i]


@njit(inline="always")
def _store_rows(rows, tile, t0, steps, w):
    """rows[j, t0 + i] = tile[i, j] for i < steps, into either memory layout (as :func:`_load_rows`)."""
    if rows.strides[1] == rows.itemsize:
        for j in range(w):
            for i in range(steps):
                rows[j, t0 + i] = tile[i, j]
    else:
        for i in range(steps):
            for j in range(w):
                rows[j, t0 + i] = tile[i, j]


@njit(inline="always")
def _dt_row(dtr, vr, tile, i, bias, has_bias, softplus, fast, w):
    """vr = delta + bias and dtr = softplus(vr) (or vr) for step row i of a delta tile. The options
    are tested outside the channel loops: a flag tested inside kept softplus scalar."""
    if has_bias:
        for j in range(w):
            vr[j] = tile[i, j] + bias[j]
    else:
        for j in range(w):
            vr[j] = tile[i, j]
    if softplus and fast:
        for j in range(w):
            dtr[j] = _softplus(vr[j], True)
    elif softplus:
        for j in range(w):
            dtr[j] = _softplus(vr[j], False)
    else:
        for j in range(w):
            dtr[j] = vr[j]


def compiled_per_dtype(signature):
    """Decorator: compile a parallel kernel for one explicit signature per work dtype (that of its
    first argument), each dtype on its first call, cached on disk.

    Typed by what it is given, numba compiles a variant for every combination of memory layouts it
    sees, and the (batch, channels, seqlen) arrays arrive C-contiguous, channel-last or, for one
    sequence, Fortran-ordered: four such arguments gave dozens of parallel compiles, minutes on a
    fresh cache. The signatures declare those arrays 'A' (any strides: the tile loads choose their
    loop order at run time) and every other array C-contiguous, so numba converts instead of
    compiling, and a float64 variant is compiled only where float64 is used.
    """
    def decorate(pyfunc):
        @functools.cache
        def compiled(dtype: np.dtype):
            return njit([signature(numba.from_dtype(dtype))], parallel=True, fastmath=False, cache=True)(pyfunc)

        @functools.wraps(pyfunc)
        def launch(*args):
            return compiled(args[0].dtype)(*args)

        launch.compiled = compiled
        return launch

    return decorate


def strided(f, ndim: int = 3):
    """A float array type of any strides: the (batch, channels, seqlen) rows the kernels read in place."""
    return types.Array(f, ndim, "A")


def contiguous(f, ndim: int):
    """A C-contiguous float array type: every array the launchers allocate or copy themselves."""
    return types.Array(f, ndim, "C")


def scan_inputs(f) -> tuple:
    """Types of the arguments the forward and backward kernels share: u, delta, z, D, bias, At, B, C,
    b_per, c_per."""
    rows, vec, bc = strided(f), contiguous(f, 1), contiguous(f, 4)
    return rows, rows, rows, vec, vec, contiguous(f, 2), bc, bc, types.int64, types.int64


def _scan_signature(f):
    # ... then h, out, seg and the six flags
    return types.void(*scan_inputs(f), contiguous(f, 3), strided(f), types.int64, *[types.boolean] * 6)


@compiled_per_dtype(_scan_signature)
def _scan(u, delta, z, D, bias, At, B, C, b_per, c_per, h, out, seg,
          has_z, has_D, has_bias, softplus, fast, a_nonpos):
    """out = (y + u D) silu(z), h_t = exp(dt_t A) h_{t-1} + dt_t u_t B_t, y_t = C_t . h_t.

    u, delta, z, out: (batch, dim, seqlen), each contiguous along seqlen or along dim (a channel-last
    view, read and written in place; the tile loads pick the loop order). D, bias: (dim,). At:
    (dstate, dim). B, C: (batch or 1, seqlen or 1, dstate, width): channel d reads column d // per,
    or column d where per = 0 (time-invariant, one column per channel); per = dim // ngroups
    otherwise. h: (batch, dim, dstate), the initial state on entry and the last one on exit. Absent
    z, D, bias are dummies of the right shape, flagged off. Blocks of channels never cross a multiple
    of ``seg``. fast: float32 with the vectorised exp (module notes); a_nonpos: all A <= 0, so a step
    whose dt are all >= 0 has dt A <= 0.
    """
    batch, dim, seqlen = u.shape
    dstate = At.shape[0]
    nseg = dim // seg if seg > 0 else 0
    per_seg = (seg + MAX_BLOCK - 1) // MAX_BLOCK
    for item in prange(batch * nseg * per_seg):
        b = item // (nseg * per_seg)
        d0 = (item % (nseg * per_seg)) // per_seg * seg + (item % per_seg) * MAX_BLOCK
        d1 = min(d0 + MAX_BLOCK, (d0 // seg + 1) * seg)
        w = d1 - d0
        bb, cb = min(b, B.shape[0] - 1), min(b, C.shape[0] - 1)
        # Views and copies indexed from 0, so that inner indices are loop counters known to be >= 0
        # (no negative-index wrap-around, and the loops vectorise). Views are made per block, never
        # per step: numba updates a view's reference count atomically, dearer than the arithmetic.
        ub, deltab, zb, outb = u[b, d0:d1], delta[b, d0:d1], z[b, d0:d1], out[b, d0:d1]  # (w, seqlen)
        Db, biasb = D[d0:d1], bias[d0:d1]
        st = np.empty((dstate, w), dtype=u.dtype)  # (dstate, channels): the block's state
        ab = np.empty((dstate, w), dtype=u.dtype)
        bi = np.zeros((dstate, w), dtype=u.dtype)  # B and C when time-invariant
        ci = np.zeros((dstate, w), dtype=u.dtype)
        _load_block(st, ab, bi, ci, h, At, B, C, b, d0, w, b_per, c_per)
        dtr = np.empty(w, dtype=u.dtype)  # this step's dt, dt * u and y for the block's channels
        vr = np.empty(w, dtype=u.dtype)
        xr = np.empty(w, dtype=u.dtype)
        yr = np.empty(w, dtype=u.dtype)
        brow = np.empty(w, dtype=u.dtype)
        crow = np.empty(w, dtype=u.dtype)
        # (steps, channels) tiles of delta, u, z and out: read and written along the sequence, so a
        # step's row is contiguous (rows of the (w, seqlen) views are seqlen apart and alias in L1).
        dtile = np.empty((TILE, w), dtype=u.dtype)
        utile = np.empty((TILE, w), dtype=u.dtype)
        ztile = np.empty((TILE, w), dtype=u.dtype)
        otile = np.empty((TILE, w), dtype=u.dtype)
        for t in range(seqlen):
            i = t % TILE
            if i == 0:
                steps = min(TILE, seqlen - t)
                _load_rows(dtile, deltab, t, steps, w)
                _load_rows(utile, ub, t, steps, w)
                if has_z:
                    _load_rows(ztile, zb, t, steps, w)
            tb, tc = min(t, B.shape[1] - 1), min(t, C.shape[1] - 1)
            # The options are tested outside the channel loops, so each loop is branch-free and
            # vectorises (a flag tested inside left softplus and SiLU scalar: half the kernel's time).
            _dt_row(dtr, vr, dtile, i, biasb, has_bias, softplus, fast, w)
            negative = 0  # steps with a dt < 0 (or NaN) take the exact exp
            for j in range(w):
                xr[j] = dtr[j] * utile[i, j]
                yr[j] = 0
                negative += 0 if dtr[j] >= 0 else 1
            fast_step = fast and a_nonpos and negative == 0
            for n in range(dstate):
                if b_per == 0:
                    for j in range(w):
                        brow[j] = bi[n, j]
                else:
                    bv = B[bb, tb, n, d0 // b_per]
                    for j in range(w):
                        brow[j] = bv
                if c_per == 0:
                    for j in range(w):
                        crow[j] = ci[n, j]
                else:
                    cv = C[cb, tc, n, d0 // c_per]
                    for j in range(w):
                        crow[j] = cv
                if fast_step:
                    for j in range(w):
                        hn = _decay(dtr[j] * ab[n, j], True) * st[n, j] + xr[j] * brow[j]
                        st[n, j] = hn
                        yr[j] += hn * crow[j]
                else:
                    for j in range(w):
                        hn = _decay(dtr[j] * ab[n, j], False) * st[n, j] + xr[j] * brow[j]
                        st[n, j] = hn
                        yr[j] += hn * crow[j]
            if has_D:
                for j in range(w):
                    yr[j] += utile[i, j] * Db[j]
            if has_z and fast:
                for j in range(w):
                    yr[j] *= _silu(ztile[i, j], True)
            elif has_z:
                for j in range(w):
                    yr[j] *= _silu(ztile[i, j], False)
            for j in range(w):
                otile[i, j] = yr[j]
            if i == TILE - 1 or t == seqlen - 1:
                _store_rows(outb, otile, t - i, i + 1, w)
        for n in range(dstate):
            for j in range(w):
                h[b, d0 + j, n] = st[n, j]


def _bc_columns(t: torch.Tensor, dim: int, work: torch.dtype) -> tuple[np.ndarray, int]:
    """B or C as the kernel's (batch or 1, seqlen or 1, dstate, width) array and its channels per column
    (0: time-invariant, one column per channel)."""
    if t.dim() == 2:  # (dim, dstate) -> (1, 1, dstate, dim)
        return t.detach().to(work).t().contiguous()[None, None].numpy(), 0
    if t.dim() == 3:  # (batch, dstate, seqlen): one group
        t = t[:, None]
    groups = t.shape[1]  # (batch, G, dstate, seqlen) -> (batch, seqlen, dstate, G)
    return t.detach().to(work).permute(0, 3, 2, 1).contiguous().numpy(), dim // groups


def _rows(t: torch.Tensor, work: torch.dtype) -> np.ndarray:
    """A (batch, channels, seqlen) tensor as the kernels' array, without a copy when one of its last
    two axes is contiguous: the transposed view of a projection's (batch, seqlen, channels) output is
    read in place (copying it along the long stride cost more than the kernel's own tile loads)."""
    t = t.detach().to(work)
    if t.stride(-1) != 1 and t.stride(-2) != 1:
        t = t.contiguous()
    return t.numpy()


def channel_last(batch: int, dim: int, seqlen: int, dtype: torch.dtype) -> torch.Tensor:
    """An empty (batch, dim, seqlen) tensor laid out as (batch, seqlen, dim): the scan writes its output
    there, so the block's output projection reads ``out.transpose(1, 2)`` without a copy."""
    return torch.empty(batch, seqlen, dim, dtype=dtype).transpose(1, 2)


class ScanArrays:
    """The kernels' view of the arguments: work-dtype numpy arrays, B / C as columns, flags."""

    def __init__(self, u, delta, A, B, C, D, z, delta_bias, delta_softplus):
        self.batch, self.dim, self.seqlen = u.shape
        self.dstate = A.shape[1]
        self.work = work = torch.float64 if u.dtype == torch.float64 else torch.float32
        arr = lambda t: t.detach().to(work).contiguous().numpy()  # noqa: E731
        self.u, self.delta = _rows(u, work), _rows(delta, work)
        self.z = _rows(z, work) if z is not None else self.u
        zeros = np.zeros(self.dim, dtype=self.u.dtype)
        self.D = arr(D) if D is not None else zeros
        self.bias = arr(delta_bias) if delta_bias is not None else zeros
        self.B, self.b_per = _bc_columns(B, self.dim, work)
        self.C, self.c_per = _bc_columns(C, self.dim, work)
        self.seg = math.gcd(self.b_per or self.dim, self.c_per or self.dim)
        A_ = A.detach().to(work)
        self.At = A_.t().contiguous().numpy()
        self.flags = (z is not None, D is not None, delta_bias is not None, bool(delta_softplus),
                      work == torch.float32, bool((A_ <= 0).all()))

    def initial(self, initial_state):
        """The initial state as a fresh (batch, dim, dstate) work tensor (zeros when absent)."""
        if initial_state is None:
            return torch.zeros(self.batch, self.dim, self.dstate, dtype=self.work)
        return initial_state.detach().to(self.work, copy=True).contiguous()


def _threads():
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))


def scan_forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state):
    """(out in u's dtype, last state in the work dtype) from one compiled pass."""
    a = ScanArrays(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    h = a.initial(initial_state)
    out = channel_last(a.batch, a.dim, a.seqlen, a.work)
    with _LAUNCH:
        _threads()
        _scan(a.u, a.delta, a.z, a.D, a.bias, a.At, a.B, a.C, a.b_per, a.c_per, h.numpy(), out.numpy(), a.seg,
              *a.flags)
    return out.to(u.dtype), h


class _NumbaScan(torch.autograd.Function):
    """The compiled scan under autograd: the backward (``cpu_numba_bwd``) recomputes the states from
    the inputs, so nothing of size (batch, dim, seqlen, dstate) is stored."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus):
        out, last = scan_forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state)
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, initial_state)
        ctx.delta_softplus = delta_softplus
        ctx.set_materialize_grads(False)
        return out, last

    @staticmethod
    def backward(ctx, dout, dlast):
        from .cpu_numba_bwd import scan_backward

        return (*scan_backward(*ctx.saved_tensors, ctx.delta_softplus, dout, dlast), None)


def selective_scan_numba(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                         return_last_state=False, *, initial_state=None):
    """``selective_scan_ref``'s results from one compiled pass over the sequence, differentiable.

    Arguments must already be checked (``_checks.scan_shapes``) and on the CPU. Computes in float32
    (float64 for float64 u); returns out in u's dtype and, with ``return_last_state``, the last state
    (batch, dim, dstate) in the work dtype. Under autograd the backward is a second compiled loop
    (``cpu_numba_bwd``); gradients come back in each input's dtype.
    """
    tensors = (u, delta, A, B, C, D, z, delta_bias, initial_state)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        out, last = _NumbaScan.apply(u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus)
    else:
        out, last = scan_forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state)
    return (out, last) if return_last_state else out
