"""One place chooses the implementation: CUDA tensors -> Triton, anything else -> the PyTorch path;
``SEQMAMBA_BACKEND=triton|torch|reference`` overrides, with clear errors for what cannot run."""

from __future__ import annotations

import types

import pytest
import torch

import kernels
from kernels import _dispatch, backend_for

CPU = torch.zeros(1)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    monkeypatch.delenv("SEQMAMBA_BACKEND", raising=False)


def cuda_like():
    """Stands in for a CUDA tensor on a machine without one: dispatch reads only ``is_cuda``."""
    return types.SimpleNamespace(is_cuda=True)


def test_cpu_tensors_take_the_torch_path():
    assert backend_for(CPU) == "torch"


def test_cuda_tensors_take_triton_when_it_is_installed(monkeypatch):
    monkeypatch.setattr(_dispatch, "triton_available", lambda: True)
    assert backend_for(cuda_like()) == "triton"


def test_cuda_tensors_fall_back_to_torch_without_triton(monkeypatch):
    monkeypatch.setattr(_dispatch, "triton_available", lambda: False)
    assert backend_for(cuda_like()) == "torch"


@pytest.mark.gpu
def test_real_cuda_tensor_takes_triton():
    pytest.importorskip("triton")
    assert backend_for(torch.zeros(1, device="cuda")) == "triton"


@pytest.mark.parametrize("value,expected", [("torch", "torch"), ("reference", "reference"),
                                            (" Reference ", "reference"), ("TORCH", "torch")])
def test_environment_overrides_the_choice(monkeypatch, value, expected):
    monkeypatch.setenv("SEQMAMBA_BACKEND", value)
    assert backend_for(CPU) == expected
    monkeypatch.setattr(_dispatch, "triton_available", lambda: True)
    assert backend_for(cuda_like()) == expected


def test_empty_override_means_automatic(monkeypatch):
    monkeypatch.setenv("SEQMAMBA_BACKEND", "")
    assert backend_for(CPU) == "torch"


def test_unknown_backend_is_an_error_naming_the_variable_and_the_choices(monkeypatch):
    monkeypatch.setenv("SEQMAMBA_BACKEND", "cuda")
    with pytest.raises(ValueError, match=r"SEQMAMBA_BACKEND='cuda'.*triton, torch, reference"):
        backend_for(CPU)


def test_triton_on_cpu_needs_the_interpreter(monkeypatch):
    monkeypatch.setattr(_dispatch, "triton_available", lambda: True)
    monkeypatch.setenv("SEQMAMBA_BACKEND", "triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert backend_for(CPU) == "triton"
    monkeypatch.delenv("TRITON_INTERPRET")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        backend_for(CPU)
    assert backend_for(cuda_like()) == "triton"  # real GPUs need no interpreter


def test_forcing_triton_without_triton_installed_is_an_error(monkeypatch):
    monkeypatch.setattr(_dispatch, "triton_available", lambda: False)
    monkeypatch.setenv("SEQMAMBA_BACKEND", "triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with pytest.raises(RuntimeError, match="triton package is not installed"):
        backend_for(CPU)


def test_triton_available_does_not_import_triton():
    import sys

    had = "triton" in sys.modules
    _dispatch.triton_available()
    assert ("triton" in sys.modules) == had


# Each public operator routes to the implementation the dispatch names. Spies replace the
# implementations at the names the operators look up, so the test sees which one ran.
def scan_args():
    g = torch.Generator().manual_seed(0)
    u, delta = torch.randn(1, 4, 6, generator=g), torch.rand(1, 4, 6, generator=g)
    A, B, C = -torch.rand(4, 3, generator=g), torch.randn(1, 3, 6, generator=g), torch.randn(1, 3, 6, generator=g)
    return u, delta, A, B, C


def spy(monkeypatch, target, name, calls):
    real = getattr(target, name)

    def wrapper(*args, **kwargs):
        calls.append(name)
        return real(*args, **kwargs)

    monkeypatch.setattr(target, name, wrapper)


@pytest.mark.parametrize("backend,expected", [(None, "selective_scan_chunked"), ("torch", "selective_scan_chunked"),
                                              ("reference", "selective_scan_ref")])
def test_selective_scan_routes_to_the_chosen_backend(monkeypatch, backend, expected):
    from kernels import selective_scan as pkg
    from kernels.selective_scan import chunked

    calls = []
    spy(monkeypatch, chunked, "selective_scan_chunked", calls)
    spy(monkeypatch, pkg, "selective_scan_ref", calls)
    if backend:
        monkeypatch.setenv("SEQMAMBA_BACKEND", backend)
    out = kernels.selective_scan_fn(*scan_args())
    assert calls == [expected]
    torch.testing.assert_close(out, kernels.selective_scan_ref(*scan_args()))


def test_selective_scan_routes_to_triton_when_forced(monkeypatch):
    pytest.importorskip("triton")
    triton_scan = pytest.importorskip("kernels.selective_scan.triton_scan")
    calls = []
    monkeypatch.setattr(triton_scan, "selective_scan_triton", lambda *a, **k: calls.append(a) or "triton ran")
    monkeypatch.setenv("SEQMAMBA_BACKEND", "triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert kernels.selective_scan_fn(*scan_args()) == "triton ran" and len(calls) == 1


@pytest.mark.parametrize("backend,expected", [(None, "causal_conv1d_torch"), ("reference", "causal_conv1d_ref")])
def test_causal_conv1d_routes_to_the_chosen_backend(monkeypatch, backend, expected):
    from kernels import causal_conv1d as pkg
    from kernels.causal_conv1d import torch_path

    calls = []
    spy(monkeypatch, torch_path, "causal_conv1d_torch", calls)
    spy(monkeypatch, pkg, "causal_conv1d_ref", calls)
    if backend:
        monkeypatch.setenv("SEQMAMBA_BACKEND", backend)
    x, w = torch.randn(1, 4, 6), torch.randn(4, 3)
    kernels.causal_conv1d_fn(x, w, activation="silu")
    assert calls == [expected]
