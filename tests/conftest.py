import os

import pytest
import torch

# Triton kernels run through the interpreter on CPU-only machines.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

SHARED_DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")


@pytest.fixture
def shared_data():
    """Path of the full benchmark data beside the repository; skips when it is absent."""
    root = os.path.abspath(os.environ.get("SEQMAMBA_DATA", SHARED_DATA))
    if not os.path.isdir(root):
        pytest.skip(f"shared data not found at {root}")
    return root


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
