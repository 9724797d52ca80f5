"""Training the gene caller: the tagging task on the two-strand labels of :mod:`pipelines.genome.labels`,
with more loss weight where genes begin.

Why: a gene caller's probabilities rise over the first ~60 bases of a gene on genomes unlike its
training genomes (M. genitalium: median 0.24 at the start codon, 0.75 at +45), so the decoder calls
nine wrong starts in ten downstream of the true one (benchmarks/RESULTS.md, "Where the bundled gene
caller goes wrong"). The bases around a start are a few per cent of a genome; with the plain mean
loss they weigh that little in training.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipelines.tasks.tagging import TaggingTask


def gene_start_region(labels: torch.Tensor, before: int, after: int) -> torch.Tensor:
    """(B, L, 2) labels (forward, reverse track; 0 non-coding, 1-3 codon position, -100 padding) ->
    (B, L, 2) bool: within ``before`` bases upstream or ``after`` bases downstream of a gene's first
    base, read along each track's own strand (the reverse track runs towards lower coordinates).

    A gene's first base is a codon position 1 right after a non-coding base on its strand; a gene cut
    by the window's edge, or one that follows another gene without a gap, has none in the window."""
    along = torch.stack([labels[..., 0], labels[..., 1].flip(-1)], dim=1)  # (B, 2, L), each 5' -> 3'
    batch, tracks, length = along.shape
    start = torch.zeros_like(along, dtype=torch.bool)
    start[..., 1:] = (along[..., 1:] == 1) & (along[..., :-1] == 0)
    # Position j is in the region of a start i when i - before <= j <= i + after.
    region = F.max_pool1d(F.pad(start.float().reshape(batch * tracks, 1, length), (after, before)),
                          kernel_size=before + after + 1, stride=1).reshape(batch, tracks, length) > 0
    return torch.stack([region[:, 0], region[:, 1].flip(-1)], dim=-1)  # (B, L, 2)


class GeneTaggingTask(TaggingTask):
    """:class:`TaggingTask` whose training loss weighs ``start_weight`` times more on the bases from
    ``start_bases[0]`` upstream to ``start_bases[1]`` downstream of each gene's first base
    (:func:`gene_start_region`). ``start_weight`` 1 is the plain task."""

    def __init__(self, network: nn.Module, start_weight: float = 1.0, start_bases: tuple[int, int] = (30, 60),
                 **kwargs) -> None:
        """``kwargs``: :class:`TaggingTask`'s other settings (tracks, classes, optimiser)."""
        super().__init__(network, **kwargs)
        if not start_weight > 0:
            raise ValueError(f"start_weight must be > 0, got {start_weight}")
        if len(start_bases) != 2 or min(start_bases) < 0:
            raise ValueError(f"start_bases must be two counts of bases (upstream, downstream) >= 0, got {start_bases}")
        if self.n_tracks != 2:
            raise ValueError(f"gene labels have two tracks (forward, reverse), the network has {self.n_tracks}")
        self.start_weight, self.start_bases = float(start_weight), (int(start_bases[0]), int(start_bases[1]))

    def position_weights(self, labels: torch.Tensor) -> torch.Tensor | None:
        if self.start_weight == 1.0:
            return None
        region = gene_start_region(labels, *self.start_bases)
        return 1.0 + (self.start_weight - 1.0) * region.float()
