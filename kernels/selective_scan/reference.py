"""Plain, sequential selective scan: the specification every fast path is tested against.

One Python step per time step, in float32 (float64 when the inputs are float64).
Slow on purpose: it should read like equations (2a)-(2b) of Gu & Dao (2023).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._checks import scan_shapes


def expand_bc(t: torch.Tensor, dim: int, dtype: torch.dtype) -> torch.Tensor:
    """B or C in any accepted form -> (batch or 1, dim, dstate, seqlen or 1), per channel."""
    if t.dim() == 2:  # (dim, dstate), time-invariant
        return t.to(dtype)[None, :, :, None]
    if t.dim() == 3:  # (batch, dstate, seqlen): one group
        return t.to(dtype)[:, None]
    groups = t.shape[1]  # (batch, ngroups, dstate, seqlen): channel d uses group d // (dim // ngroups)
    return t.to(dtype).repeat_interleave(dim // groups, dim=1)


def selective_scan_ref(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                       return_last_state=False, *, initial_state=None):
    """out = (y + u * D) * silu(z), with x_t = exp(Δ_t A) x_{t-1} + Δ_t B_t u_t and y_t = C_t · x_t."""
    batch, dim, seqlen, dstate, _, _ = scan_shapes(u, delta, A, B, C, D, z, delta_bias, initial_state)
    dtype_in = u.dtype
    work = torch.float64 if dtype_in == torch.float64 else torch.float32
    u_, dt = u.to(work), delta.to(work)
    if delta_bias is not None:
        dt = dt + delta_bias.to(work)[:, None]
    if delta_softplus:
        dt = F.softplus(dt)
    A_ = A.to(work)
    B_, C_ = expand_bc(B, dim, work), expand_bc(C, dim, work)
    x = (initial_state.to(work) if initial_state is not None
         else u_.new_zeros(batch, dim, dstate))  # (batch, dim, dstate)
    ys = []
    for t in range(seqlen):
        dA = torch.exp(dt[:, :, t, None] * A_)  # (batch, dim, dstate)
        Bt = B_[..., t if B_.shape[-1] > 1 else 0]
        Ct = C_[..., t if C_.shape[-1] > 1 else 0]
        x = dA * x + dt[:, :, t, None] * Bt * u_[:, :, t, None]
        ys.append((x * Ct).sum(-1))  # (batch, dim)
    y = torch.stack(ys, dim=-1) if ys else u_.new_zeros(batch, dim, 0)
    out = y if D is None else y + u_ * D.to(work)[:, None]
    if z is not None:
        out = out * F.silu(z.to(work))
    out = out.to(dtype_in)
    return (out, x) if return_last_state else out
