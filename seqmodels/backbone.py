"""Residual pre-norm stacks of Mamba mixers (causal) or BiMamba mixers (bidirectional).

The residual stream is kept in fp32 and every norm computes in fp32, so bf16 autocast only
touches the projections; A_log and D are fp32 parameters that the block reads with ``.float()``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .bidirectional import BiMamba
from .config import ModelConfig
from .mamba import Mamba


@dataclasses.dataclass
class BackboneConfig(ModelConfig):
    """Size and shape of a Mamba stack (names as in mamba_ssm's MambaConfig)."""

    d_model: int = 128
    n_layer: int = 4
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    bidirectional: bool = False
    # "shared": one Mamba reads both directions; "separate": one Mamba per direction.
    weight_sharing: Literal["shared", "separate"] = "shared"
    norm_eps: float = 1e-5
    checkpointing: bool = False  # activation checkpointing per layer while training
    dropout: float = 0.0  # on each block's output before the residual add, while training

    def __post_init__(self):
        for name in ("d_model", "n_layer", "d_state", "expand"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.n_layer > 1024:  # a hostile config must not make us build millions of layers
            raise ValueError(f"n_layer must be at most 1024, got {self.n_layer}")
        if not 2 <= self.d_conv <= 4:
            raise ValueError(f"d_conv must be 2, 3 or 4, got {self.d_conv}")
        if self.weight_sharing not in ("shared", "separate"):
            raise ValueError(f"weight_sharing must be 'shared' or 'separate', got {self.weight_sharing!r}")
        if not 0 < self.norm_eps < 1:
            raise ValueError(f"norm_eps must be in (0, 1), got {self.norm_eps}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


def residual_dtype(x: torch.Tensor) -> torch.dtype:
    """The residual stream's dtype: fp32 for fp32/bf16/fp16 activations, fp64 for fp64 ones."""
    return torch.promote_types(x.dtype, torch.float32)


class RMSNorm(nn.Module):
    """x / rms(x) * weight, computed and returned in fp32 (fp64 for fp64 inputs), whatever the input dtype."""

    def __init__(self, d_model: int, eps: float = 1e-5, device=None):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model, device=device, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(residual_dtype(x))
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight.to(x.dtype)


class Block(nn.Module):
    """residual + dropout(mixer(norm(residual))); the residual stays fp32. Dropout has no
    parameters, so it changes nothing in the state dict (mamba_ssm names stay as they are)."""

    def __init__(self, mixer: nn.Module, d_model: int, eps: float, dropout: float = 0.0):
        super().__init__()
        self.norm = RMSNorm(d_model, eps)
        self.mixer = mixer
        self.drop = nn.Dropout(dropout)

    def forward(self, residual: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        hidden = self.norm(residual).to(self.mixer_dtype())
        return residual + self.drop(self.mixer(hidden, mask=mask)).to(residual.dtype)

    def forward_chunk(self, residual, state):
        hidden = self.norm(residual).to(self.mixer_dtype())
        out, state = self.mixer.forward_chunk(hidden, state)
        return residual + self.drop(out).to(residual.dtype), state

    def mixer_dtype(self) -> torch.dtype:
        # Under autocast the weights stay fp32 and autocast picks the matmul dtype; for a model cast
        # with .to(bf16) the mixer's input must match its weights.
        for p in self.mixer.parameters():
            return p.dtype
        return torch.float32


class MambaStack(nn.Module):
    """n_layer residual blocks and a final RMSNorm: (batch, seqlen, d_model) -> fp32, same shape."""

    def __init__(self, config: BackboneConfig):
        super().__init__()
        self.config = config
        mixer_kwargs = {"d_state": config.d_state, "d_conv": config.d_conv, "expand": config.expand}
        layers = []
        for i in range(config.n_layer):
            if config.bidirectional:
                mixer = BiMamba(config.d_model, shared=config.weight_sharing == "shared", layer_idx=i,
                                **mixer_kwargs)
            else:
                mixer = Mamba(config.d_model, layer_idx=i, **mixer_kwargs)
            layers.append(Block(mixer, config.d_model, config.norm_eps, config.dropout))
        self.layers = nn.ModuleList(layers)
        self.norm_f = RMSNorm(config.d_model, config.norm_eps)
        # GPT-2 style: shrink each residual branch's output projection by 1/sqrt(depth) so the
        # residual stream's variance does not grow with the number of layers.
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.endswith("out_proj.weight"):
                    p.div_(math.sqrt(config.n_layer))

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """hidden (batch, seqlen, d_model); mask (batch, seqlen) bool, True at real tokens, right-padded."""
        residual = hidden.to(residual_dtype(hidden))
        use_checkpoint = self.config.checkpointing and self.training and torch.is_grad_enabled()
        for layer in self.layers:
            if use_checkpoint:
                residual = checkpoint(layer, residual, mask, use_reentrant=False)
            else:
                residual = layer(residual, mask)
        return self.norm_f(residual)

    def forward_chunk(self, hidden: torch.Tensor, states: list | None = None):
        """Causal stacks only: continue from ``states`` (one (conv_state, ssm_state) per layer, or
        None at the start). Returns (output, new states); chunks fed in order equal one pass."""
        if self.config.bidirectional:
            raise ValueError("forward_chunk needs a causal stack: a bidirectional model reads the whole "
                             "sequence (use seqmodels.bidirectional.windowed_forward instead)")
        if states is not None and len(states) != len(self.layers):
            raise ValueError(f"states must hold one entry per layer ({len(self.layers)}), got {len(states)}")
        residual = hidden.to(residual_dtype(hidden))
        new_states = []
        for i, layer in enumerate(self.layers):
            residual, state = layer.forward_chunk(residual, None if states is None else states[i])
            new_states.append(state)
        return self.norm_f(residual), new_states

    def allocate_inference_cache(self, batch_size: int, max_seqlen: int, dtype=None):
        """One zero (conv_state, ssm_state) per layer, for ``step``."""
        if self.config.bidirectional:
            raise ValueError("recurrent decoding needs a causal stack, not a bidirectional one")
        return [layer.mixer.allocate_inference_cache(batch_size, max_seqlen, dtype) for layer in self.layers]

    def step(self, hidden: torch.Tensor, states: list) -> torch.Tensor:
        """One token (batch, 1, d_model) through every layer; ``states`` are updated in place."""
        residual = hidden.to(residual_dtype(hidden))
        for layer, (conv_state, ssm_state) in zip(self.layers, states):
            out, _, _ = layer.mixer.step(layer.norm(residual).to(layer.mixer_dtype()), conv_state, ssm_state)
            residual = residual + out.to(residual.dtype)
        return self.norm_f(residual)
