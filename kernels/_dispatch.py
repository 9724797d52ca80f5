"""The one place that decides which implementation runs.

CUDA tensors go to the Triton kernels, everything else to the PyTorch path.
``SEQMAMBA_BACKEND=triton|torch|reference`` overrides the choice; with
``TRITON_INTERPRET=1`` that is how the Triton kernels run on CPU tensors.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import torch

BACKENDS = ("triton", "torch", "reference")


@functools.lru_cache(maxsize=1)
def triton_available() -> bool:
    """True when the ``triton`` package can be imported (never imports it)."""
    try:
        return importlib.util.find_spec("triton") is not None
    except (ImportError, ValueError):  # an import hook refusing triton, or a broken install
        return False


def backend_for(tensor: torch.Tensor) -> str:
    """Name of the backend that runs an operator on ``tensor``."""
    forced = os.environ.get("SEQMAMBA_BACKEND", "").strip().lower()
    if forced:
        if forced not in BACKENDS:
            raise ValueError(f"SEQMAMBA_BACKEND={forced!r}: expected one of {', '.join(BACKENDS)}")
        if forced == "triton" and not triton_available():
            raise RuntimeError("SEQMAMBA_BACKEND=triton but the triton package is not installed")
        if forced == "triton" and not tensor.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
            raise RuntimeError(
                "SEQMAMBA_BACKEND=triton on CPU tensors needs TRITON_INTERPRET=1 (Triton's interpreter)"
            )
        return forced
    if tensor.is_cuda and triton_available():
        return "triton"
    return "torch"
