"""AdamW with linear warm-up and cosine decay, and the weight-decay split every task uses.

Mamba's recurrence parameters (``A_log``, ``D``), normalisation weights and biases are excluded
from weight decay, as in the Mamba reference training code: decaying ``A_log`` towards zero pushes
every state towards the same slow time scale, and decaying norms or biases only fights the
residual stream's scale.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

# Module types whose weights are scales, not projections.
_NORM_TYPES = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d, nn.InstanceNorm1d, nn.RMSNorm)
_NO_DECAY_NAMES = ("A_log", "D")


def _is_norm(module: nn.Module) -> bool:
    # seqmodels' own RMSNorm is not torch's; any module named *Norm counts.
    return isinstance(module, _NORM_TYPES) or type(module).__name__.lower().endswith("norm")


def split_weight_decay(module: nn.Module, weight_decay: float) -> list[dict]:
    """Parameter groups for AdamW: projections and embeddings decay; ``A_log``, ``D``, norms and
    biases (and any parameter flagged ``_no_weight_decay``, mamba_ssm's convention) do not."""
    decay, no_decay, seen = [], [], set()
    for _, sub in module.named_modules():
        norm = _is_norm(sub)
        for name, param in sub.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:  # tied weights appear once
                continue
            seen.add(id(param))
            exempt = (
                norm
                or name == "bias"
                or name in _NO_DECAY_NAMES
                or getattr(param, "_no_weight_decay", False)
            )
            (no_decay if exempt else decay).append(param)
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def warmup_cosine(warmup_steps: int, total_steps: int | float, min_lr_ratio: float) -> Callable[[int], float]:
    """The learning-rate multiplier at optimiser step ``step``: linear from ~0 to 1 over
    ``warmup_steps``, then a half cosine down to ``min_lr_ratio`` at ``total_steps``.

    With an unbounded run (``total_steps`` infinite) the rate stays at 1 after warm-up.
    """
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio}")

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps  # never exactly 0: the first step already learns
        if not math.isfinite(total_steps) or total_steps <= warmup_steps:
            return 1.0 if not math.isfinite(total_steps) else min_lr_ratio
        progress = min(1.0, (step - warmup_steps) / (total_steps - warmup_steps))
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def adamw_warmup_cosine(
    module: nn.Module,
    *,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float],
    warmup_ratio: float,
    min_lr_ratio: float,
    total_steps: int | float,
) -> dict:
    """Lightning's ``configure_optimizers`` return value: AdamW over :func:`split_weight_decay`'s
    groups and a per-step LambdaLR following :func:`warmup_cosine`."""
    if lr <= 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if not 0.0 <= warmup_ratio < 1.0:
        raise ValueError(f"warmup_ratio must be in [0, 1), got {warmup_ratio}")
    warmup_steps = int(warmup_ratio * total_steps) if math.isfinite(total_steps) else 0
    optimizer = torch.optim.AdamW(split_weight_decay(module, weight_decay), lr=lr, betas=tuple(betas))
    # A plain function (not a callable object) keeps the scheduler's state_dict free of objects:
    # LambdaLR stores only the step count, and the schedule is rebuilt from the config on resume.
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(warmup_steps, total_steps, min_lr_ratio))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1}}
