"""PyTorch causal depthwise conv1d: the fast path on every device without Triton.

One grouped ``F.conv1d`` over the left-padded input. On CPU this is faster than unrolled shifted
multiply-adds (oneDNN's depthwise kernel reads the input once; see benchmarks/RESULTS.md), and
autograd differentiates it with respect to x, weight, bias and initial_states, including through
the returned final states.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .reference import check_conv_args


def causal_conv1d_torch(x, weight, bias=None, initial_states=None, return_final_states=False,
                        final_states_out=None, activation=None):
    """causal_conv1d_fn on any device: y = act(bias + depthwise causal conv(x, weight)).

    x: (batch, dim, seqlen); weight: (dim, width), width 2-4; bias: (dim,); initial_states:
    (batch, dim, width - 1), the inputs that precede x (zeros when absent). Math runs in float32
    (float64 for float64 inputs); y comes back in x's dtype. With ``return_final_states`` also
    returns the last width - 1 inputs (batch, dim, width - 1), written into ``final_states_out``
    when given.
    """
    batch, dim, width = check_conv_args(x, weight, bias, activation, initial_states,
                                        final_states_out if return_final_states else None)
    work = torch.float64 if x.dtype == torch.float64 else torch.float32
    x_ = x.to(work)  # no copy when x is already in the working dtype
    if initial_states is None:
        xp = F.pad(x_, (width - 1, 0))  # (batch, dim, width - 1 + seqlen)
    else:
        xp = torch.cat([initial_states.to(work), x_], dim=-1)
    y = F.conv1d(xp, weight.to(work).unsqueeze(1), None if bias is None else bias.to(work), groups=dim)
    if activation in ("silu", "swish"):
        y = F.silu(y)
    y = y.to(x.dtype)
    if not return_final_states:
        return y
    # The last width - 1 inputs; they reach into initial_states when seqlen < width - 1.
    final = xp[..., xp.shape[-1] - (width - 1):].to(x.dtype)  # (batch, dim, width - 1)
    if final_states_out is not None:
        final_states_out.copy_(final)
        final = final_states_out
    return y, final
