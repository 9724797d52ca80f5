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


class DNABackbone(nn.Module):
    """tokens (batch, seqlen) long, lengths (batch,) | None -> StrandFeatures."""

    def __init__(self, config: BackboneConfig, rc_equivariant: bool = False):
        super().__init__()
        self.rc_equivariant = rc_equivariant
        self.embedding = nn.Embedding(vocab.VOCAB_SIZE, config.d_model)
        nn.init.normal_(self.embedding.weight, std=0.02)
        self.stack = MambaStack(config)

    def encode(self, tokens: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        """One strand: (batch, seqlen) ids -> (batch, seqlen, d_model) fp32 features."""
        return self.stack(self.embedding(tokens.long()), lengths_to_mask(lengths, tokens.shape[1]))

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor | None = None) -> StrandFeatures:
        check_tokens(tokens, lengths)
        forward = self.encode(tokens, lengths)
        if not self.rc_equivariant:
            return StrandFeatures(forward, None)
        # A separate call, not a batch of both strands: results then cannot depend on batch position.
        other = self.encode(vocab.reverse_complement(tokens, lengths), lengths)
        return StrandFeatures(forward, reverse_by_length(other, lengths))
