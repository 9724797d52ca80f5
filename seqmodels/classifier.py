"""MambaClassifier: DNA sequence -> class logits."""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
from torch import nn

from . import vocab
from .backbone import BackboneConfig
from .dna import DNABackbone, check_stem_kernel, check_tokens
from .heads import config_kwargs, mirror_symmetric_mean, pool
from .masking import masked_max
from .registry import PackagedModel, register


@dataclasses.dataclass
class ClassifierConfig(BackboneConfig):
    n_classes: int = 2
    class_names: tuple[str, ...] | None = None
    pooling: Literal["mean", "max", "last", "cls"] = "mean"
    rc_equivariant: bool = False
    stem_kernel: int = 0  # > 0: a convolution this many bases wide before the Mamba stack (dna.ConvStem)

    def __post_init__(self):
        super().__post_init__()
        check_stem_kernel(self.stem_kernel)
        if self.n_classes < 1:
            raise ValueError(f"n_classes must be at least 1, got {self.n_classes}")
        if self.class_names is not None and len(self.class_names) != self.n_classes:
            raise ValueError(f"class_names has {len(self.class_names)} names for n_classes={self.n_classes}")
        if self.pooling not in ("mean", "max", "last", "cls"):
            raise ValueError(f"pooling must be mean, max, last or cls, got {self.pooling!r}")
        if self.rc_equivariant and self.pooling not in ("mean", "max"):
            raise ValueError(f"rc_equivariant needs an order-free pooling (mean or max), got {self.pooling!r}: "
                             "the last or CLS position of a sequence is the first of its reverse complement")


@register
class MambaClassifier(PackagedModel):
    """forward(tokens (batch, seqlen) long, lengths (batch,) long | None) -> logits (batch, n_classes).

    Batches are right-padded; padding never changes the logits. With ``rc_equivariant`` the logits
    of a sequence and of its reverse complement are bit-for-bit identical. 'cls' pooling appends a
    CLS token after each sequence and reads its features.
    """

    task = "classification"
    config_class = ClassifierConfig

    def __init__(self, n_classes: int = 2, class_names: tuple[str, ...] | None = None,
                 pooling: Literal["mean", "max", "last", "cls"] = "mean", rc_equivariant: bool = False,
                 d_model: int = 128, n_layer: int = 4, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 bidirectional: bool = False, weight_sharing: Literal["shared", "separate"] = "shared",
                 norm_eps: float = 1e-5, checkpointing: bool = False, dropout: float = 0.0,
                 stem_kernel: int = 0):
        super().__init__()
        self.config = ClassifierConfig(
            d_model=d_model, n_layer=n_layer, d_state=d_state, d_conv=d_conv, expand=expand,
            bidirectional=bidirectional, weight_sharing=weight_sharing, norm_eps=norm_eps,
            checkpointing=checkpointing, dropout=dropout, n_classes=n_classes,
            class_names=None if class_names is None else tuple(class_names), pooling=pooling,
            rc_equivariant=rc_equivariant, stem_kernel=stem_kernel)
        self.backbone = DNABackbone(self.config, rc_equivariant=rc_equivariant, stem_kernel=stem_kernel)
        self.head = nn.Linear(d_model, n_classes)

    @classmethod
    def from_config(cls, config: ClassifierConfig) -> MambaClassifier:
        return cls(**config_kwargs(config))

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        check_tokens(tokens, lengths)
        if self.config.pooling == "cls":
            tokens, lengths = append_cls(tokens, lengths)
        features = self.backbone(tokens, lengths)
        if features.reverse is None:
            pooled = pool(features.forward, lengths, self.config.pooling)  # (batch, d_model)
        else:
            # Reverse-complementing the input maps (forward, reverse) to their swapped mirror
            # images; their sum is mirrored exactly, and both poolings ignore the order.
            both = features.forward + features.reverse  # (batch, seqlen, d_model)
            if self.config.pooling == "mean":
                pooled = mirror_symmetric_mean(both, lengths)
            else:
                pooled = masked_max(both, None if lengths is None else
                                    torch.arange(both.shape[1], device=both.device) < lengths[:, None])
        return self.head(pooled)

    def package_fields(self) -> dict:
        names = self.config.class_names or tuple(str(i) for i in range(self.config.n_classes))
        return {"class_names": list(names), "vocabulary": vocabulary_fields()}


def append_cls(tokens: torch.Tensor, lengths: torch.Tensor | None):
    """Put a CLS token right after each row's last real token: (batch, seqlen) -> (batch, seqlen + 1)."""
    batch, seqlen = tokens.shape
    if lengths is None:
        lengths = torch.full((batch,), seqlen, dtype=torch.long, device=tokens.device)
    out = torch.cat([tokens, tokens.new_full((batch, 1), vocab.PAD)], dim=1)
    out.scatter_(1, lengths.long()[:, None], vocab.CLS)
    return out, lengths + 1


def vocabulary_fields() -> dict:
    """The vocabulary as recorded in every DNA package's config.json."""
    return {"tokens": list(vocab.TOKENS), "pad_id": vocab.PAD, "cls_id": vocab.CLS,
            "complement": list(vocab.COMPLEMENT)}
