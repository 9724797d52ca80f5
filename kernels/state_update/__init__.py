"""Selective state update (one decoding step): public entry point."""

from __future__ import annotations

from .._dispatch import backend_for
from .reference import selective_state_update_ref


def selective_state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False):
    """state (batch, dim, dstate) updated in place; x, dt, z (batch, dim); A (dim, dstate);
    B, C (batch, dstate) or (batch, ngroups, dstate); D, dt_bias (dim,). Returns y (batch, dim)."""
    backend = backend_for(x)
    if backend == "triton":
        from .triton_update import selective_state_update_triton

        return selective_state_update_triton(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus)
    return selective_state_update_ref(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus)


__all__ = ["selective_state_update", "selective_state_update_ref"]
