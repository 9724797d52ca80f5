"""Bidirectional Mamba in the spirit of Caduceus (Schiff et al. 2024), and windowed inference.

A bidirectional mixer reads each row forwards and, reversed within its own length, backwards,
so padding always trails the real tokens and never enters either scan before them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch
from torch import nn

from .mamba import Mamba
from .masking import reverse_by_length


class BiMamba(nn.Module):
    """out = fwd(x) + reverse(rev(reverse(x))), reversal per row by its length.

    ``shared=True`` reads both directions with one Mamba (Caduceus' weight tying), in one batched
    call; ``shared=False`` keeps a second Mamba, ``rev``, for the backward direction.
    """

    def __init__(self, d_model: int, shared: bool = True, layer_idx: int | None = None, **mamba_kwargs):
        super().__init__()
        self.fwd = Mamba(d_model, layer_idx=layer_idx, **mamba_kwargs)
        self.rev = None if shared else Mamba(d_model, layer_idx=layer_idx, **mamba_kwargs)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """hidden (batch, seqlen, d_model); mask (batch, seqlen) bool, right-padded."""
        lengths = None if mask is None else mask.sum(1)
        backward_in = reverse_by_length(hidden, lengths)  # (batch, seqlen, d_model)
        if self.rev is None:
            both_mask = None if mask is None else torch.cat([mask, mask])
            both = self.fwd(torch.cat([hidden, backward_in]), mask=both_mask)  # (2 * batch, seqlen, d_model)
            forward_out, backward_out = both.chunk(2)
        else:
            forward_out = self.fwd(hidden, mask=mask)
            backward_out = self.rev(backward_in, mask=mask)
        return forward_out + reverse_by_length(backward_out, lengths)


@dataclasses.dataclass
class WindowedOutput:
    """``output`` as the model would give on each window's core; ``max_seam_gap`` is the error estimate."""

    output: torch.Tensor
    max_seam_gap: float


def windowed_forward(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], tokens: torch.Tensor,
                     lengths: torch.Tensor | None, window: int, context: int) -> WindowedOutput:
    """Run a bidirectional model on overlapping windows of a sequence too long for one pass.

    ``fn(tokens (batch, w), lengths (batch,)) -> (batch, w, ...)`` is the model. The sequence is cut
    into cores of ``window - 2 * context`` positions; each core is computed with ``context`` extra
    tokens on both sides (or the true sequence end), and only core outputs are kept.

    Error estimate: the output at a position differs from the full-sequence output only through the
    SSM states carried in from beyond its window. Each Mamba layer multiplies a carried state by
    exp(Δ_t A) per token, so that difference shrinks geometrically with ``context``. We measure the
    disagreement of the two windows that compute each seam's first position with different context
    (``max_seam_gap``, in output units); the tests check |windowed - full| <= 2 * max_seam_gap + 1e-5
    on their models, with exact equality when ``window >= seqlen``. This is an empirical estimate,
    not a guarantee: Δ depends on the input, and for some random (untrained) bidirectional taggers a
    one-position gap underestimates the error (``pipelines.genome.predict`` therefore measures the
    gap over most of each overlap). A caller who needs a tolerance checks ``max_seam_gap`` against
    it and raises ``context`` if it is too large. Exact carry across windows exists only for causal
    stacks (``MambaStack.forward_chunk``).
    """
    if context < 0 or window <= 2 * context:
        raise ValueError(f"need window > 2 * context >= 0, got window={window}, context={context}")
    batch, seqlen = tokens.shape[:2]
    if lengths is None:
        lengths = torch.full((batch,), seqlen, dtype=torch.long, device=tokens.device)
    if seqlen <= window:
        return WindowedOutput(fn(tokens, lengths), 0.0)
    core = window - 2 * context
    n_windows = math.ceil(seqlen / core)
    pieces, gap = [], 0.0
    previous_seam = None  # window k's output at the first position of core k + 1
    for k in range(n_windows):
        core_start, core_end = k * core, min(seqlen, (k + 1) * core)
        start, end = max(0, core_start - context), min(seqlen, core_end + context)
        # Rows whose real tokens end before this window still need a valid length; their outputs
        # here are padding positions and get discarded.
        win_lengths = (lengths - start).clamp(min=1, max=end - start)
        out = fn(tokens[:, start:end], win_lengths)  # (batch, end - start, ...)
        pieces.append(out[:, core_start - start:core_end - start])
        if previous_seam is not None:
            real = core_start < lengths  # (batch,)
            if bool(real.any()):
                diff = (previous_seam[real].float() - out[real, core_start - start].float()).detach().abs().max()
                gap = max(gap, float(diff))
        previous_seam = out[:, core_end - start] if core_end < end else None
    return WindowedOutput(torch.cat(pieces, dim=1), gap)
