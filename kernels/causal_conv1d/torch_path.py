"""PyTorch causal conv1d (placeholder: delegates to the reference until the fast path lands)."""

from .reference import causal_conv1d_ref as causal_conv1d_torch  # noqa: F401
