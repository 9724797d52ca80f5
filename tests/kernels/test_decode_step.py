"""The decoding step's launch contract, shared by selective_state_update and causal_conv1d_update:
states updated in place whatever their dtype and strides, each launcher dispatching exactly one
kernel and no other device work (so a CUDA graph of a step holds two kernel nodes), and a launch
grid that occupies the GPU at batch 1 without starving at batch 64.

CPU runs go through Triton's interpreter (tests/conftest.py); the ``gpu`` test counts the kernels a
replayed graph runs on the H200.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from kernels import (
    causal_conv1d_update,
    causal_conv1d_update_ref,
    selective_state_update,
    selective_state_update_ref,
    triton_available,
)

pytestmark = pytest.mark.skipif(not triton_available(), reason="triton is not installed")


@pytest.fixture(autouse=True)
def triton_backend(monkeypatch):
    monkeypatch.setenv("SEQMAMBA_BACKEND", "triton")


def ssm_args(batch, dim, dstate, *, seed=0, device="cpu"):
    """float64 step arguments (all options on), random and never zero; dt before softplus in [-4, 3]."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    args = dict(x=r(batch, dim), dt=torch.rand(batch, dim, generator=g, dtype=torch.float64) * 7 - 4,
                A=-torch.arange(1, dstate + 1, dtype=torch.float64).repeat(dim, 1), B=r(batch, dstate),
                C=r(batch, dstate), D=r(dim), z=r(batch, dim), dt_bias=0.5 * r(dim))
    return {k: v.to(device) for k, v in args.items()}


def strided_view(batch, dim, last, kind, dtype, seed):
    """A random (batch, dim, last) view into a larger buffer, and the buffer: ``slot`` is one slot
    of an interleaved cache (batch, dim, 2, last); ``transposed`` has dim as its fastest axis."""
    g = torch.Generator().manual_seed(seed)
    if kind == "slot":
        buf = torch.randn(batch, dim, 2, last, generator=g).to(dtype)
        return buf[:, :, 1, :], buf
    buf = torch.randn(batch, last, dim, generator=g).to(dtype)
    return buf.transpose(1, 2), buf


# ---- states in place, any dtype and strides ------------------------------------------------------

@pytest.mark.parametrize("state_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("kind", ["slot", "transposed"])
def test_ssm_state_is_updated_in_place_in_its_own_dtype_and_strides(state_dtype, kind):
    """A bf16 or strided state (a slot of a larger cache) is written where it lies, rounded once to
    its dtype; y comes from the fp32 state before that rounding, as in the reference; the rest of
    the buffer is untouched."""
    state, buf = strided_view(3, 24, 8, kind, state_dtype, seed=1)
    assert not state.is_contiguous()
    before, ptr = buf.clone(), state.data_ptr()
    args64 = ssm_args(3, 24, 8, seed=2)
    state_ref = state.double()  # the stored values, exactly
    want = selective_state_update_ref(state_ref, **args64, dt_softplus=True)
    got = selective_state_update(state, **{k: v.float() for k, v in args64.items()}, dt_softplus=True)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
    assert state.data_ptr() == ptr and state.dtype == state_dtype
    # The kernel and the float64 reference differ by at most the one rounding to the state's dtype.
    torch.testing.assert_close(state.double(), state_ref.to(state_dtype).double(),
                               rtol=1e-5 if state_dtype == torch.float32 else 8e-3, atol=1e-5)
    untouched = torch.ones_like(buf, dtype=torch.bool)
    (untouched[:, :, 1, :] if kind == "slot" else untouched.transpose(1, 2))[...] = False
    assert torch.equal(buf[untouched], before[untouched])
    assert not torch.equal(buf[~untouched], before[~untouched])


@pytest.mark.parametrize("state_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("kind", ["slot", "transposed"])
def test_conv_state_is_updated_in_place_in_its_own_dtype_and_strides(state_dtype, kind):
    """The conv state shifts by one column where it lies, x entering rounded to the state's dtype;
    y is the convolution of the state as stored, so it matches the float64 reference run on that
    same state; the rest of the buffer is untouched."""
    conv_state, buf = strided_view(2, 40, 4, kind, state_dtype, seed=3)
    before, ptr = buf.clone(), conv_state.data_ptr()
    g = torch.Generator().manual_seed(4)
    x, weight, bias = torch.randn(2, 40, generator=g), torch.randn(40, 4, generator=g), torch.randn(40, generator=g)
    # x representable in the state's dtype: Triton's interpreter truncates fp32 -> bf16 where the GPU
    # rounds to nearest, and the rounding itself is not what this test is about.
    x = x.to(state_dtype).float()
    want_state = torch.cat([conv_state[..., 1:], x.to(state_dtype)[..., None]], dim=-1)
    state_ref = conv_state.double()
    want = causal_conv1d_update_ref(x.to(state_dtype).double(), state_ref, weight.double(), bias.double(), "silu")
    got = causal_conv1d_update(x, conv_state, weight, bias, "silu")
    assert conv_state.data_ptr() == ptr
    assert torch.equal(conv_state, want_state)  # a shift and a copy: exact
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)
    untouched = torch.ones_like(buf, dtype=torch.bool)
    (untouched[:, :, 1, :] if kind == "slot" else untouched.transpose(1, 2))[...] = False
    assert torch.equal(buf[untouched], before[untouched])


# ---- one kernel per call, nothing else -----------------------------------------------------------

class _Recorder(TorchDispatchMode):
    """Names of the torch ops dispatched while active."""

    def __init__(self):
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func.overloadpacket.__name__))
        return func(*args, **(kwargs or {}))


class _FakeKernel:
    """Stands in for a @triton.jit kernel: records each launch's grid and options, runs nothing."""

    def __init__(self):
        self.launches: list[tuple[tuple[int, ...], dict]] = []

    def __getitem__(self, grid):
        return lambda *args, **options: self.launches.append((tuple(grid), options))


@pytest.mark.parametrize("state_dtype", [torch.float32, torch.bfloat16])
def test_each_launcher_runs_one_kernel_and_no_other_torch_op(monkeypatch, state_dtype):
    """Besides its kernel, each launcher only allocates its output (torch.empty, no device work):
    no cast, copy, contiguous, zeros or softplus in torch, even with bf16 activations, a bf16 or
    strided state and grouped B/C. In a CUDA graph every such op would be another node."""
    from kernels.causal_conv1d import triton_conv
    from kernels.state_update import triton_update

    fake_ssm, fake_conv = _FakeKernel(), _FakeKernel()
    monkeypatch.setattr(triton_update, "_state_update_kernel", fake_ssm)
    monkeypatch.setattr(triton_conv, "_conv_update_kernel", fake_conv)
    bf = {k: v.to(torch.bfloat16) if k in ("x", "dt", "B", "C", "z") else v.float()
          for k, v in ssm_args(2, 32, 16, seed=5).items()}
    bf["B"] = bf["B"].view(2, 1, 16)  # grouped form
    state, _ = strided_view(2, 32, 16, "transposed", state_dtype, seed=6)
    conv_state, _ = strided_view(2, 32, 4, "slot", torch.bfloat16, seed=7)
    weight = torch.randn(32, 4, dtype=torch.bfloat16)
    with _Recorder() as rec:
        xc = causal_conv1d_update(bf["x"], conv_state, weight, None, "silu")
        selective_state_update(state, **(bf | {"x": xc}), dt_softplus=True)
    assert rec.ops == ["empty", "empty"]
    assert len(fake_conv.launches) == 1 and len(fake_ssm.launches) == 1


# ---- launch grid ---------------------------------------------------------------------------------

@pytest.mark.parametrize("row", [4, 16])  # conv window, dstate
@pytest.mark.parametrize("batch", [1, 8, 64])
def test_grid_occupies_the_gpu_without_oversized_programs(batch, row):
    """At the benchmark's dim on an H200 (132 SMs): at least two programs per SM even at batch 1,
    one or two warps a program, blocks that tile dim exactly, and at batch 64 no block shrunk below
    the target size (more programs there would only add scheduling)."""
    from kernels._decode_grid import TARGET_ELEMENTS, decode_block

    dim, n_sm = 1536, 132
    block_d, num_warps = decode_block(batch, dim, row, n_sm)
    programs = batch * -(-dim // block_d)
    assert programs >= 2 * n_sm
    assert num_warps <= 2 and dim % block_d == 0
    if batch == 64:
        assert block_d * row == TARGET_ELEMENTS


def test_grid_handles_sizes_that_are_not_powers_of_two():
    """Odd dim and large dstate: the block never exceeds the next power of two of dim, and a row
    longer than the target still gets one channel per program with more warps."""
    from kernels._decode_grid import decode_block

    assert decode_block(1, 6, 16, 132) == (1, 1)
    assert decode_block(64, 40, 4, 132)[0] <= 64
    assert decode_block(8, 1536, 1024, 132) == (1, 4)


# ---- GPU: the graph of a step holds two kernels (run with `-m gpu` on the H200) -------------------

@pytest.mark.gpu
def test_gpu_graph_replay_of_a_step_runs_exactly_two_kernels():
    """Replaying a captured step runs the two Triton kernels and nothing else (no fill, copy or RNG
    prologue kernel from torch), counted by the profiler over several replays."""
    from torch.profiler import ProfilerActivity, profile

    args = {k: v.to(torch.bfloat16) if k in ("x", "dt", "B", "C", "z") else v.float()
            for k, v in ssm_args(8, 1536, 16, seed=8, device="cuda").items()}
    state = torch.randn(8, 1536, 16, device="cuda")
    conv_state = torch.randn(8, 1536, 4, device="cuda", dtype=torch.bfloat16)
    weight = torch.randn(1536, 4, device="cuda", dtype=torch.bfloat16)

    def step():
        xc = causal_conv1d_update(args["x"], conv_state, weight, None, "silu")
        return selective_state_update(state, **(args | {"x": xc}), dt_softplus=True)

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    graph.replay()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            graph.replay()
        torch.cuda.synchronize()
    kernels = [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    assert sorted(set(kernels)) == ["_conv_update_kernel", "_state_update_kernel"], kernels
    assert len(kernels) == 10, kernels
