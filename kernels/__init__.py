"""seqmamba kernels: mamba_ssm-compatible selective scan, causal conv1d and state update.

Triton kernels on CUDA tensors, a chunked PyTorch path elsewhere, plain references for tests.
Triton is imported only when a Triton kernel runs, so this package imports without it.
"""

from ._dispatch import backend_for, triton_available
from .causal_conv1d import causal_conv1d_fn, causal_conv1d_ref, causal_conv1d_update, causal_conv1d_update_ref
from .selective_scan import selective_scan_fn, selective_scan_ref
from .state_update import selective_state_update, selective_state_update_ref

# Marks this package as seqmamba's, so importers can tell it from other distributions named "kernels".
SEQMAMBA_KERNELS = True

__all__ = [
    "backend_for",
    "triton_available",
    "selective_scan_fn",
    "selective_scan_ref",
    "causal_conv1d_fn",
    "causal_conv1d_ref",
    "causal_conv1d_update",
    "causal_conv1d_update_ref",
    "selective_state_update",
    "selective_state_update_ref",
]
