"""CPU benchmark of the causal conv1d PyTorch path, against the alternative it was chosen over.

    .venv/bin/python benchmarks/bench_cpu_conv.py

Rows: our path (one grouped F.conv1d over the left-padded input, autograd backward), unrolled
shifted multiply-adds (one addcmul per tap), our path on the Mamba block's channel-last input (a
channels-last 2-D conv without gradients, F.conv1d with them; the last shape is the gene caller's),
and one decoding step (causal_conv1d_update +
selective_state_update on the CPU path). float32, width 4, silu, bias; median of repeated calls
on random inputs. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from kernels.causal_conv1d.torch_path import causal_conv1d_torch  # noqa: E402


def conv_shifted(x, weight, bias):
    """The alternative: y = bias + sum_k weight[:, k] * x shifted right by width - 1 - k."""
    width, seqlen = weight.shape[1], x.shape[-1]
    xp = F.pad(x, (width - 1, 0))  # (batch, dim, width - 1 + seqlen)
    y = bias[:, None] + xp[..., width - 1:] * weight[:, width - 1, None]
    for k in range(width - 1):
        y = torch.addcmul(y, xp[..., k:k + seqlen], weight[:, k, None])
    return F.silu(y)


def median_ms(fn, reps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def bench_shape(batch: int, dim: int, seqlen: int, reps: int) -> None:
    x = torch.randn(batch, dim, seqlen, requires_grad=True)
    weight = torch.randn(dim, 4, requires_grad=True)
    bias = torch.randn(dim, requires_grad=True)
    dy = torch.randn(batch, dim, seqlen)
    # The Mamba block's layout: x a (batch, dim, seqlen) view of (batch, seqlen, dim) rows.
    rows = torch.randn(batch, seqlen, dim, requires_grad=True)
    paths = {
        "ours: grouped F.conv1d": (lambda: causal_conv1d_torch(x, weight, bias, activation="silu"), x),
        "unrolled shifted addcmul": (lambda: conv_shifted(x, weight, bias), x),
        "ours, channel-last x (inference: channels-last 2-D conv)": (
            lambda: causal_conv1d_torch(rows.transpose(1, 2), weight, bias, activation="silu"), rows),
    }
    for name, (fn, leaf) in paths.items():
        with torch.no_grad():
            fwd = median_ms(fn, reps)
        both = median_ms(lambda fn=fn, leaf=leaf: torch.autograd.grad(fn(), (leaf, weight, bias), dy), reps)
        print(f"| {batch} x {dim} x {seqlen} | {name} | {fwd:.2f} | {both:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=30)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()},"
          f" load average {os.getloadavg()[0]:.1f}\n")
    print("| batch x dim x seqlen | path | forward ms | forward + backward ms |")
    print("|---|---|---|---|")
    for batch, dim, seqlen in ((1, 256, 4096), (8, 512, 1024), (2, 1536, 2048), (2, 384, 20000)):
        bench_shape(batch, dim, seqlen, args.reps)

    from kernels import causal_conv1d_update, selective_state_update

    batch, dim, dstate = 1, 1536, 16
    conv_state, state = torch.randn(batch, dim, 4), torch.randn(batch, dim, dstate)
    x, dt, z = torch.randn(batch, dim), torch.randn(batch, dim), torch.randn(batch, dim)
    B, C = torch.randn(batch, dstate), torch.randn(batch, dstate)
    A = -torch.arange(1, dstate + 1, dtype=torch.float32).repeat(dim, 1)
    D, dt_bias, w = torch.randn(dim), torch.randn(dim), torch.randn(dim, 4)

    def step():
        xc = causal_conv1d_update(x, conv_state, w, None, "silu")
        return selective_state_update(state, xc, dt, A, B, C, D, z, dt_bias, True)

    with torch.no_grad():
        print(f"\nOne decoding step, batch {batch}, dim {dim}, dstate {dstate}: {median_ms(step, 200) * 1e3:.0f} µs")


if __name__ == "__main__":
    main()
