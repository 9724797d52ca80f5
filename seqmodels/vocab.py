"""The DNA vocabulary shared by the models and the readers.

Token ids are part of every saved DNA model (config.json records them): never reorder.
"""

from __future__ import annotations

import numpy as np
import torch

PAD, CLS, A, C, G, T, N = range(7)
TOKENS = ("<pad>", "<cls>", "A", "C", "G", "T", "N")
VOCAB_SIZE = len(TOKENS)
BASES = "ACGTN"

# Complement of every token id; padding and CLS map to themselves, N to N.
COMPLEMENT = (PAD, CLS, T, G, C, A, N)

# Byte -> token id for upper-case A/C/G/T/N; every other byte maps to -1 (the readers decide what to do).
_LOOKUP = np.full(256, -1, dtype=np.int8)
for _base, _tok in zip("ACGTN", (A, C, G, T, N)):
    _LOOKUP[ord(_base)] = _tok
_DECODE = np.frombuffer("".join(t if len(t) == 1 else "?" for t in TOKENS).encode(), dtype=np.uint8)


def encode(seq: str | bytes) -> np.ndarray:
    """Upper-case A/C/G/T/N text -> int8 token ids (other characters become -1)."""
    raw = seq.encode("ascii") if isinstance(seq, str) else seq
    return _LOOKUP[np.frombuffer(raw, dtype=np.uint8)]


def decode(tokens) -> str:
    """Token ids -> text (padding and CLS shown as '?')."""
    arr = np.asarray(tokens.cpu() if isinstance(tokens, torch.Tensor) else tokens, dtype=np.int64)
    return _DECODE[arr].tobytes().decode("ascii")


def complement(tokens: torch.Tensor) -> torch.Tensor:
    """Complement each token id (no reversal)."""
    table = torch.tensor(COMPLEMENT, dtype=tokens.dtype, device=tokens.device)
    return table[tokens]


def reverse_complement(tokens: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
    """Reverse-complement (batch, seqlen) token ids; with ``lengths`` each row is reversed within its
    own length, so padding stays at the end."""
    comp = complement(tokens)
    if lengths is None:
        return comp.flip(-1)
    seqlen = tokens.shape[-1]
    pos = torch.arange(seqlen, device=tokens.device)
    src = lengths[:, None] - 1 - pos[None, :]  # (batch, seqlen)
    valid = src >= 0
    gathered = comp.gather(-1, src.clamp(min=0))
    return torch.where(valid, gathered, tokens)
