"""Chunked PyTorch selective scan: the fast path on CPUs (and any non-CUDA device).

Mamba-1 decays differ per (channel, state), so the quadratic "segment-sum matrix" form of Mamba-2
costs O(chunk * dstate) work per step, and ``torch.logcumsumexp`` runs ~20 ns per element on a CPU;
both are slower than a plain loop. This path is a two-level (blocked) scan of linear work instead:

1. The sequence is cut into *chunks* of ``T`` steps. The local recurrences of all chunks (zero
   initial state) advance together, one in-chunk offset per batched op on (batch, chunks, dim, dstate).
2. The chunk decays are the cumulative log-decays of each chunk, exp(A * sum(delta)) (exp of a
   non-positive number, so nothing overflows); a short loop over chunks carries the state.
3. The local recurrences are rerun from the carried states, emitting the outputs.

So a sequence of L steps costs about 3 * sqrt(L) Python steps instead of L, every op works on
contiguous tensors that fit the CPU cache, and the arithmetic is the reference's (no cancellation,
no exp of positive numbers). Chunks are grouped into *blocks* whose (batch, dim, dstate, block_len)
work tensors stay within ``BLOCK_ELEMS``; blocks run one after another, carrying the state, so memory
never grows with the whole sequence. Each block is one ``autograd.Function`` with a hand-derived
backward that recomputes the block's states, so autograd stores only the small inputs per block and
gradients flow through ``initial_state`` and the returned last state.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import logging
import math

import torch
import torch.nn.functional as F

from .._checks import scan_shapes

logger = logging.getLogger(__name__)

ENGINES = ("numba", "torch")

# Largest (batch * dim * dstate * block_len) work tensor, in elements (64 MiB in fp32). The backward
# holds about three of them; the sequence is processed in blocks no longer than this allows.
BLOCK_ELEMS = 1 << 24
# Chunk length T = CHUNK_SCALE * sqrt(block_len). The loop count 2 * T + block_len / T is smallest at
# sqrt(block_len / 2), but measured on a 2-core Xeon (benchmarks/RESULTS.md) sqrt(block_len) is
# faster: the carry over chunks runs small, overhead-bound ops, the loop over offsets large ones.
CHUNK_SCALE = 1.0


def _exp_decay_(log_decay: torch.Tensor) -> torch.Tensor:
    """In-place exp of non-positive log-decays, floored just above the smallest normal number.

    exp of arguments below log(tiny) (-87.3 in fp32: e.g. A = -16 over a chunk) returns subnormals
    through a slow path (~60x slower on x86); the floor changes results by < 1e-37 absolute.
    """
    floor = math.log(torch.finfo(log_decay.dtype).tiny) + 1.0
    return log_decay.clamp_min_(floor).exp_()


def selective_scan_chunked(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                           return_last_state=False, *, initial_state=None):
    """Chunked selective scan, same arguments and results as ``selective_scan_ref``.

    out = (y + u * D) * silu(z) with x_t = exp(Δ_t A) x_{t-1} + Δ_t B_t u_t and y_t = C_t · x_t.
    Computes in float32 for float32/bfloat16/float16 inputs (float64 for float64); returns out in
    u's dtype and, with ``return_last_state``, the last state (batch, dim, dstate) in the work dtype.
    """
    return scan_chunked(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state,
                        initial_state=initial_state)


@functools.lru_cache(maxsize=1)
def numba_scan():
    """The compiled forward (``cpu_numba.selective_scan_numba``), or None where numba is missing or broken."""
    if importlib.util.find_spec("numba") is None:
        return None
    try:
        return importlib.import_module(f"{__package__}.cpu_numba").selective_scan_numba
    except Exception as exc:  # e.g. a numba built for another numpy: the torch path still works
        logger.warning("numba is installed but unusable (%s); the selective scan uses the PyTorch path", exc)
        return None


def _choose_engine(engine, tensors) -> str:
    """numba (compiled forward and backward) for CPU tensors where numba is installed, else torch.

    The torch engine's backward makes element-wise passes over (batch, dim, chunk, dstate) tensors;
    the numba one walks the sequence with the state in registers: a small classifier's CPU training
    step 7.7 s -> ~3.2 s on one thread (benchmarks/NOTES.md, C2-C4)."""
    if engine is not None and engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES} or None, got {engine!r}")
    if engine == "numba" and numba_scan() is None:
        raise RuntimeError("engine='numba' but numba is not installed")
    if engine is not None:
        return engine
    on_cpu = all(t is None or t.device.type == "cpu" for t in tensors)
    return "numba" if on_cpu and numba_scan() is not None else "torch"


def scan_chunked(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                 return_last_state=False, *, initial_state=None, chunk_len=None, block_len=None, engine=None):
    """``selective_scan_chunked`` with explicit chunk and block lengths (None: chosen for the shape).

    ``engine``: "numba" runs the recurrence as one compiled loop each way (``cpu_numba``,
    ``cpu_numba_bwd``), "torch" the two-level scan with its backward; None picks numba on CPU
    tensors where it is installed.
    """
    batch, dim, seqlen, dstate, _, _ = scan_shapes(u, delta, A, B, C, D, z, delta_bias, initial_state)
    if _choose_engine(engine, (u, delta, A, B, C, D, z, delta_bias, initial_state)) == "numba":
        return numba_scan()(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state,
                            initial_state=initial_state)
    work = torch.float64 if u.dtype == torch.float64 else torch.float32
    dt = delta.to(work)  # (batch, dim, seqlen)
    if delta_bias is not None:
        dt = dt + delta_bias.to(work)[:, None]
    if delta_softplus:
        dt = F.softplus(dt)
    x = dt * u.to(work)  # (batch, dim, seqlen): the input term is x_t ⊗ B_t
    A_ = A.to(work).contiguous()  # (dim, dstate)
    h = (initial_state.to(work) if initial_state is not None
         else u.new_zeros(batch, dim, dstate, dtype=work))  # (batch, dim, dstate)

    dt_rows, x_rows = _Transpose.apply(dt), _Transpose.apply(x)  # (batch, seqlen, dim): steps as rows
    y_rows, h = _scan_blocks(dt_rows, x_rows, A_, _per_group(B, work), _per_group(C, work), h, chunk_len, block_len)
    y = _Transpose.apply(y_rows)  # (batch, dim, seqlen)

    out = y if D is None else y + u.to(work) * D.to(work)[:, None]
    if z is not None:
        out = out * F.silu(z.to(work).contiguous())  # contiguous: the vectorised silu, whatever the strides
    out = out.to(u.dtype)
    return (out, h) if return_last_state else out


def _scan_blocks(dt_rows, x_rows, A_, B_, C_, h, chunk_len, block_len):
    """The two-level scan over (batch, seqlen, dim) rows, block after block: (y rows, last state)."""
    batch, seqlen, dim = dt_rows.shape
    T, block = plan(batch * dim * A_.shape[1], seqlen, chunk_len, block_len)
    ys = []
    for start in range(0, seqlen, block):
        stop = min(start + block, seqlen)
        K = -(-(stop - start) // T)  # chunks in this block; the last one padded to T steps
        y_blk, h = _BlockScan.apply(_blocked(dt_rows, start, stop, T, K), _blocked(x_rows, start, stop, T, K),
                                    A_, _blocked_bc(B_, start, stop, T, K), _blocked_bc(C_, start, stop, T, K), h)
        # (T, batch, K, dim) -> (batch, K * T, dim), padding cut off
        ys.append(y_blk.permute(1, 2, 0, 3).reshape(batch, K * T, dim)[:, : stop - start])
    y_rows = ys[0] if len(ys) == 1 else torch.cat(ys, dim=1) if ys else dt_rows.new_zeros(batch, 0, dim)
    return y_rows, h


def plan(lanes: int, seqlen: int, chunk_len: int | None = None, block_len: int | None = None) -> tuple[int, int]:
    """(chunk length T, block length) for ``lanes`` = batch * dim * dstate independent recurrences."""
    if block_len is None:
        block_len = max(1, min(seqlen, BLOCK_ELEMS // max(lanes, 1)))
    if chunk_len is None:
        chunk_len = max(1, round(CHUNK_SCALE * math.sqrt(block_len)))
    if chunk_len < 1 or block_len < 1:
        raise ValueError(f"chunk_len and block_len must be positive, got {chunk_len} and {block_len}")
    chunk_len = min(chunk_len, block_len)
    return chunk_len, chunk_len * (-(-block_len // chunk_len))  # block: a whole number of chunks


def _per_group(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """B or C as (dim, dstate) when time-invariant, else (batch, ngroups, dstate, seqlen).

    Contiguous, so that reductions over dstate see the same memory order whatever the caller's strides.
    """
    t = t.to(dtype).contiguous()
    return t[:, None] if t.dim() == 3 else t


class _Transpose(torch.autograd.Function):
    """(batch, m, n) -> contiguous (batch, n, m) through torch's cache-blocked 2-d transpose copy,
    several times faster on a CPU than a general permute; its own inverse for the gradient."""

    @staticmethod
    def forward(ctx, v):
        return _transpose(v)

    @staticmethod
    def backward(ctx, g):
        return _transpose(g)


def _transpose(v: torch.Tensor) -> torch.Tensor:
    v = v.contiguous()
    out = v.new_empty(v.shape[0], v.shape[2], v.shape[1])
    for i in range(v.shape[0]):  # 2-d copies: the blocked transpose path of Tensor.copy_
        out[i].copy_(v[i].t())
    return out


def _blocked(rows: torch.Tensor, start: int, stop: int, T: int, K: int) -> torch.Tensor:
    """Steps start:stop of (batch, seqlen, dim) as (T, batch, K, dim), zero-padded to K * T steps.

    Padded steps have delta = 0 (decay 1) and input 0, so they leave the state unchanged.
    """
    v = rows[:, start:stop]
    if K * T != stop - start:
        v = F.pad(v, (0, 0, 0, K * T - (stop - start)))
    return v.reshape(v.shape[0], K, T, v.shape[2]).permute(2, 0, 1, 3).contiguous()


def _blocked_bc(t: torch.Tensor, start: int, stop: int, T: int, K: int) -> torch.Tensor:
    """B or C for one block: (dim, dstate) unchanged, (batch, G, dstate, seqlen) -> (T, batch, K, G, dstate)."""
    if t.dim() == 2:
        return t
    batch, groups, dstate, _ = t.shape
    v = t[..., start:stop]
    if K * T != stop - start:
        v = F.pad(v, (0, K * T - (stop - start)))
    return v.view(batch, groups, dstate, K, T).permute(4, 0, 3, 1, 2).contiguous()


class _Proj:
    """B or C of one block with the three products the scan needs, in either form.

    ``m`` is (dim, dstate) (time-invariant) or (T, batch, K, G, dstate); lane tensors are
    (batch, K, dim, dstate) and per-step vectors (batch, K, dim). Results go to ``out``.
    """

    def __init__(self, m: torch.Tensor, dim: int):
        self.m, self.invariant = m, m.dim() == 2
        self.groups = 1 if self.invariant else m.shape[3]
        self.dg = dim // self.groups

    def outer(self, v: torch.Tensor, t: int, out: torch.Tensor) -> torch.Tensor:
        """out = v_t ⊗ M_t: (batch, K, dim) -> (batch, K, dim, dstate)."""
        if self.invariant:
            return torch.mul(v[..., None], self.m, out=out)
        b, K, _, n = out.shape
        torch.mul(v.view(b, K, self.groups, self.dg, 1), self.m[t][:, :, :, None],
                  out=out.view(b, K, self.groups, self.dg, n))
        return out

    def dot(self, h: torch.Tensor, t: int, out: torch.Tensor) -> torch.Tensor:
        """out = sum_n h[..., n] M_t[n]: (batch, K, dim, dstate) -> (batch, K, dim)."""
        if self.invariant:
            return torch.sum(h * self.m, dim=-1, out=out)
        b, K, dim, n = h.shape
        torch.matmul(h.view(b, K, self.groups, self.dg, n), self.m[t][..., None],
                     out=out.view(b, K, self.groups, self.dg, 1))
        return out

    def accumulate_grad(self, grad: torch.Tensor, t: int, h: torch.Tensor, v: torch.Tensor) -> None:
        """Add step t's gradient of M (from ``outer(v)`` or ``dot(h)``): sum over each group's channels
        of v ⊗ h, (batch, K, G, dstate) into ``grad[t]``, or summed over batch and chunks when invariant."""
        if self.invariant:
            grad.add_((h * v[..., None]).sum((0, 1)))  # (dim, dstate)
            return
        b, K, dim, n = h.shape
        torch.matmul(v.view(b, K, self.groups, 1, self.dg), h.view(b, K, self.groups, self.dg, n),
                     out=grad[t].view(b, K, self.groups, 1, n))


class _Workspace:
    """Per-step decays exp(dt_t A) and inputs x_t ⊗ B_t of one block, recomputed into two reused
    buffers: cheaper on a CPU than keeping them for every step (that memory falls out of cache)."""

    def __init__(self, dt: torch.Tensor, x: torch.Tensor, A: torch.Tensor, Bp: _Proj):
        T, batch, K, dim = dt.shape
        self.dt, self.x, self.A, self.Bp = dt, x, A, Bp
        self.a = dt.new_empty(batch, K, dim, A.shape[1])  # (batch, K, dim, dstate)
        self.X = torch.empty_like(self.a)

    def lanes(self) -> torch.Tensor:
        return torch.empty_like(self.a)

    def decay(self, t: int) -> torch.Tensor:
        return _exp_decay_(torch.mul(self.dt[t][..., None], self.A, out=self.a))

    def inputs(self, t: int) -> torch.Tensor:
        return self.Bp.outer(self.x[t], t, out=self.X)


class _BlockScan(torch.autograd.Function):
    """One block of the two-level scan.

    dt, x: (T, batch, K, dim); A: (dim, dstate); B, C: (dim, dstate) or (T, batch, K, G, dstate);
    h0: (batch, dim, dstate). Returns y (T, batch, K, dim) and the state after the block.
    """

    @staticmethod
    def forward(ctx, dt, x, A, B, C, h0):
        T, batch, K, dim = dt.shape
        Bp, Cp = _Proj(B, dim), _Proj(C, dim)
        ws = _Workspace(dt, x, A, Bp)
        h = ws.lanes()  # (batch, K, dim, dstate)
        if K > 1:
            # 1. local recurrences of all chunks from a zero state, then 2. the carry across chunks
            ws.inputs(0)
            h.copy_(ws.X)
            for t in range(1, T):
                torch.addcmul(ws.inputs(t), ws.decay(t), h, out=h)
            starts = _carry(h0, h, _chunk_decay(dt, A))[:, :K]  # (batch, K, dim, dstate)
        else:  # one chunk: its state is the block's initial state, nothing to carry
            starts = h0[:, None]
        # 3. the recurrences from the carried states, emitting the outputs
        h.copy_(starts)
        y = dt.new_empty(T, batch, K, dim)
        for t in range(T):
            torch.addcmul(ws.inputs(t), ws.decay(t), h, out=h)
            Cp.dot(h, t, out=y[t])
        ctx.save_for_backward(dt, x, A, B, C, starts)
        return y, h[:, K - 1].clone()  # padding at the block's end leaves the last state unchanged

    @staticmethod
    def backward(ctx, gy, g_last):
        dt, x, A, B, C, starts = ctx.saved_tensors
        T, batch, K, dim = dt.shape
        Bp, Cp = _Proj(B, dim), _Proj(C, dim)
        ws = _Workspace(dt, x, A, Bp)
        states = dt.new_empty(T, batch, K, dim, A.shape[1])  # the forward states, recomputed
        prev = starts
        for t in range(T):
            prev = torch.addcmul(ws.inputs(t), ws.decay(t), prev, out=states[t])

        # Adjoint recurrence lam_t = C_t gy_t + exp(dt_{t+1} A) lam_{t+1}, backwards with the same two
        # levels. `carried` is the adjoint arriving at each chunk's last step from the next chunk.
        Y, lam, la = ws.lanes(), ws.lanes(), ws.lanes()
        if K > 1:
            Cp.outer(gy[T - 1], T - 1, out=lam)
            for t in range(T - 2, -1, -1):
                torch.addcmul(Cp.outer(gy[t], t, out=Y), ws.decay(t + 1), lam, out=lam)
            torch.mul(ws.decay(0), lam, out=la)  # each chunk's local adjoint of its initial state
            carried = _carry_back(g_last, la, _chunk_decay(dt, A))
        else:
            carried = g_last[:, None]

        g_dt, g_x = torch.empty_like(dt), torch.empty_like(x)
        g_B = torch.zeros_like(B) if Bp.invariant else torch.empty_like(B)
        g_C = torch.zeros_like(C) if Cp.invariant else torch.empty_like(C)
        q, q_dt = ws.lanes(), torch.zeros_like(starts)  # q_dt: sum over steps of q_t dt_t, reduced to dA
        la.copy_(carried)  # la = exp(dt_{t+1} A) lam_{t+1}, the part of lam_t from later steps
        for t in range(T - 1, -1, -1):
            torch.add(Cp.outer(gy[t], t, out=Y), la, out=lam)
            torch.mul(lam, ws.decay(t), out=la)
            torch.mul(la, states[t - 1] if t else starts, out=q)  # d loss / d (dt_t A)
            q_dt.addcmul_(q, dt[t][..., None])
            torch.sum(q.mul_(A), dim=-1, out=g_dt[t])
            Bp.dot(lam, t, out=g_x[t])
            Bp.accumulate_grad(g_B, t, lam, x[t])
            Cp.accumulate_grad(g_C, t, states[t], gy[t])
        # after step 0, la[:, c] is the adjoint of the state entering chunk c; chunk 0's is h0's
        return g_dt, g_x, q_dt.sum((0, 1)), g_B, g_C, la[:, 0].clone()


def _chunk_decay(dt: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """exp(A * sum of dt over each chunk): (T, batch, K, dim) -> (batch, K, dim, dstate)."""
    return _exp_decay_(dt.sum(0)[..., None] * A)


def _carry(h0: torch.Tensor, local_ends: torch.Tensor, decay: torch.Tensor) -> torch.Tensor:
    """States entering each chunk, plus the final one: (batch, K + 1, dim, dstate)."""
    states = [h0]
    for c in range(local_ends.shape[1]):
        states.append(torch.addcmul(local_ends[:, c], decay[:, c], states[-1]))
    return torch.stack(states, dim=1)


def _carry_back(g_last: torch.Tensor, local_starts: torch.Tensor, decay: torch.Tensor) -> torch.Tensor:
    """Adjoint arriving at each chunk's last step from the chunks after it: (batch, K, dim, dstate).

    ``local_starts`` is each chunk's local adjoint of its initial state (zero adjoint arriving).
    """
    K = local_starts.shape[1]
    adj = [g_last]
    for c in range(K - 1, 0, -1):
        adj.append(torch.addcmul(local_starts[:, c], decay[:, c], adj[-1]))
    return torch.stack(adj[::-1], dim=1)
