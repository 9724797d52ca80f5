"""Per-base attribution for DNA classifiers by in-silico mutagenesis (ISM).

Every base is replaced in turn by each of the other three and the model is run on each mutant.
The attribution of the base actually present is the log-probability of the target class with that
base minus the mean over its three substitutes: positive where the base supports the class,
negative where it argues against it, in nats. ISM needs only the model's forward pass (so it works
for every classifier, whatever its embedding) and measures real effects rather than a local
gradient; it costs three forward passes per base, run in batches.

For reverse-complement-aware models the track is averaged with the track of the reverse
complement, mirrored back onto the forward strand (for an exactly RC-invariant model the two agree).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from seqmodels import vocab

_BASES = np.array([vocab.A, vocab.C, vocab.G, vocab.T], dtype=np.int64)
_COMPLEMENT = np.asarray(vocab.COMPLEMENT, dtype=np.int64)


def _log_probs(model: nn.Module, batch: np.ndarray, target: int, device: torch.device) -> np.ndarray:
    tokens = torch.as_tensor(batch, device=device)  # (batch, seqlen)
    lengths = torch.full((batch.shape[0],), batch.shape[1], dtype=torch.long, device=device)
    logits = model(tokens, lengths)  # (batch, n_classes)
    return torch.log_softmax(logits.double(), dim=-1)[:, target].cpu().numpy()


def _one_strand(model: nn.Module, tokens: np.ndarray, target: int, batch_size: int,
                progress: Callable[[int, int], None] | None, done: int, total: int) -> np.ndarray:
    length = tokens.shape[0]
    # (position, substitute) pairs: every base except the one present (all four where it is N).
    pos, alt = np.nonzero(_BASES[None, :] != tokens[:, None])  # (n_mutants,) each
    device = next(model.parameters()).device
    reference = _log_probs(model, tokens[None, :], target, device)[0]
    scores = np.empty(pos.shape[0], dtype=np.float64)
    for start in range(0, pos.shape[0], batch_size):
        stop = min(start + batch_size, pos.shape[0])
        mutants = np.repeat(tokens[None, :], stop - start, axis=0)  # (batch, seqlen)
        mutants[np.arange(stop - start), pos[start:stop]] = _BASES[alt[start:stop]]
        scores[start:stop] = _log_probs(model, mutants, target, device)
        if progress is not None:
            progress(done + stop, total)
    mean_substitute = np.bincount(pos, weights=scores, minlength=length) / np.bincount(pos, minlength=length)
    return reference - mean_substitute  # (seqlen,)


@torch.no_grad()
def ism_attribution(model: nn.Module, tokens: np.ndarray, target: int | None = None, *, rc_average: bool = False,
                    batch_size: int = 128, progress: Callable[[int, int], None] | None = None
                    ) -> tuple[np.ndarray, int]:
    """ISM attribution of each base of one sequence; returns ``(scores (seqlen,) float64, target)``.

    ``model(tokens (B, L) long, lengths (B,) long) -> logits (B, n_classes)`` is a classifier in
    eval mode; ``tokens`` are ``seqmodels.vocab`` ids of one sequence (``pipelines.data`` tokenize).
    ``target`` is the class explained (default: the class predicted for the sequence). With
    ``rc_average`` the result is the mean of this strand's track and the reverse complement's,
    mirrored. ``progress(done, total)`` is called after each batch of mutants.
    """
    tokens = np.asarray(tokens, dtype=np.int64)
    if tokens.ndim != 1 or tokens.shape[0] == 0:
        raise ValueError(f"tokens must be one non-empty sequence of token ids, got shape {tokens.shape}")
    if tokens.min() < vocab.A or tokens.max() > vocab.N:
        raise ValueError("tokens must be base ids (A, C, G, T or N from seqmodels.vocab), without padding or CLS")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    device = next(model.parameters()).device
    logits = model(torch.as_tensor(tokens[None, :], device=device),
                   torch.tensor([tokens.shape[0]], device=device))  # (1, n_classes)
    n_classes = logits.shape[-1]
    if target is None:
        target = int(logits.argmax(-1))
    elif not 0 <= target < n_classes:
        raise ValueError(f"target must be a class index in [0, {n_classes}), got {target}")
    per_strand = 3 * tokens.shape[0] + int((tokens == vocab.N).sum())
    total = per_strand * (2 if rc_average else 1)
    scores = _one_strand(model, tokens, target, batch_size, progress, 0, total)
    if rc_average:
        rc = _COMPLEMENT[tokens[::-1]]
        mirrored = _one_strand(model, rc, target, batch_size, progress, per_strand, total)[::-1]
        scores = (scores + mirrored) / 2
    return scores, target
