"""Gene-level validation while a gene caller trains: the figures the product is judged by.

The per-base validation loss scores how confident the model is on every base; what users get is
genes, through the decoder. The two can disagree: in session 7 two gene callers validated worse
than the bundled one by loss on the chloroplast, yet called its genes better (coding F1 0.815 and
0.817 against 0.745) and called the held-out B. subtilis better too (benchmarks/RESULTS.md).
:class:`GeneCallValidation` calls the genes of whole annotated genomes with the model being
trained, at the end of every validation, and logs what ``seqmamba annotate-eval`` would report, so
a ``ModelCheckpoint`` can monitor ``val/genes/f1`` instead of ``val/loss``::

    callbacks:
      - class_path: pipelines.genome.validation.GeneCallValidation
        init_args: {genomes: [genomes/athaliana_chloroplast/NC_000932.gb.gz],
                    decoder: {adaptive: true, min_score: 30}}

Logged (means over the genomes, each genome weighing the same, as in the decoder's tuning):
``val/genes/f1`` (harmonic mean of gene-level sensitivity and precision; 0 when nothing matches),
``val/genes/sensitivity``, ``val/genes/precision``, ``val/genes/coding_f1``, and per genome
``val/genes/<first sequence id>/f1``.
"""

from __future__ import annotations

import math
import statistics

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import WeightAveraging

from pipelines.data.paths import resolve_root
from pipelines.genome.annotation import AnnotatedSequence
from pipelines.genome.decoder import DecoderConfig, decoder_for_package
from pipelines.genome.evaluate import Metrics, evaluate
from pipelines.genome.predict import call_genes
from pipelines.genome.windows import read_entry

PREFIX = "val/genes/"


def gene_f1(metrics: Metrics) -> float:
    """Harmonic mean of gene-level sensitivity and precision; 0 when either is 0 or undefined."""
    s, p = metrics.sensitivity, metrics.precision
    return 0.0 if math.isnan(s) or math.isnan(p) or s + p == 0 else 2 * s * p / (s + p)


def genome_metrics(model: torch.nn.Module, genome: list[AnnotatedSequence], decoder: DecoderConfig,
                   batch_windows: int | None = None) -> Metrics:
    """Gene calls of ``model`` on one annotated genome (its own genetic code and topology) against
    the genome's CDS."""
    calls = call_genes(model, genome, genetic_code=genome[0].transl_table, circular=all(s.circular for s in genome),
                       batch_windows=batch_windows, decoder=decoder, keep_coding=False)
    return evaluate(calls.calls, [c for s in genome for c in s.cds], {s.id: len(s) for s in genome})


def gene_call_scores(model: torch.nn.Module, genomes: list[list[AnnotatedSequence]], decoder: DecoderConfig,
                     batch_windows: int | None = None) -> dict[str, float]:
    """The figures :class:`GeneCallValidation` logs, keyed by their metric names."""
    per_genome = [(g[0].id, genome_metrics(model, g, decoder, batch_windows)) for g in genomes]
    scores = {f"{PREFIX}{name}/f1": gene_f1(m) for name, m in per_genome}

    def mean(values) -> float:
        values = [0.0 if math.isnan(v) else v for v in values]  # nothing called: nothing found
        return statistics.fmean(values)

    scores[f"{PREFIX}f1"] = mean(gene_f1(m) for _, m in per_genome)
    for name in ("sensitivity", "precision", "coding_f1"):
        scores[f"{PREFIX}{name}"] = mean(getattr(m, name) for _, m in per_genome)
    return scores


class GeneCallValidation(pl.Callback):
    """Log gene-level figures of whole annotated ``genomes`` (split entries as in the data module:
    a GenBank path or ``"annotation.gtf,genome.fa"``, relative to ``root`` or ``SEQMAMBA_DATA``)
    after every validation; ``decoder`` holds the package decoder settings to call them with (the
    bundled gene caller's are ``{"adaptive": true, "min_score": 30}``)."""

    def __init__(self, genomes: list[str], root: str | None = None, decoder: dict | None = None,
                 batch_windows: int | None = None):
        super().__init__()
        if not genomes:
            raise ValueError("GeneCallValidation needs at least one genome")
        self.entries, self.root, self.batch_windows = list(genomes), root, batch_windows
        self.decoder = decoder_for_package({"decoder": dict(decoder or {})}, source="GeneCallValidation",
                                           field="decoder")
        self.genomes: list[list[AnnotatedSequence]] | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.genomes is None:  # read before training starts: a bad entry fails at once, not after an epoch
            root = resolve_root(self.root)
            self.genomes = [read_entry(entry, root) for entry in self.entries]

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Weight averaging (EMA, SWA) swaps the averaged weights in for validation and back out in its
        # own on_validation_epoch_end, and callbacks run in list order: listed before this callback, it
        # would leave these figures scoring the raw weights while val/loss and the exported checkpoint
        # use the averaged ones.
        mine = next(i for i, c in enumerate(trainer.callbacks) if c is self)
        earlier = [type(c).__name__ for c in trainer.callbacks[:mine] if isinstance(c, WeightAveraging)]
        if earlier:
            raise ValueError(f"GeneCallValidation must come before {earlier[0]} in trainer.callbacks: "
                             "otherwise it scores the raw weights, not the averaged ones that are validated "
                             "and saved")

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self.genomes is None:
            return
        scores = gene_call_scores(pl_module.network, self.genomes, self.decoder, self.batch_windows)
        for name, value in scores.items():
            # Every rank of a multi-GPU run computes the same figures; syncing keeps the monitored
            # metric present (and equal) on all of them.
            pl_module.log(name, value, prog_bar=name == f"{PREFIX}f1", sync_dist=trainer.world_size > 1)
