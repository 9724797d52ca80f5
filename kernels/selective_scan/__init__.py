"""Selective scan: public entry point, dispatching to Triton, the chunked PyTorch path or the reference."""

from __future__ import annotations

from .._dispatch import backend_for
from .reference import selective_scan_ref


def selective_scan_fn(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                      return_last_state=False, *, initial_state=None):
    """mamba_ssm's ``selective_scan_fn``; ``initial_state`` (batch, dim, dstate) is our extension.

    u, delta, z: (batch, dim, seqlen); A: (dim, dstate); B, C: (dim, dstate), (batch, dstate, seqlen)
    or (batch, ngroups, dstate, seqlen); D, delta_bias: (dim,). Returns out (batch, dim, seqlen) in
    u's dtype and, with ``return_last_state``, the final state (batch, dim, dstate) in fp32.
    """
    backend = backend_for(u)
    args = (u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    if backend == "reference":
        return selective_scan_ref(*args, initial_state=initial_state)
    if backend == "torch":
        from .chunked import selective_scan_chunked

        return selective_scan_chunked(*args, initial_state=initial_state)
    from .triton_scan import selective_scan_triton

    return selective_scan_triton(*args, initial_state=initial_state)


__all__ = ["selective_scan_fn", "selective_scan_ref"]
