"""LightningDataModules: DNA classification, per-position tagging and forecasting.

Each takes its data location as a setting (``root``, defaulting to ``../shared/data``), a batch
size, workers and a seed; the same seed gives the same batches and augmentations, whatever the
number of workers. Batch formats are those of docs/ARCHITECTURE.md (see :mod:`.datasets`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from pipelines.data.alphabet import tokenize
from pipelines.data.augment import EpochSampler, LengthGroupedSampler
from pipelines.data.datasets import (
    IGNORE_INDEX,
    ClassificationDataset,
    ForecastWindows,
    collate_classification,
    collate_tagging,
)
from pipelines.data.errors import InputError
from pipelines.data.fasta import DEFAULT_MAX_LENGTH, read_sequences
from pipelines.data.paths import find_split_file, resolve_root
from pipelines.data.splits import PRESETS, SplitSpec, fit_scaler, inverse_transform, plan_splits
from pipelines.data.timeseries import DEFAULT_MAX_FFILL, read_series_csv

log = logging.getLogger(__name__)

_SPLIT_NAMES = {"train": ("train",), "val": ("dev", "val", "valid"), "test": ("test",)}


def _loader(dataset: Dataset, batch_size: int, num_workers: int, collate, *, sampler=None,
            drop_last: bool = False) -> DataLoader:
    # Workers are not persistent: they must be re-created after set_epoch to see the new epoch.
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers, collate_fn=collate,
                      drop_last=drop_last, pin_memory=torch.cuda.is_available())


class DNAClassificationDataModule(L.LightningDataModule):
    """Labelled DNA sequences (FASTA/FASTQ/table, per-class folders) -> ``{"tokens", "lengths", "labels"}``.

    Files come from ``root/dataset/{train,dev,test}.fa.gz`` or explicitly from ``train``, ``val``,
    ``test``, ``predict`` (an explicit file wins). ``classes`` fixes the label order (a model's
    classes); by default the sorted labels of the training file. Training crops sequences longer
    than ``max_len`` at random and reverse-complements half of them (``rc_augment``); evaluation crops
    at the centre. Without a validation file, ``val_fraction`` of the training records (chosen with
    ``seed``) are held out. ``length_bucketing`` batches similar lengths together.
    """

    def __init__(self, dataset: str | None = None, root: str | None = None, train: str | None = None,
                 val: str | None = None, test: str | None = None, predict: str | None = None,
                 classes: list[str] | None = None, max_len: int | None = None, rc_augment: bool = True,
                 length_bucketing: bool = True, val_fraction: float = 0.0, batch_size: int = 64,
                 num_workers: int = 0, seed: int = 0, max_length: int = DEFAULT_MAX_LENGTH):
        super().__init__()
        self.save_hyperparameters()
        self.classes: list[str] | None = list(classes) if classes is not None else None
        self.datasets: dict[str, ClassificationDataset] = {}

    @property
    def n_classes(self) -> int:
        if self.classes is None:
            raise RuntimeError("classes are known after setup() (or pass classes=)")
        return len(self.classes)

    def _file(self, split: str) -> Path | None:
        explicit = getattr(self.hparams, split)
        if explicit is not None:
            return Path(explicit)
        if self.hparams.dataset is None or split == "predict":
            return None
        folder = resolve_root(self.hparams.root) / self.hparams.dataset
        if not folder.is_dir():
            raise InputError(f"no dataset {self.hparams.dataset!r} under the data root", file=str(folder.parent))
        return find_split_file(folder, _SPLIT_NAMES[split])

    def _read(self, path: Path, labelled: bool) -> tuple[list[np.ndarray], list[str | None]]:
        """Token arrays and label names of a file; labels are checked against known classes."""
        classes = self.classes if labelled else None
        tokens, names = [], []
        for record in read_sequences(path, classes=classes, max_length=self.hparams.max_length):
            tokens.append(tokenize(record.seq))
            names.append(record.label)
        log.info("%s: %d sequences, %d bases", path, len(tokens), sum(len(t) for t in tokens))
        return tokens, names

    def _infer_classes(self, names: list[str | None], path: Path) -> None:
        """Classes = the sorted label names of ``path`` (every record must have one)."""
        if None in names:
            raise InputError("some records have no label; give each record 'label=NAME' or pass classes=",
                             file=str(path))
        labels = sorted(set(names))
        if len(labels) < 2:
            raise InputError(f"only one class ({', '.join(labels)}); a classifier needs two or more", file=str(path))
        self.classes = labels
        log.info("classes from %s: %s", path, self.classes)

    def _dataset(self, tokens, labels, train: bool) -> ClassificationDataset:
        hp = self.hparams
        return ClassificationDataset(tokens, labels, max_len=hp.max_len, crop="random" if train else "center",
                                     rc_prob=0.5 if (train and hp.rc_augment) else 0.0, seed=hp.seed)

    def setup(self, stage: str | None = None) -> None:
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("predict",)}
        splits = wanted.get(stage, ("train", "val", "test")) if stage else ("train", "val", "test")
        files = {s: self._file(s) for s in splits}
        required = {"fit": "train", "validate": "val", "test": "test", "predict": "predict"}.get(stage or "")
        if required and files.get(required) is None:
            where = f"dataset {self.hparams.dataset!r}" if self.hparams.dataset else "the settings"
            raise InputError(f"no {required} file in {where}; pass it explicitly (--data.{required} PATH)")
        for split, path in files.items():
            if path is None or split in self.datasets:
                continue
            labelled = split != "predict"
            tokens, names = self._read(path, labelled=labelled)
            if labelled and self.classes is None:  # the first labelled file read (train, if any) names them
                self._infer_classes(names, path)
            index = {c: i for i, c in enumerate(self.classes or [])}
            labels = np.asarray([index.get(n, IGNORE_INDEX) for n in names], dtype=np.int64)
            if split == "train" and files.get("val") is None and self.hparams.val_fraction > 0:
                tokens, labels = self._hold_out(tokens, labels)
            self.datasets[split] = self._dataset(tokens, labels, train=split == "train")

    def _hold_out(self, tokens: list[np.ndarray], labels: np.ndarray):
        order = np.random.default_rng(self.hparams.seed).permutation(len(tokens))
        n_val = max(1, int(round(len(tokens) * self.hparams.val_fraction)))
        val, train = order[:n_val], np.sort(order[n_val:])
        self.datasets["val"] = self._dataset([tokens[i] for i in val], labels[val], train=False)
        log.info("held out %d of %d training records for validation (seed %d)", n_val, len(tokens), self.hparams.seed)
        return [tokens[i] for i in train], labels[train]

    def train_dataloader(self) -> DataLoader:
        hp, data = self.hparams, self.datasets["train"]
        grouped = LengthGroupedSampler(data.lengths(), hp.batch_size, seed=hp.seed) if hp.length_bucketing else None
        sampler = EpochSampler(data, seed=hp.seed, inner=grouped)
        return _loader(data, hp.batch_size, hp.num_workers, collate_classification, sampler=sampler)

    def _eval_loader(self, split: str) -> DataLoader:
        if split not in self.datasets:
            raise InputError(f"no {split} data: pass --data.{split} PATH or a dataset with a {split} split")
        hp = self.hparams
        return _loader(self.datasets[split], hp.batch_size, hp.num_workers, collate_classification)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._eval_loader("predict")


class TaggingDataModule(L.LightningDataModule):
    """Per-position labels from dataset objects yielding ``(tokens (L,), labels (L, n_tracks))``
    (e.g. :class:`~pipelines.data.datasets.TaggingWindows` over genomes) -> ``{"tokens", "lengths",
    "labels" (B, L, n_tracks)}``, padded with PAD and -100."""

    def __init__(self, train: Dataset | None = None, val: Dataset | None = None, test: Dataset | None = None,
                 predict: Dataset | None = None, batch_size: int = 8, num_workers: int = 0, seed: int = 0):
        super().__init__()
        self.save_hyperparameters(ignore=["train", "val", "test", "predict"])
        self.datasets = {k: v for k, v in {"train": train, "val": val, "test": test, "predict": predict}.items()
                         if v is not None}

    def _get(self, split: str) -> Dataset:
        if split not in self.datasets:
            raise InputError(f"no {split} dataset was given to the tagging data module")
        return self.datasets[split]

    def train_dataloader(self) -> DataLoader:
        hp, data = self.hparams, self._get("train")
        sampler = EpochSampler(data, seed=hp.seed)  # also tells the dataset the epoch (random genome windows)
        return _loader(data, hp.batch_size, hp.num_workers, collate_tagging, sampler=sampler)

    def val_dataloader(self) -> DataLoader:
        return _loader(self._get("val"), self.hparams.batch_size, self.hparams.num_workers, collate_tagging)

    def test_dataloader(self) -> DataLoader:
        return _loader(self._get("test"), self.hparams.batch_size, self.hparams.num_workers, collate_tagging)

    def predict_dataloader(self) -> DataLoader:
        return _loader(self._get("predict"), self.hparams.batch_size, self.hparams.num_workers, collate_tagging)


class ForecastDataModule(L.LightningDataModule):
    """A multivariate series cut by the standard protocol -> ``{"x": (B, L, C), "y": (B, H, C)}`` scaled.

    ``dataset`` names a preset (``exchange_rate``, ``ETTh1``: file under ``root`` and split), or
    ``csv`` gives a file (wide or long layout) with ``split`` (``"ratio:0.7,0.1,0.2"``,
    ``"months:12,4,4"``, ``"rows:..."``; default the preset's, else 7:1:2). The scaler is fitted on
    the training rows only; ``mean``, ``scale`` and ``channels`` describe it for export, and
    :meth:`inverse_transform` maps outputs back to data units. ``drop_last_eval`` drops the last
    partial val/test batch, as the published tables do.
    """

    def __init__(self, dataset: str | None = None, csv: str | None = None, root: str | None = None,
                 split: str | None = None, input_len: int = 96, horizon: int = 96, columns: list[str] | None = None,
                 batch_size: int = 32, num_workers: int = 0, seed: int = 0, max_ffill: int = DEFAULT_MAX_FFILL,
                 drop_last_eval: bool = False):
        super().__init__()
        if (dataset is None) == (csv is None):
            raise InputError("give exactly one of dataset (a preset: " + ", ".join(PRESETS) + ") or csv (a file)")
        if dataset is not None and dataset not in PRESETS:
            raise InputError(f"unknown forecasting dataset {dataset!r}; presets: {', '.join(PRESETS)}")
        self.save_hyperparameters()
        self.datasets: dict[str, ForecastWindows] = {}
        self.channels: list[str] = []
        self.mean = self.scale = None

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        hp = self.hparams
        preset = PRESETS.get(hp.dataset)
        path = resolve_root(hp.root) / preset.path if preset else Path(hp.csv)
        spec = SplitSpec.parse(hp.split) if hp.split else (preset.split if preset else SplitSpec())
        frame = read_series_csv(path, columns=hp.columns, max_ffill=hp.max_ffill)
        values = frame.to_numpy(dtype=np.float64)  # (T, C)
        self.sizes, self.segments = plan_splits(len(values), spec, hp.input_len, hp.horizon, frame.attrs["step"])
        scaler = fit_scaler(values, self.sizes[0])
        self.channels, self.mean, self.scale = list(frame.columns), scaler.mean_.copy(), scaler.scale_.copy()
        self.step, self.dates = frame.attrs["step"], frame.index
        scaled = scaler.transform(values)
        self.datasets = {s: ForecastWindows(scaled, seg, hp.input_len, hp.horizon) for s, seg in self.segments.items()}
        log.info("%s: %d rows x %d series, split %s rows, windows %s", path, *values.shape, self.sizes,
                 {s: len(d) for s, d in self.datasets.items()})

    def inverse_transform(self, values):
        """Scaled ``(..., C)`` outputs (numpy or torch) back to data units."""
        if self.mean is None:
            raise RuntimeError("call setup() first")
        if isinstance(values, torch.Tensor):
            as_tensor = lambda a: torch.as_tensor(a, dtype=values.dtype, device=values.device)
            return inverse_transform(values, as_tensor(self.mean), as_tensor(self.scale))
        return inverse_transform(values, self.mean, self.scale)

    def export_config(self) -> dict:
        """What a saved forecaster needs to read new data: channels, scaler, window sizes, step."""
        return {"channels": self.channels, "scaler_mean": self.mean.tolist(), "scaler_scale": self.scale.tolist(),
                "input_len": self.hparams.input_len, "horizon": self.hparams.horizon,
                "step_seconds": self.step.total_seconds()}

    def train_dataloader(self) -> DataLoader:
        hp, data = self.hparams, self.datasets["train"]
        return _loader(data, hp.batch_size, hp.num_workers, None, sampler=EpochSampler(data, seed=hp.seed))

    def _eval(self, split: str) -> DataLoader:
        hp = self.hparams
        return _loader(self.datasets[split], hp.batch_size, hp.num_workers, None, drop_last=hp.drop_last_eval)

    def val_dataloader(self) -> DataLoader:
        return self._eval("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval("test")

    def predict_dataloader(self) -> DataLoader:
        return self._eval("test")

