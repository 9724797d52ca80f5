"""selective_state_update (one decoding step): the Triton kernel against the float64 reference,
and repeated steps against the reference selective scan.

On a CPU-only machine the Triton kernel runs in Triton's interpreter (tests/conftest.py sets
TRITON_INTERPRET=1), float32. The ``gpu`` tests run it natively in fp32 and bf16, and replay a
whole decoding step (conv update + state update) in a CUDA graph.
"""

from __future__ import annotations

import pytest
import torch

from kernels import selective_scan_ref, selective_state_update, selective_state_update_ref, triton_available

needs_triton = pytest.mark.skipif(not triton_available(), reason="triton is not installed")
BACKENDS = ["reference", "torch", pytest.param("triton", marks=needs_triton)]
# fp32: the GPU evaluates softplus and exp with hardware approximations (a few ulp), which an output
# near cancellation turns into ~4e-4 relative (seen on the H200: 1 element of 3072 at 1.5e-5 absolute).
TOL = {torch.float32: (1e-4, 5e-5), torch.bfloat16: (2e-2, 2e-2)}
NAMES = ("state", "x", "dt", "A", "B", "C", "D", "z", "dt_bias")


def make_step(batch, dim, dstate, ngroups=None, *, D=True, z=True, dt_bias=True, seed=0):
    """One step's float64 arguments as a dict, random and never zero. ``ngroups=None`` gives B and
    C of shape (batch, dstate); otherwise (batch, ngroups, dstate). A = -(1..dstate), the S4D-real
    initialisation, and dt before softplus in [-4, 3], so dt spans about 0.02 to 3."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    bc_shape = (batch, dstate) if ngroups is None else (batch, ngroups, dstate)
    return dict(
        state=r(batch, dim, dstate), x=r(batch, dim),
        dt=torch.rand(batch, dim, generator=g, dtype=torch.float64) * 7.0 - 4.0,
        A=-torch.arange(1, dstate + 1, dtype=torch.float64).repeat(dim, 1) * (0.5 + torch.rand(dim, 1, generator=g)),
        B=r(*bc_shape), C=r(*bc_shape),
        D=r(dim) if D else None, z=r(batch, dim) if z else None, dt_bias=0.5 * r(dim) if dt_bias else None,
    )


def cast(args, dtype, device="cpu"):
    return {k: None if v is None else v.to(device, dtype) for k, v in args.items()}


@pytest.fixture(params=BACKENDS)
def backend(request, monkeypatch):
    monkeypatch.setenv("SEQMAMBA_BACKEND", request.param)
    return request.param


# (ngroups, D, z, dt_bias, dt_softplus): B/C in both forms, ngroups > 1, each option on and off.
CASES = [
    (None, True, True, True, True),
    (None, False, False, False, True),
    (1, True, False, True, False),
    (2, False, True, False, True),
    (6, True, True, True, True),
]


@pytest.mark.parametrize(("ngroups", "D", "z", "dt_bias", "softplus"), CASES)
def test_matches_reference_float32(backend, ngroups, D, z, dt_bias, softplus):
    args64 = make_step(3, 6, 5, ngroups, D=D, z=z, dt_bias=dt_bias, seed=ngroups or 0)
    if not softplus:
        args64["dt"] = args64["dt"].abs()  # without softplus dt must already be positive
    state_ref = args64["state"].clone()
    want = selective_state_update_ref(**(args64 | {"state": state_ref}), dt_softplus=softplus)
    args = cast(args64, torch.float32)
    state = args["state"]
    got = selective_state_update(**args, dt_softplus=softplus)
    assert got.dtype == torch.float32 and got.shape == (3, 6)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(state.double(), state_ref, rtol=1e-5, atol=1e-5)  # updated in place


@pytest.mark.parametrize(("groups_B", "groups_C"), [(3, None), (None, 2), (2, 6)])
def test_b_and_c_may_be_grouped_differently(backend, groups_B, groups_C):
    args64 = make_step(2, 6, 4, groups_B, seed=4)
    args64["C"] = make_step(2, 6, 4, groups_C, seed=5)["C"]
    state_ref = args64["state"].clone()
    want = selective_state_update_ref(**(args64 | {"state": state_ref}), dt_softplus=True)
    args = cast(args64, torch.float32)
    got = selective_state_update(**args, dt_softplus=True)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(args["state"].double(), state_ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("ngroups", [None, 2])
def test_repeated_steps_equal_the_selective_scan(backend, ngroups):
    """Decoding a sequence step by step reproduces selective_scan_ref with initial_state and
    return_last_state: the same outputs and the same final state. Per-step B/C of (batch, dstate)
    stack to the scan's (batch, dstate, seqlen), (batch, ngroups, dstate) to its grouped form."""
    batch, dim, dstate, seqlen = 2, 4, 3, 6
    steps = [make_step(batch, dim, dstate, ngroups, seed=s) for s in range(seqlen)]
    stack = lambda k: torch.stack([s[k] for s in steps], dim=-1)  # noqa: E731
    u, delta, z, B, C = stack("x"), stack("dt"), stack("z"), stack("B"), stack("C")  # (..., seqlen)
    A, D, dt_bias, state0 = steps[0]["A"], steps[0]["D"], steps[0]["dt_bias"], steps[0]["state"]
    want, want_last = selective_scan_ref(u, delta, A, B, C, D, z, dt_bias, True, True, initial_state=state0)

    state = state0.float().clone()
    ys = []
    for t in range(seqlen):
        step = cast(dict(x=u[..., t], dt=delta[..., t], B=B[..., t], C=C[..., t], z=z[..., t]), torch.float32)
        ys.append(selective_state_update(state, A=A.float(), D=D.float(), dt_bias=dt_bias.float(),
                                         dt_softplus=True, **step))
    torch.testing.assert_close(torch.stack(ys, dim=-1).double(), want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(state.double(), want_last, rtol=1e-5, atol=1e-5)


def test_strided_inputs_and_large_dt_stay_finite(backend):
    """Views with odd strides read correctly, and a large dt (softplus of 30) decays the state
    without overflow or NaN."""
    args64 = make_step(2, 8, 4, 2, seed=9)
    args64["dt"][0, :3] = 30.0
    state_ref = args64["state"].clone()
    want = selective_state_update_ref(**(args64 | {"state": state_ref}), dt_softplus=True)
    args = cast(args64, torch.float32)
    wide = torch.randn(2, 16)
    wide[:, ::2] = args["x"]
    args["x"] = wide[:, ::2]  # (batch, dim) with stride 2 along dim
    args["A"] = args["A"].t().contiguous().t()  # column-major (dim, dstate)
    state = args["state"]
    got = selective_state_update(**args, dt_softplus=True)
    assert torch.isfinite(got).all() and torch.isfinite(state).all()
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(state.double(), state_ref, rtol=1e-5, atol=1e-5)


BAD = [
    (lambda a: {"state": a["state"][0]}, "state must have shape"),
    (lambda a: {"x": a["x"][:, :-1]}, "x must have shape"),
    (lambda a: {"dt": a["dt"][None]}, "dt must have shape"),
    (lambda a: {"A": a["A"][:, :-1]}, "A must have shape"),
    (lambda a: {"B": a["B"][..., :-1]}, "B must have shape"),
    (lambda a: {"C": torch.randn(3, 4, 5)}, "C: dim=6 is not divisible by ngroups=4"),
    (lambda a: {"D": a["D"][:-1]}, "D must have shape"),
    (lambda a: {"z": a["z"].t()}, "z must have shape"),
    (lambda a: {"dt_bias": a["dt_bias"][None]}, "dt_bias must have shape"),
    (lambda a: {"B": a["B"].long()}, "B must be a floating-point tensor"),
    (lambda a: {"D": a["D"].to("meta")}, "D on meta"),
]


@pytest.mark.parametrize(("change", "message"), BAD)
def test_bad_arguments_name_the_argument(backend, change, message):
    args = cast(make_step(3, 6, 5), torch.float32)
    with pytest.raises((ValueError, TypeError), match=message):
        selective_state_update(**(args | change(args)))


# ---- GPU: the Triton kernel natively (run with `-m gpu` on the H200) -----------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("dim", "dstate", "ngroups"), [(1536, 16, None), (3072, 16, 1), (768, 64, 8), (40, 5, 4)])
def test_gpu_matches_reference(dtype, dim, dstate, ngroups):
    args64 = make_step(4, dim, dstate, ngroups, seed=dim)
    args64 = {k: None if v is None else v.to(dtype).double() for k, v in args64.items()}  # dtype-exact inputs
    state_ref = args64["state"].clone()
    want = selective_state_update_ref(**(args64 | {"state": state_ref}), dt_softplus=True)
    args = cast(args64, dtype, "cuda") | {"state": args64["state"].to("cuda", torch.float32)}  # fp32 state
    got = selective_state_update(**args, dt_softplus=True)
    rtol, atol = TOL[dtype]
    torch.testing.assert_close(got.cpu().double(), want, rtol=rtol, atol=atol)
    torch.testing.assert_close(args["state"].cpu().double(), state_ref, rtol=1e-5, atol=1e-5)


@pytest.mark.gpu
def test_gpu_decode_step_replays_in_a_cuda_graph():
    """A whole decoding step (conv update, then state update) captured once in a CUDA graph and
    replayed gives what eager calls give: the launchers do no host sync and allocate only outputs."""
    from kernels import causal_conv1d_update

    batch, dim, dstate, width = 2, 256, 16, 4
    args = cast(make_step(batch, dim, dstate, 1, seed=3), torch.float32, "cuda")
    conv_w, conv_b = torch.randn(dim, width, device="cuda"), torch.randn(dim, device="cuda")
    conv_state0 = torch.randn(batch, dim, width, device="cuda")
    inputs = [torch.randn(batch, dim, device="cuda") for _ in range(3)]

    def step(x_in, conv_state, ssm_state):
        xc = causal_conv1d_update(x_in, conv_state, conv_w, conv_b, "silu")
        return selective_state_update(ssm_state, xc, args["dt"], args["A"], args["B"], args["C"], args["D"],
                                      args["z"], args["dt_bias"], True)

    conv_e, ssm_e = conv_state0.clone(), args["state"].clone()
    eager = [step(x, conv_e, ssm_e) for x in inputs]

    conv_g, ssm_g, x_static = conv_state0.clone(), args["state"].clone(), torch.empty_like(inputs[0])
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up compiles the kernels outside the capture
        step(x_static.copy_(inputs[0]), conv_g.clone(), ssm_g.clone())
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y_static = step(x_static, conv_g, ssm_g)
    for x, want in zip(inputs, eager):
        x_static.copy_(x)
        graph.replay()
        torch.testing.assert_close(y_static, want)
    torch.testing.assert_close(conv_g, conv_e)
    torch.testing.assert_close(ssm_g, ssm_e)
