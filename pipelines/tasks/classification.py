"""Sequence classification: cross-entropy with optional class weights; accuracy, MCC, macro F1
and macro AUROC per stage (GUE reports MCC)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassF1Score,
    MulticlassMatthewsCorrCoef,
)

from .base import STAGES, SeqTask, _key
from .network_spec import network_config


def _n_classes(network: nn.Module, n_classes: int | None) -> int:
    if n_classes is None:
        n_classes = network_config(network).get("n_classes")
    if not isinstance(n_classes, int) or n_classes < 2:
        raise ValueError(f"n_classes must be an int >= 2 (from the network config or the task), got {n_classes!r}")
    return n_classes


def classification_metrics(n_classes: int, prefix: str) -> MetricCollection:
    """The metrics reported for every classifier, named ``{prefix}acc`` etc."""
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(n_classes, average="micro"),
            "mcc": MulticlassMatthewsCorrCoef(n_classes),
            "f1": MulticlassF1Score(n_classes, average="macro"),
            "auroc": MulticlassAUROC(n_classes, average="macro"),
        },
        prefix=prefix,
    )


class ClassificationTask(SeqTask):
    """Train/evaluate a network mapping ``(tokens (B, L), lengths (B,))`` to logits ``(B, n_classes)``.

    Batches: ``{"tokens", "lengths", "labels" (B,)}``. ``class_weights`` (one per class) weight
    the cross-entropy, e.g. for imbalanced sets.
    """

    def __init__(
        self,
        network: nn.Module,
        n_classes: int | None = None,
        class_weights: list[float] | None = None,
        label_smoothing: float = 0.0,
        lr: float = 1e-3,
        weight_decay: float = 0.1,
        betas: tuple[float, float] = (0.9, 0.95),
        warmup_ratio: float = 0.05,
        min_lr_ratio: float = 0.01,
    ) -> None:
        super().__init__(network, lr, weight_decay, betas, warmup_ratio, min_lr_ratio)
        self.n_classes = _n_classes(network, n_classes)
        if class_weights is not None:
            if len(class_weights) != self.n_classes or any(w < 0 for w in class_weights):
                raise ValueError(
                    f"class_weights needs {self.n_classes} non-negative values, got {list(class_weights)}"
                )
            self.register_buffer("class_weights", torch.tensor(class_weights, dtype=torch.float32), persistent=False)
        else:
            self.class_weights = None
        self.stage_metrics = nn.ModuleDict(
            {_key(stage): classification_metrics(self.n_classes, f"{stage}/") for stage in STAGES}
        )

    def setup(self, stage: str) -> None:
        super().setup(stage)
        names = self.preprocessing.get("class_names")
        if names is not None and len(names) != self.n_classes:
            raise ValueError(
                f"the data has {len(names)} classes ({', '.join(map(str, names))}) but the network has "
                f"n_classes={self.n_classes}; set --model.init_args.network.init_args.n_classes {len(names)}"
            )

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.network(tokens, lengths)  # (B, n_classes)

    def _step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        logits = self(batch["tokens"], batch.get("lengths")).float()  # (B, n_classes); metrics in fp32
        labels = batch["labels"]
        loss = F.cross_entropy(
            logits, labels, weight=self.class_weights, label_smoothing=self.hparams.label_smoothing
        )
        metrics = self.stage_metrics[_key(stage)]
        metrics.update(logits.softmax(-1), labels)
        batch_size = labels.shape[0]
        self.log(f"{stage}/loss", loss, prog_bar=stage != "test", batch_size=batch_size, sync_dist=stage != "train")
        # Logging the collection object lets Lightning compute it once per epoch across devices.
        self.log_dict(metrics, on_step=False, on_epoch=True, batch_size=batch_size, prog_bar=False)
        return loss

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        probs = self(batch["tokens"], batch.get("lengths")).float().softmax(-1)  # (B, n_classes)
        return {"probabilities": probs, "predicted": probs.argmax(-1)}
