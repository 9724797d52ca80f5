"""CPU benchmark of the chunked selective scan against a plain loop over time steps (issue 2).

Setting of the issue: 2 CPU threads, batch 1, dim 256, dstate 16, seqlen 4096, float32,
A = -(1..16), delta = softplus(N(0, 1)), B and C (batch, dstate, seqlen). The baseline is a plain
Python loop over time steps, vectorised over (batch, dim, dstate), differentiated by autograd.

Each measurement times the whole call (allocation included; backward included for "fwd+bwd") after
warm-up calls; the two implementations alternate within every repeat so that load from other
processes on a shared machine hits both alike. Reported: median wall time and median process CPU
time (the sum over threads; less sensitive to other processes than wall time).

The forward also times the numba engine (``cpu_numba``, what inference runs when numba is installed;
forward only), and ``--first-call`` the latency of a fresh process's first numba call, with numba's
on-disk cache cold (JIT compile) and warm.

    .venv/bin/python benchmarks/bench_cpu_scan.py                 # the issue's table
    .venv/bin/python benchmarks/bench_cpu_scan.py --sweep 32,45,64x4096,23x1024   # chunk x block plans
    .venv/bin/python benchmarks/bench_cpu_scan.py --first-call    # numba compile / cache-load latency
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

from kernels.selective_scan import chunked


def loop_scan(u, delta, A, B, C):
    """Plain loop over time steps, vectorised over (batch, dim, dstate). B, C: (batch, dstate, seqlen)."""
    batch, dim, seqlen = u.shape
    x = u.new_zeros(batch, dim, A.shape[1])  # (batch, dim, dstate)
    ys = []
    for t in range(seqlen):
        dt = delta[:, :, t, None]  # (batch, dim, 1)
        x = torch.exp(dt * A) * x + (dt * u[:, :, t, None]) * B[:, None, :, t]
        ys.append((x * C[:, None, :, t]).sum(-1))  # (batch, dim)
    return torch.stack(ys, dim=-1)  # (batch, dim, seqlen)


def make_inputs(batch, dim, dstate, seqlen, seed=0):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(batch, dim, seqlen, generator=g)
    delta = F.softplus(torch.randn(batch, dim, seqlen, generator=g))
    A = -torch.arange(1, dstate + 1, dtype=torch.float32).repeat(dim, 1)  # (dim, dstate)
    B = torch.randn(batch, dstate, seqlen, generator=g)
    C = torch.randn(batch, dstate, seqlen, generator=g)
    return u, delta, A, B, C


def timed(fn):
    """(wall seconds, process CPU seconds) of one call."""
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def forward_only(impl, inputs):
    def run():
        with torch.no_grad():
            impl(*inputs)
    return run


def forward_backward(impl, inputs):
    leaves = [t.detach().clone().requires_grad_() for t in inputs]

    def run():
        for t in leaves:
            t.grad = None
        impl(*leaves).sum().backward()
    return run


def compare(cases, warmup, repeats):
    """cases: {name: callable}; returns {name: (median wall s, median cpu s)}, interleaving the calls."""
    for fn in cases.values():
        for _ in range(warmup):
            fn()
    samples = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            samples[name].append(timed(fn))
    return {name: (statistics.median(w for w, _ in s), statistics.median(c for _, c in s))
            for name, s in samples.items()}


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def chunked_with(plan: str):
    """The chunked path with a fixed plan "T" or "TxBLOCK" (chunk length, block length)."""
    chunk_len, _, block_len = plan.partition("x")

    def impl(u, delta, A, B, C):
        return chunked.scan_chunked(u, delta, A, B, C, chunk_len=int(chunk_len),
                                    block_len=int(block_len) if block_len else None)
    return impl


def numba_engine(u, delta, A, B, C):
    return chunked.scan_chunked(u, delta, A, B, C, engine="numba")


FIRST_CALL = """
import time
t0 = time.perf_counter()
import torch
from kernels.selective_scan import chunked
t1 = time.perf_counter()
for dtype in (torch.float32, torch.float64):
    u = torch.randn(2, 8, 30, dtype=dtype)
    with torch.no_grad():
        chunked.scan_chunked(u, u.abs(), -torch.rand(8, 4, dtype=dtype), u[:, :4], u[:, :4], engine="numba")
    t2 = time.perf_counter()
    print(f"{t2 - t1:.2f}", end=" ")
    t1 = t2
print()
"""


def first_call() -> None:
    """A fresh interpreter's first numba call per dtype, cold (empty NUMBA_CACHE_DIR) then warm."""
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        print("| numba cache | first float32 call | then first float64 call |\n|---|---|---|")
        for state in ("cold (compiles)", "warm (loads)", "warm (loads)"):
            res = subprocess.run([sys.executable, "-c", FIRST_CALL], env=env, capture_output=True, text=True,
                                 check=True)
            f32, f64 = res.stdout.split()
            print(f"| {state} | {f32} s | {f64} s |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--dstate", type=int, default=16)
    p.add_argument("--seqlen", type=int, default=4096)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--sweep", default="", help="comma-separated plans T or TxBLOCK (chunk length x block length): "
                                                "time only the chunked path with each")
    p.add_argument("--first-call", action="store_true", help="time a fresh process's first numba calls only")
    args = p.parse_args()
    if args.first_call:
        first_call()
        return
    torch.set_num_threads(args.threads)
    inputs = make_inputs(args.batch, args.dim, args.dstate, args.seqlen)
    lanes = args.batch * args.dim * args.dstate
    T, block = chunked.plan(lanes, args.seqlen)

    print(f"# {datetime.date.today()} | {cpu_model()} | {torch.get_num_threads()} threads | torch {torch.__version__}"
          f" | load average {os.getloadavg()[0]:.1f} at start")
    print(f"# batch {args.batch}, dim {args.dim}, dstate {args.dstate}, seqlen {args.seqlen}, float32; "
          f"default plan: chunk {T}, block {block}; median of {args.repeats} after {args.warmup} warm-up")

    if args.sweep:
        print("| pass | chunk x block | wall | cpu |\n|---|---|---|---|")
        for mode, wrap in (("forward", forward_only), ("forward+backward", forward_backward)):
            res = compare({p: wrap(chunked_with(p), inputs) for p in args.sweep.split(",")}, args.warmup, args.repeats)
            for p, (w, c) in res.items():
                print(f"| {mode} | {p} | {w * 1e3:.1f} ms | {c * 1e3:.1f} ms |")
        return

    impls = {"loop": loop_scan, "chunked": lambda *a: chunked.scan_chunked(*a, engine="torch")}
    if chunked.numba_scan() is not None:
        impls["numba"] = numba_engine
    with torch.no_grad():  # all agree before anything is timed
        ref = loop_scan(*inputs)
        for name, impl in list(impls.items())[1:]:
            out = impl(*inputs)
            print(f"# relative difference {name} vs loop: {float((out - ref).norm() / ref.norm()):.1e}")
    print("| pass | implementation | wall | cpu | speed-up vs loop (wall) | speed-up vs loop (cpu) |")
    print("|---|---|---|---|---|---|")
    for mode, wrap in (("forward", forward_only), ("forward+backward", forward_backward)):
        # numba is a forward engine: training (fwd+bwd) always runs the chunked torch path
        cases = {name: wrap(impl, inputs) for name, impl in impls.items() if mode == "forward" or name != "numba"}
        res = compare(cases, args.warmup, args.repeats)
        lw, lc = res["loop"]
        for name, (w, c) in res.items():
            print(f"| {mode} | {name} | {w * 1e3:.1f} ms | {c * 1e3:.0f} ms | {lw / w:.1f}x | {lc / c:.1f}x |")
    print(f"# load average {os.getloadavg()[0]:.1f} at end")


if __name__ == "__main__":
    main()
