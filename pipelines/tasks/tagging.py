"""Per-position labelling (e.g. coding / codon position on each strand): cross-entropy over every
labelled position (label -100 = ignore: padding, unannotated bases) and per-track metrics."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score, MulticlassMatthewsCorrCoef

from .base import STAGES, SeqTask, _key
from .network_spec import network_config

IGNORE_INDEX = -100


def _track_metrics(n_classes: int, prefix: str) -> MetricCollection:
    kw = {"ignore_index": IGNORE_INDEX}
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(n_classes, average="micro", **kw),
            "mcc": MulticlassMatthewsCorrCoef(n_classes, **kw),
            "f1": MulticlassF1Score(n_classes, average="macro", **kw),
        },
        prefix=prefix,
    )


class TaggingTask(SeqTask):
    """Train/evaluate a network mapping ``(tokens (B, L), lengths)`` to logits ``(B, L, n_tracks, n_classes)``.

    Batches: ``{"tokens", "lengths", "labels" (B, L, n_tracks)}`` with -100 where there is no label.
    Metrics are logged per track as ``{stage}/{track}/mcc`` etc.
    """

    def __init__(
        self,
        network: nn.Module,
        n_tracks: int | None = None,
        n_classes: int | None = None,
        track_names: list[str] | None = None,
        class_weights: list[float] | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.1,
        betas: tuple[float, float] = (0.9, 0.95),
        warmup_ratio: float = 0.05,
        min_lr_ratio: float = 0.01,
    ) -> None:
        super().__init__(network, lr, weight_decay, betas, warmup_ratio, min_lr_ratio)
        cfg = network_config(network)
        self.n_tracks = int(n_tracks if n_tracks is not None else cfg.get("n_tracks", 1))
        self.n_classes = int(n_classes if n_classes is not None else cfg.get("n_classes", 0))
        if self.n_tracks < 1 or self.n_classes < 2:
            raise ValueError(f"need n_tracks >= 1 and n_classes >= 2, got {self.n_tracks} and {self.n_classes}")
        names = list(track_names) if track_names else [f"track{i}" for i in range(self.n_tracks)]
        if len(names) != self.n_tracks:
            raise ValueError(f"track_names has {len(names)} names for {self.n_tracks} tracks")
        self.track_names = names
        if class_weights is not None and len(class_weights) != self.n_classes:
            raise ValueError(f"class_weights needs {self.n_classes} values, got {len(class_weights)}")
        weights = None if class_weights is None else torch.tensor(class_weights, dtype=torch.float32)
        self.register_buffer("class_weights", weights, persistent=False)
        self.stage_metrics = nn.ModuleDict(
            {
                _key(stage): nn.ModuleList([_track_metrics(self.n_classes, f"{stage}/{n}/") for n in names])
                for stage in STAGES
            }
        )

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.network(tokens, lengths)  # (B, L, n_tracks, n_classes)

    def _step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        logits = self(batch["tokens"], batch.get("lengths")).float()  # (B, L, T, K)
        labels = batch["labels"]  # (B, L, T)
        if logits.shape[:3] != labels.shape:
            raise ValueError(f"logits {tuple(logits.shape)} do not match labels {tuple(labels.shape)}")
        n_labelled = (labels != IGNORE_INDEX).sum()
        weights = self.position_weights(labels) if stage == "train" else None  # (B, L, T) or None
        if n_labelled == 0:
            # A window without labels must not produce NaN (cross-entropy's mean over nothing).
            loss = logits.sum() * 0.0
        elif weights is None:
            loss = F.cross_entropy(
                logits.reshape(-1, self.n_classes),
                labels.reshape(-1),
                weight=self.class_weights,
                ignore_index=IGNORE_INDEX,
            )
        else:
            loss = self._weighted_loss(logits, labels, weights)
        batch_size = labels.shape[0]
        self.log(f"{stage}/loss", loss, prog_bar=stage != "test", batch_size=batch_size, sync_dist=stage != "train")
        for t, metrics in enumerate(self.stage_metrics[_key(stage)]):
            metrics.update(logits[:, :, t].reshape(-1, self.n_classes), labels[:, :, t].reshape(-1))
            self.log_dict(metrics, on_step=False, on_epoch=True, batch_size=batch_size)
        return loss

    def position_weights(self, labels: torch.Tensor) -> torch.Tensor | None:
        """Training-loss weight of each labelled position, (B, L, T) from labels (B, L, T); None: all 1.

        Subclasses that know what the labels mean override this (e.g. more weight near gene starts,
        :class:`pipelines.genome.task.GeneTaggingTask`); validation and test losses stay unweighted."""
        return None

    def _weighted_loss(self, logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Cross-entropy with per-position ``weights``: the weighted mean, normalised as torch's
        class-weighted mean is (by the sum of the weights of the labelled positions)."""
        flat = labels.reshape(-1)
        per_position = F.cross_entropy(logits.reshape(-1, self.n_classes), flat, weight=self.class_weights,
                                       ignore_index=IGNORE_INDEX, reduction="none")  # (N,), 0 where ignored
        valid = flat != IGNORE_INDEX
        w = weights.reshape(-1).to(per_position.dtype) * valid
        if self.class_weights is not None:
            w_norm = w * self.class_weights[flat.clamp(min=0)]
        else:
            w_norm = w
        return (per_position * w).sum() / w_norm.sum().clamp(min=torch.finfo(per_position.dtype).tiny)

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        probs = self(batch["tokens"], batch.get("lengths")).float().softmax(-1)  # (B, L, T, K)
        return {"probabilities": probs, "lengths": batch.get("lengths")}
