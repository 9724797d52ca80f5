"""MambaTagger: a label per base and track, e.g. gene calling with 2 strand tracks x 4 classes."""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
from torch import nn

from .backbone import BackboneConfig
from .classifier import vocabulary_fields
from .dna import DNABackbone, check_tokens
from .heads import config_kwargs
from .masking import lengths_to_mask
from .registry import PackagedModel, register


@dataclasses.dataclass
class TaggerConfig(BackboneConfig):
    n_tracks: int = 2
    n_classes: int = 4
    track_names: tuple[str, ...] | None = None
    class_names: tuple[str, ...] | None = None
    rc_equivariant: bool = False

    def __post_init__(self):
        super().__post_init__()
        if self.n_tracks < 1 or self.n_classes < 1:
            raise ValueError(f"n_tracks and n_classes must be at least 1, got {self.n_tracks}, {self.n_classes}")
        for name, names, n in (("track_names", self.track_names, self.n_tracks),
                               ("class_names", self.class_names, self.n_classes)):
            if names is not None and len(names) != n:
                raise ValueError(f"{name} has {len(names)} names for {n} entries")
        if self.rc_equivariant and self.n_tracks not in (1, 2):
            raise ValueError("rc_equivariant tagging needs n_tracks = 1 (strand-free labels) or 2 "
                             f"(forward and reverse strand), got {self.n_tracks}")


@register
class MambaTagger(PackagedModel):
    """forward(tokens (batch, seqlen), lengths (batch,) | None) -> logits (batch, seqlen, n_tracks, n_classes).

    Logits at padded positions are 0. With ``rc_equivariant`` and 2 tracks (forward strand, reverse
    strand), tagging the reverse complement gives track 0 at position t equal to track 1 of the
    original at the mirrored position (and vice versa): one head reads (this strand, other strand)
    features. With 1 track the head reads their sum, so labels are strand-free.
    """

    task = "tagging"
    config_class = TaggerConfig

    def __init__(self, n_tracks: int = 2, n_classes: int = 4, track_names: tuple[str, ...] | None = None,
                 class_names: tuple[str, ...] | None = None, rc_equivariant: bool = False,
                 d_model: int = 128, n_layer: int = 4, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 bidirectional: bool = False, weight_sharing: Literal["shared", "separate"] = "shared",
                 norm_eps: float = 1e-5, checkpointing: bool = False, dropout: float = 0.0):
        super().__init__()
        self.config = TaggerConfig(
            d_model=d_model, n_layer=n_layer, d_state=d_state, d_conv=d_conv, expand=expand,
            bidirectional=bidirectional, weight_sharing=weight_sharing, norm_eps=norm_eps,
            checkpointing=checkpointing, dropout=dropout, n_tracks=n_tracks, n_classes=n_classes,
            track_names=None if track_names is None else tuple(track_names),
            class_names=None if class_names is None else tuple(class_names), rc_equivariant=rc_equivariant)
        self.backbone = DNABackbone(self.config, rc_equivariant=rc_equivariant)
        if rc_equivariant and n_tracks == 2:
            self.head = nn.Linear(2 * d_model, n_classes)  # (this strand, other strand) -> classes
        elif rc_equivariant:
            self.head = nn.Linear(d_model, n_classes)
        else:
            self.head = nn.Linear(d_model, n_tracks * n_classes)

    @classmethod
    def from_config(cls, config: TaggerConfig) -> MambaTagger:
        return cls(**config_kwargs(config))

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        check_tokens(tokens, lengths)
        batch, seqlen = tokens.shape
        cfg = self.config
        features = self.backbone(tokens, lengths)
        a, b = features.forward, features.reverse  # (batch, seqlen, d_model) each
        if b is None:
            logits = self.head(a).view(batch, seqlen, cfg.n_tracks, cfg.n_classes)
        elif cfg.n_tracks == 2:
            logits = torch.stack([self.head(torch.cat([a, b], -1)), self.head(torch.cat([b, a], -1))], dim=2)
        else:
            logits = self.head(a + b)[:, :, None]  # (batch, seqlen, 1, n_classes)
        mask = lengths_to_mask(lengths, seqlen)
        if mask is not None:
            logits = torch.where(mask[:, :, None, None], logits, torch.zeros((), dtype=logits.dtype,
                                                                             device=logits.device))
        return logits

    def package_fields(self) -> dict:
        cfg = self.config
        return {"class_names": list(cfg.class_names or (str(i) for i in range(cfg.n_classes))),
                "track_names": list(cfg.track_names or (str(i) for i in range(cfg.n_tracks))),
                "vocabulary": vocabulary_fields()}
