"""Plain one-step selective state update (decoding): the specification for the fast paths."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._checks import check_float, check_rank, check_same_device, check_shape


def check_state_update_args(state, x, dt, A, B, C, D, z, dt_bias):
    """Validate selective_state_update arguments; return (batch, dim, dstate)."""
    check_rank("state", state, (3,), "(batch, dim, dstate)")
    batch, dim, dstate = state.shape
    check_shape("x", x, (batch, dim), "(batch, dim)")
    check_shape("dt", dt, (batch, dim), "(batch, dim)")
    check_shape("A", A, (dim, dstate), "(dim, dstate)")
    for name, t in (("B", B), ("C", C)):
        check_rank(name, t, (2, 3), "(batch, dstate) or (batch, ngroups, dstate)")
        if t.dim() == 2:
            check_shape(name, t, (batch, dstate), "(batch, dstate)")
        else:
            groups = t.shape[1]
            if groups < 1 or dim % groups:
                raise ValueError(f"{name}: dim={dim} is not divisible by ngroups={groups}")
            check_shape(name, t, (batch, groups, dstate), "(batch, ngroups, dstate)")
    check_shape("D", D, (dim,), "(dim,)")
    check_shape("z", z, (batch, dim), "(batch, dim)")
    check_shape("dt_bias", dt_bias, (dim,), "(dim,)")
    named = {"state": state, "x": x, "dt": dt, "A": A, "B": B, "C": C, "D": D, "z": z, "dt_bias": dt_bias}
    for name, t in named.items():
        check_float(name, t)
    check_same_device(**named)
    return batch, dim, dstate


def _per_channel(t: torch.Tensor, dim: int) -> torch.Tensor:
    """(batch, dstate) or (batch, ngroups, dstate) -> (batch, dim, dstate)."""
    if t.dim() == 2:
        return t[:, None, :]
    return t.repeat_interleave(dim // t.shape[1], dim=1)


def selective_state_update_ref(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False):
    """state <- exp(dt A) state + dt B x (in place); returns (C · state + D x) * silu(z)."""
    batch, dim, dstate = check_state_update_args(state, x, dt, A, B, C, D, z, dt_bias)
    work = torch.float64 if x.dtype == torch.float64 else torch.float32
    dt_ = dt.to(work)
    if dt_bias is not None:
        dt_ = dt_ + dt_bias.to(work)
    if dt_softplus:
        dt_ = F.softplus(dt_)
    Bc, Cc = _per_channel(B.to(work), dim), _per_channel(C.to(work), dim)
    dA = torch.exp(dt_[..., None] * A.to(work))  # (batch, dim, dstate)
    new_state = dA * state.to(work) + (dt_ * x.to(work))[..., None] * Bc
    state.copy_(new_state.to(state.dtype))
    y = (new_state * Cc).sum(-1)
    if D is not None:
        y = y + x.to(work) * D.to(work)
    if z is not None:
        y = y * F.silu(z.to(work))
    return y.to(x.dtype)
