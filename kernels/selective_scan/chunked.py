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

import math

import torch
import torch.nn.functional as F

from .._checks import scan_shapes

# Largest (batch * dim * dstate * block_len) work tensor, in elements (64 MiB in fp32). The backward
# holds about three of them; the sequence is processed in blocks no longer than this allows.
BLOCK_ELEMS = 1 << 24
# Chunk length T = CHUNK_SCALE * sqrt(block_len): the loop count 2 * T + block_len / T is smallest at
# sqrt(block_len / 2); measured on a 2-core Xeon (benchmarks/RESULTS.md), a little above is faster
# because the loop over in-chunk offsets runs larger ops than the carry over chunks.
CHUNK_SCALE = 1.0


def selective_scan_chunked(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                           return_last_state=False, *, initial_state=None):
    """Chunked selective scan, same arguments and results as ``selective_scan_ref``.

    out = (y + u * D) * silu(z) with x_t = exp(Δ_t A) x_{t-1} + Δ_t B_t u_t and y_t = C_t · x_t.
    Computes in float32 for float32/bfloat16/float16 inputs (float64 for float64); returns out in
    u's dtype and, with ``return_last_state``, the last state (batch, dim, dstate) in the work dtype.
    """
    return scan_chunked(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state,
                        initial_state=initial_state)


def scan_chunked(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                 return_last_state=False, *, initial_state=None, chunk_len=None, block_len=None):
    """``selective_scan_chunked`` with explicit chunk and block lengths (None: chosen for the shape)."""
    batch, dim, seqlen, dstate, _, _ = scan_shapes(u, delta, A, B, C, D, z, delta_bias, initial_state)
    work = torch.float64 if u.dtype == torch.float64 else torch.float32
    dt = delta.to(work)  # (batch, dim, seqlen)
    if delta_bias is not None:
        dt = dt + delta_bias.to(work)[:, None]
    if delta_softplus:
        dt = F.softplus(dt)
    x = dt * u.to(work)  # (batch, dim, seqlen): the input term is x_t ⊗ B_t
    A_ = A.to(work).contiguous()  # (dim, dstate)
    B_, C_ = _per_group(B, work), _per_group(C, work)
    h = (initial_state.to(work) if initial_state is not None
         else u.new_zeros(batch, dim, dstate, dtype=work))  # (batch, dim, dstate)

    T, block = plan(batch * dim * dstate, seqlen, chunk_len, block_len)
    ys = []
    for start in range(0, seqlen, block):
        stop = min(start + block, seqlen)
        K = -(-(stop - start) // T)  # chunks in this block; the last one padded to T steps
        y_blk, h = _BlockScan.apply(_blocked(dt[..., start:stop], T, K), _blocked(x[..., start:stop], T, K),
                                    A_, _blocked_bc(B_, start, stop, T, K), _blocked_bc(C_, start, stop, T, K), h)
        # (T, batch, K, dim) -> (batch, dim, K * T), padding cut off
        ys.append(y_blk.permute(1, 3, 2, 0).reshape(batch, dim, K * T)[..., : stop - start])
    y = torch.cat(ys, dim=-1) if ys else x.new_zeros(batch, dim, 0)  # (batch, dim, seqlen)

    out = y if D is None else y + u.to(work) * D.to(work)[:, None]
    if z is not None:
        out = out * F.silu(z.to(work).contiguous())  # contiguous: the vectorised silu, whatever the strides
    out = out.to(u.dtype)
    return (out, h) if return_last_state else out


def plan(lanes: int, seqlen: int, chunk_len: int | None = None, block_len: int | None = None) -> tuple[int, int]:
    """(chunk length T, block length) for ``lanes`` = batch * dim * dstate independent recurrences."""
    if block_len is None:
        block_len = max(1, min(seqlen, BLOCK_ELEMS // max(lanes, 1)))
    if chunk_len is None:
        chunk_len = max(1, round(CHUNK_SCALE * math.sqrt(block_len / 2)))
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


def _blocked(v: torch.Tensor, T: int, K: int) -> torch.Tensor:
    """(batch, dim, n) -> (T, batch, K, dim), zero-padded to K * T steps.

    Padded steps have delta = 0 (decay 1) and input 0, so they leave the state unchanged.
    """
    batch, dim, n = v.shape
    v = F.pad(v, (0, K * T - n))
    return v.view(batch, dim, K, T).permute(3, 0, 2, 1).contiguous()


def _blocked_bc(t: torch.Tensor, start: int, stop: int, T: int, K: int) -> torch.Tensor:
    """B or C for one block: (dim, dstate) unchanged, (batch, G, dstate, seqlen) -> (T, batch, K, G, dstate)."""
    if t.dim() == 2:
        return t
    batch, groups, dstate, _ = t.shape
    v = F.pad(t[..., start:stop], (0, K * T - (stop - start)))
    return v.view(batch, groups, dstate, K, T).permute(4, 0, 3, 1, 2).contiguous()


class _Proj:
    """B or C of one block with the three products the scan needs, in either form.

    ``m`` is (dim, dstate) (time-invariant) or (T, batch, K, G, dstate); lane tensors are
    (batch, K, dim, dstate) and per-step vectors (batch, K, dim).
    """

    def __init__(self, m: torch.Tensor, dim: int):
        self.m, self.invariant = m, m.dim() == 2
        self.groups = 1 if self.invariant else m.shape[3]
        self.dg = dim // self.groups

    def outer(self, v: torch.Tensor, t: int) -> torch.Tensor:
        """v_t ⊗ M_t: (batch, K, dim) -> (batch, K, dim, dstate)."""
        if self.invariant:
            return v[..., None] * self.m
        b, K, dim = v.shape
        return (v.view(b, K, self.groups, self.dg, 1) * self.m[t][:, :, :, None]).view(b, K, dim, -1)

    def dot(self, h: torch.Tensor, t: int) -> torch.Tensor:
        """sum_n h[..., n] M_t[n]: (batch, K, dim, dstate) -> (batch, K, dim)."""
        if self.invariant:
            return (h * self.m).sum(-1)
        b, K, dim, n = h.shape
        return torch.matmul(h.view(b, K, self.groups, self.dg, n), self.m[t][..., None]).view(b, K, dim)

    def grad_step(self, h: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Gradient of M_t from ``outer``/``dot`` terms: sum over each group's channels of v ⊗ h.

        Returns (batch, K, G, dstate); for time-invariant M the caller sums it over steps and chunks.
        """
        b, K, dim, n = h.shape
        vg = v.view(b, K, self.groups, 1, self.dg)
        return torch.matmul(vg, h.view(b, K, self.groups, self.dg, n)).view(b, K, self.groups, n)


class _BlockScan(torch.autograd.Function):
    """One block of the two-level scan.

    dt, x: (T, batch, K, dim); A: (dim, dstate); B, C: (dim, dstate) or (T, batch, K, G, dstate);
    h0: (batch, dim, dstate). Returns y (T, batch, K, dim) and the state after the block.
    """

    @staticmethod
    def forward(ctx, dt, x, A, B, C, h0):
        T, batch, K, dim = dt.shape
        Bp, Cp = _Proj(B, dim), _Proj(C, dim)
        decays = [torch.exp(dt[t][..., None] * A) for t in range(T)]  # T x (batch, K, dim, dstate)
        inputs = [Bp.outer(x[t], t) for t in range(T)]  # T x (batch, K, dim, dstate)
        # 1. local recurrences of all chunks from a zero state
        h = inputs[0]
        for t in range(1, T):
            h = torch.addcmul(inputs[t], decays[t], h)
        # 2. carry across chunks with the chunk decays exp(A * sum_t dt_t)
        starts = _carry(h0, h, _chunk_decay(dt, A))  # (batch, K + 1, dim, dstate)
        # 3. rerun from the carried states
        h = starts[:, :K]
        ys = []
        for t in range(T):
            h = torch.addcmul(inputs[t], decays[t], h)
            ys.append(Cp.dot(h, t))
        ctx.save_for_backward(dt, x, A, B, C, starts[:, :K])
        return torch.stack(ys), starts[:, K].contiguous()

    @staticmethod
    def backward(ctx, gy, g_last):
        dt, x, A, B, C, starts = ctx.saved_tensors
        T, batch, K, dim = dt.shape
        Bp, Cp = _Proj(B, dim), _Proj(C, dim)
        decays = [torch.exp(dt[t][..., None] * A) for t in range(T)]
        states = []  # T x (batch, K, dim, dstate): the forward states, recomputed
        h = starts
        for t in range(T):
            h = torch.addcmul(Bp.outer(x[t], t), decays[t], h)
            states.append(h)
        # Adjoint recurrence lam_t = C_t gy_t + exp(dt_{t+1} A) lam_{t+1}, solved backwards with the same
        # two levels: local adjoints of every chunk, a carry across chunks, then the full adjoints.
        y_terms = [Cp.outer(gy[t], t) for t in range(T)]
        lam = y_terms[T - 1]
        for t in range(T - 2, -1, -1):
            lam = torch.addcmul(y_terms[t], decays[t + 1], lam)
        ends = _carry_back(g_last, decays[0] * lam, _chunk_decay(dt, A))  # (batch, K + 1, dim, dstate)
        g_h0 = ends[:, 0]
        lam = ends[:, 1:]  # adjoint arriving at each chunk's last step from the next chunk

        g_dt, g_x = torch.empty_like(dt), torch.empty_like(x)
        g_B = torch.zeros_like(B) if Bp.invariant else torch.empty_like(B)
        g_C = torch.zeros_like(C) if Cp.invariant else torch.empty_like(C)
        q_dt = torch.zeros_like(starts)  # sum over steps of q_t * dt_t, reduced to dA at the end
        for t in range(T - 1, -1, -1):
            lam = y_terms[t] + lam if t == T - 1 else torch.addcmul(y_terms[t], decays[t + 1], lam)
            q = lam * decays[t] * (states[t - 1] if t else starts)  # d loss / d (dt_t A)
            q_dt.addcmul_(q, dt[t][..., None])
            g_dt[t] = (q * A).sum(-1)
            g_x[t] = Bp.dot(lam, t)
            _accumulate(g_B, Bp, t, lam, x[t])
            _accumulate(g_C, Cp, t, states[t], gy[t])
        return g_dt, g_x, q_dt.sum((0, 1)), g_B, g_C, g_h0


def _chunk_decay(dt: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """exp(A * sum of dt over each chunk): (T, batch, K, dim) -> (batch, K, dim, dstate)."""
    return torch.exp(dt.sum(0)[..., None] * A)


def _carry(h0: torch.Tensor, local_ends: torch.Tensor, decay: torch.Tensor) -> torch.Tensor:
    """States entering each chunk, plus the final one: (batch, K + 1, dim, dstate)."""
    states = [h0]
    for c in range(local_ends.shape[1]):
        states.append(torch.addcmul(local_ends[:, c], decay[:, c], states[-1]))
    return torch.stack(states, dim=1)


def _carry_back(g_last: torch.Tensor, local_starts: torch.Tensor, decay: torch.Tensor) -> torch.Tensor:
    """Adjoints of the states entering each chunk (index c) and of the final state (index K).

    ``local_starts`` is exp(dt_0 A) times each chunk's local adjoint at its first step.
    """
    K = local_starts.shape[1]
    adj = [g_last]
    for c in range(K - 1, -1, -1):
        adj.append(torch.addcmul(local_starts[:, c], decay[:, c], adj[-1]))
    return torch.stack(adj[::-1], dim=1)


def _accumulate(grad: torch.Tensor, proj: _Proj, t: int, h: torch.Tensor, v: torch.Tensor) -> None:
    """Add step t's gradient of B or C (terms v_t ⊗ h_t summed over each group's channels)."""
    if proj.invariant:
        grad.add_((h * v[..., None]).sum((0, 1)))  # (dim, dstate)
    else:
        grad[t] = proj.grad_step(h, v)
