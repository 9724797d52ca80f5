"""The tagging data module built from a genome split stated in the config.

``seqmamba fit --data pipelines.genome.datamodule.GenomeDataModule --data.train '[genomes/...]'``:
every setting is plain data (file lists, window, samples), so the run's resolved config records
exactly which genomes (or which blocks of them) trained, validated and tested the model.
"""

from __future__ import annotations

from typing import Literal

from pipelines.data.datamodules import TaggingDataModule
from pipelines.data.paths import resolve_root
from pipelines.genome.windows import SplitConfig, build_datasets


class GenomeDataModule(TaggingDataModule):
    """Windows of annotated genomes -> ``{"tokens" (B, L), "lengths" (B,), "labels" (B, L, 2)}``.

    ``mode``, ``train``, ``val``, ``test`` and ``fractions`` are those of
    :class:`pipelines.genome.windows.SplitConfig` (paths relative to ``root``, the data folder);
    ``window`` bases per sample (10-500 kb for real training), ``samples_per_epoch`` random training
    windows per epoch; validation and test tile their genomes. ``recode``: the probability that a
    training window's genes are rewritten with synonymous codons of a random codon usage
    (:mod:`pipelines.genome.recoding`; 0, the default, trains on the genomes as they are).
    """

    def __init__(
        self,
        train: list[str],
        val: list[str] | None = None,
        test: list[str] | None = None,
        mode: Literal["genome", "region"] = "genome",
        fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
        root: str | None = None,
        window: int = 100_000,
        samples_per_epoch: int = 256,
        batch_size: int = 1,
        num_workers: int = 0,
        seed: int = 0,
        recode: float = 0.0,
    ):
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed)
        self.save_hyperparameters()  # the split itself, as plain lists, goes into checkpoints and logs
        self.split = SplitConfig(
            mode=mode, train=list(train), val=list(val or []), test=list(test or []), fractions=tuple(fractions)
        )
        self.root, self.window, self.samples_per_epoch, self.recode = root, window, samples_per_epoch, recode

    def setup(self, stage: str | None = None) -> None:
        if not self.datasets:  # read and label the genomes once, whatever the stage
            root = resolve_root(self.root)
            self.datasets = build_datasets(self.split, root, self.window, self.samples_per_epoch, self.hparams.seed,
                                           self.recode)
