"""Plain causal depthwise conv1d and its one-step update: the specification for the fast paths."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._checks import check_float, check_rank, check_same_device, check_shape

ACTIVATIONS = (None, "silu", "swish")


def check_conv_args(x, weight, bias, activation, initial_states=None, final_states_out=None):
    """Validate causal_conv1d arguments; return (batch, dim, width)."""
    check_rank("x", x, (3,), "(batch, dim, seqlen)")
    batch, dim, _ = x.shape
    check_rank("weight", weight, (2,), "(dim, width)")
    if weight.shape[0] != dim:
        raise ValueError(f"weight must have shape (dim, width) with dim={dim}, got {tuple(weight.shape)}")
    width = weight.shape[1]
    if not 2 <= width <= 4:
        raise ValueError(f"weight: kernel width must be 2, 3 or 4, got {width}")
    check_shape("bias", bias, (dim,), "(dim,)")
    check_shape("initial_states", initial_states, (batch, dim, width - 1), "(batch, dim, width - 1)")
    check_shape("final_states_out", final_states_out, (batch, dim, width - 1), "(batch, dim, width - 1)")
    for name, t in (("x", x), ("weight", weight), ("bias", bias), ("initial_states", initial_states),
                    ("final_states_out", final_states_out)):
        check_float(name, t)
    check_same_device(x=x, weight=weight, bias=bias, initial_states=initial_states,
                      final_states_out=final_states_out)
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be None, 'silu' or 'swish', got {activation!r}")
    return batch, dim, width


def causal_conv1d_ref(x, weight, bias=None, initial_states=None, return_final_states=False,
                      final_states_out=None, activation=None):
    """y[b, d, t] = act(bias[d] + sum_k weight[d, k] * x[b, d, t - (width - 1) + k]), zeros (or
    ``initial_states``) before the start."""
    batch, dim, width = check_conv_args(x, weight, bias, activation, initial_states,
                                        final_states_out if return_final_states else None)
    dtype_in = x.dtype
    work = torch.float64 if dtype_in == torch.float64 else torch.float32
    x_ = x.to(work)
    history = (initial_states.to(work) if initial_states is not None
               else x_.new_zeros(batch, dim, width - 1))
    xp = torch.cat([history, x_], dim=-1)  # (batch, dim, width - 1 + seqlen)
    y = F.conv1d(xp, weight.to(work)[:, None, :], bias.to(work) if bias is not None else None, groups=dim)
    if activation in ("silu", "swish"):
        y = F.silu(y)
    y = y.to(dtype_in)
    if not return_final_states:
        return y
    final = xp[..., xp.shape[-1] - (width - 1):].to(dtype_in)  # (batch, dim, width - 1)
    if final_states_out is not None:
        final_states_out.copy_(final)
        final = final_states_out
    return y, final


def check_update_args(x, conv_state, weight, bias, activation):
    """Validate causal_conv1d_update arguments; return (batch, dim, width)."""
    check_rank("x", x, (2,), "(batch, dim)")
    batch, dim = x.shape
    check_rank("weight", weight, (2,), "(dim, width)")
    if weight.shape[0] != dim:
        raise ValueError(f"weight must have shape (dim, width) with dim={dim}, got {tuple(weight.shape)}")
    width = weight.shape[1]
    if not 2 <= width <= 4:
        raise ValueError(f"weight: kernel width must be 2, 3 or 4, got {width}")
    check_shape("conv_state", conv_state, (batch, dim, width), "(batch, dim, width)")
    check_shape("bias", bias, (dim,), "(dim,)")
    for name, t in (("x", x), ("conv_state", conv_state), ("weight", weight), ("bias", bias)):
        check_float(name, t)
    check_same_device(x=x, conv_state=conv_state, weight=weight, bias=bias)
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be None, 'silu' or 'swish', got {activation!r}")
    return batch, dim, width


def causal_conv1d_update_ref(x, conv_state, weight, bias=None, activation=None):
    """One decoding step: shift ``x`` (batch, dim) into ``conv_state`` (batch, dim, width) in place
    and return the convolution at the new position, (batch, dim)."""
    check_update_args(x, conv_state, weight, bias, activation)
    work = torch.float64 if x.dtype == torch.float64 else torch.float32
    conv_state.copy_(torch.roll(conv_state, shifts=-1, dims=-1))
    conv_state[:, :, -1] = x
    y = (conv_state.to(work) * weight.to(work)).sum(-1)
    if bias is not None:
        y = y + bias.to(work)
    if activation in ("silu", "swish"):
        y = F.silu(y)
    return y.to(x.dtype)
