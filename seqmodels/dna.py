"""DNA backbone: token embedding + Mamba stack, with an optional reverse-complement-equivariant mode.

RC equivariance by parameter sharing (Caduceus' RCPS, written out): the one backbone reads the
sequence and its reverse complement, and the second result is mirrored back onto the forward
strand's positions. Reverse-complementing the input then exactly swaps and mirrors the two
feature tracks, bit for bit (the same computations on the same numbers), which lets heads be
exactly RC-invariant (classifier) or strand-equivariant (tagger).
"""

from __future__ import annotations

import typing

import torch
import torch.nn.functional as F
from torch import nn

from . import vocab
from .backbone import BackboneConfig, MambaStack
from .masking import check_lengths, lengths_to_mask, reverse_by_length


class StrandFeatures(typing.NamedTuple):
    """forward: (batch, seqlen, d_model) features of the given strand. reverse: features of the
    reverse-complement strand, mirrored so reverse[:, t] describes the same base pair as
    forward[:, t]; None unless the backbone is RC-equivariant."""

    forward: torch.Tensor
    reverse: torch.Tensor | None


def check_tokens(tokens: torch.Tensor, lengths: torch.Tensor | None) -> None:
    """Raise ``ValueError`` unless tokens is a (batch, seqlen) integer tensor of vocabulary ids."""
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2:
        raise ValueError(f"tokens must be a (batch, seqlen) tensor of token ids, got "
                         f"{tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__}")
    if tokens.dtype.is_floating_point or tokens.dtype == torch.bool:
        raise ValueError(f"tokens must hold integer token ids, got dtype {tokens.dtype}")
    if tokens.shape[1] == 0:
        raise ValueError("tokens: sequences must hold at least one token")
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= vocab.VOCAB_SIZE):
        raise ValueError(f"tokens must be ids in [0, {vocab.VOCAB_SIZE}) (seqmodels.vocab), got "
                         f"min {int(tokens.min())}, max {int(tokens.max())}")
    check_lengths(lengths, tokens.shape[0], tokens.shape[1])


def check_stem_kernel(stem_kernel: int) -> None:
    if stem_kernel != 0 and (stem_kernel < 3 or stem_kernel % 2 == 0 or stem_kernel > 31):
        raise ValueError(f"stem_kernel must be 0 (no stem) or an odd width from 3 to 31, got {stem_kernel}")


class ConvStem(nn.Module):
    """embeddings + GELU(conv(embeddings)): motif detectors ``kernel_size`` bases wide, mixing all
    channels, in front of the Mamba stack (whose own short depthwise conv does not mix channels).

    Centred on each base for a bidirectional backbone; causal (left context only) otherwise, so a
    causal model stays causal. Padded positions are zeroed first: padding never reaches a real base.
    Applied to each strand alike, so the RC-equivariant backbone stays exactly equivariant.
    """

    def __init__(self, d_model: int, kernel_size: int, centred: bool):
        super().__init__()
        check_stem_kernel(kernel_size)
        self.pad = (kernel_size // 2, kernel_size // 2) if centred else (kernel_size - 1, 0)
        self.conv = nn.Conv1d(d_model, d_model, kernel_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x (batch, seqlen, d_model); mask (batch, seqlen) bool, True at real tokens, or None."""
        if mask is not None:
            x = x * mask[..., None].to(x.dtype)
        y = self.conv(F.pad(x.transpose(1, 2), self.pad)).transpose(1, 2)
        return x + F.gelu(y).to(x.dtype)


class DNABackbone(nn.Module):
    """tokens (batch, seqlen) long, lengths (batch,) | None -> StrandFeatures.

    ``stem_kernel`` > 0 puts a :class:`ConvStem` of that width between the embedding and the stack.
    """

    def __init__(self, config: BackboneConfig, rc_equivariant: bool = False, stem_kernel: int = 0):
        super().__init__()
        self.rc_equivariant = rc_equivariant
        self.embedding = nn.Embedding(vocab.VOCAB_SIZE, config.d_model)
        nn.init.normal_(self.embedding.weight, std=0.02)
        self.stem = ConvStem(config.d_model, stem_kernel, centred=config.bidirectional) if stem_kernel else None
        self.stack = MambaStack(config)

    def encode(self, tokens: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        """One strand: (batch, seqlen) ids -> (batch, seqlen, d_model) fp32 features."""
        mask = lengths_to_mask(lengths, tokens.shape[1])
        hidden = self.embedding(tokens.long())
        if self.stem is not None:
            hidden = self.stem(hidden, mask)
        return self.stack(hidden, mask)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor | None = None) -> StrandFeatures:
        check_tokens(tokens, lengths)
        forward = self.encode(tokens, lengths)
        if not self.rc_equivariant:
            return StrandFeatures(forward, None)
        # A separate call, not a batch of both strands: results then cannot depend on batch position.
        other = self.encode(vocab.reverse_complement(tokens, lengths), lengths)
        return StrandFeatures(forward, reverse_by_length(other, lengths))
