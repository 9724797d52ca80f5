"""PyTorch causal depthwise conv1d: the fast path on every device without Triton.

One grouped convolution, which autograd differentiates with respect to x, weight, bias and
initial_states, including through the returned final states. On CPU this is faster than unrolled
shifted multiply-adds (oneDNN's depthwise kernel reads the input once; see benchmarks/RESULTS.md).

Inference on channel-last x, a (batch, dim, seqlen) view of (batch, seqlen, dim) storage (what the
Mamba block hands over: a slice of ``in_proj``'s output), runs as a 2-D convolution on a (batch, dim,
1, seqlen) channels-last view and returns y channel-last too. Padding a transposed view into (batch,
dim, seqlen) storage copies it along the long stride, and everything after the conv reads
channel-last in place: the forward is 2.5-8x faster (benchmarks/NOTES.md C9). oneDNN's backward of
that convolution is 1.1-2x slower than the grouped ``F.conv1d``'s, so whenever a gradient is needed,
and for other layouts, the conv is ``F.conv1d``.
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
    w = weight.to(work)
    b = None if bias is None else bias.to(work)
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad
                                                 for t in (x, weight, bias, initial_states))
    if _channel_last(x_) and not needs_grad:
        y, xp = _conv_channel_last(x_, w, b, initial_states, return_final_states)
    else:
        if initial_states is None:
            xp = F.pad(x_, (width - 1, 0))  # (batch, dim, width - 1 + seqlen)
        else:
            xp = torch.cat([initial_states.to(work), x_], dim=-1)
        y = F.conv1d(xp, w.unsqueeze(1), b, groups=dim)
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


def _channel_last(x: torch.Tensor) -> bool:
    """(batch, dim, seqlen) x stored with dim innermost (a transposed (batch, seqlen, dim) tensor)."""
    return x.stride(1) == 1 and x.shape[1] > 1 and x.stride(2) != 1


def _conv_channel_last(x, weight, bias, initial_states, need_history):
    """The causal depthwise conv of channel-last x (batch, dim, seqlen): (y, xp), y (batch, dim,
    seqlen) channel-last, before the activation; xp the inputs with their history in front (batch,
    dim, width - 1 + seqlen), also channel-last, or None when neither given nor needed."""
    dim, width = weight.shape
    seqlen = x.shape[-1]
    kernel = weight[:, None, None, :]  # (dim, 1, 1, width): one filter per channel
    if initial_states is None and not need_history:
        # Zero history: pad both ends inside the conv and keep the first seqlen outputs.
        y = F.conv2d(x.unsqueeze(2), kernel, bias, padding=(0, width - 1), groups=dim)[..., :seqlen]
        return y.squeeze(2), None
    if initial_states is None:
        history = x.new_zeros(x.shape[0], width - 1, dim)  # (batch, width - 1, dim)
    else:
        history = initial_states.to(x.dtype).transpose(1, 2)
    xp = torch.cat([history, x.transpose(1, 2)], dim=1).transpose(1, 2)  # (batch, dim, width - 1 + seqlen)
    y = F.conv2d(xp.unsqueeze(2), kernel, bias, groups=dim)
    return y.squeeze(2), xp
