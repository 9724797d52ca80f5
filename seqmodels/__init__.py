"""seqmamba models: the Mamba block, DNA and time-series backbones, classifier and forecaster."""

import kernels as _kernels

if not getattr(_kernels, "SEQMAMBA_KERNELS", False):  # another distribution named "kernels" shadows ours
    raise ImportError(
        f"'import kernels' found {getattr(_kernels, '__file__', _kernels)!r}, not seqmamba's kernels package; "
        "uninstall the other 'kernels' distribution or run from the seqmamba source tree"
    )

from . import vocab  # noqa: E402

__all__ = ["vocab"]
