"""``seqmamba demo``: run each kernel on this machine against the reference and time the fast path."""

from __future__ import annotations

import argparse
import time

import torch


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30))


def main(argv: list[str]) -> int:
    from kernels import backend_for, causal_conv1d_fn, causal_conv1d_ref, selective_scan_fn, selective_scan_ref

    parser = argparse.ArgumentParser(prog="seqmamba demo", description=__doc__)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--seqlen", type=int, default=2048)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)

    g = torch.Generator().manual_seed(0)
    dim, seqlen, dstate = args.dim, args.seqlen, 16
    dev = torch.device(args.device)
    u = torch.randn(1, dim, seqlen, generator=g).to(dev)
    delta = torch.randn(1, dim, seqlen, generator=g).to(dev)
    A = -torch.arange(1, dstate + 1, dtype=torch.float32).repeat(dim, 1).to(dev)
    B, C = (torch.randn(1, dstate, seqlen, generator=g).to(dev) for _ in range(2))
    D, z = torch.randn(dim, generator=g).to(dev), torch.randn(1, dim, seqlen, generator=g).to(dev)
    w = torch.randn(dim, 4, generator=g).to(dev)

    print(f"seqmamba kernels on {dev} (backend: {backend_for(u)}), dim={dim}, seqlen={seqlen}, dstate={dstate}")
    t0 = time.perf_counter()
    out = selective_scan_fn(u, delta, A, B, C, D, z, delta_softplus=True)
    t_fast = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = selective_scan_ref(u.double(), delta.double(), A.double(), B.double(), C.double(), D.double(),
                             z.double(), delta_softplus=True)
    t_ref = time.perf_counter() - t0
    print(f"  selective_scan_fn : {t_fast * 1e3:8.1f} ms  (reference {t_ref * 1e3:8.1f} ms), "
          f"rel. error vs float64 {_rel_err(out, ref):.1e}")
    y = causal_conv1d_fn(u, w, activation="silu")
    y_ref = causal_conv1d_ref(u.double(), w.double(), activation="silu")
    print(f"  causal_conv1d_fn  : rel. error vs float64 {_rel_err(y, y_ref):.1e}")
    return 0
