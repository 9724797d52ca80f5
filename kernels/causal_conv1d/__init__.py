"""Causal depthwise conv1d: public entry points with causal_conv1d's signatures."""

from __future__ import annotations

from .._dispatch import backend_for
from .reference import causal_conv1d_ref, causal_conv1d_update_ref


def causal_conv1d_fn(x, weight, bias=None, seq_idx=None, initial_states=None, return_final_states=False,
                     final_states_out=None, activation=None):
    """x: (batch, dim, seqlen); weight: (dim, width), width 2-4; bias: (dim,);
    initial_states: (batch, dim, width - 1). Returns y (batch, dim, seqlen) and, with
    ``return_final_states``, the last width - 1 inputs (batch, dim, width - 1)."""
    if seq_idx is not None:
        raise NotImplementedError("causal_conv1d_fn: seq_idx (packed variable-length batches) is not supported")
    backend = backend_for(x)
    args = (x, weight, bias, initial_states, return_final_states, final_states_out, activation)
    if backend == "reference":
        return causal_conv1d_ref(*args)
    if backend == "torch":
        from .torch_path import causal_conv1d_torch

        return causal_conv1d_torch(*args)
    from .triton_conv import causal_conv1d_triton

    return causal_conv1d_triton(*args)


def causal_conv1d_update(x, conv_state, weight, bias=None, activation=None):
    """One decoding step: x (batch, dim); conv_state (batch, dim, width) updated in place."""
    backend = backend_for(x)
    if backend == "triton":
        from .triton_conv import causal_conv1d_update_triton

        return causal_conv1d_update_triton(x, conv_state, weight, bias, activation)
    return causal_conv1d_update_ref(x, conv_state, weight, bias, activation)


__all__ = ["causal_conv1d_fn", "causal_conv1d_update", "causal_conv1d_ref", "causal_conv1d_update_ref"]
