"""GPU benchmark of the kernels (issue 3): selective scan, causal conv1d and one decoding step.

Run on the H200:  python benchmarks/bench_kernels.py --out benchmarks/RESULTS_gpu.md  (or
``seqmamba bench``). It first checks the Triton scan against the float64 reference on a mid-size
random problem (relative errors of out, last state and every gradient), then times with the median
of ``triton.testing.do_bench`` on random inputs (never zeros), rotating between input sets, and
writes one markdown report: command, GPU, versions, date, tables.

``--decode-only`` runs just the decoding-step rows (under a minute):
``python3 benchmarks/bench_kernels.py --decode-only --out benchmarks/results/h200_decode.md``; how each
decode column is measured is in ``decode_rows``' docstring.

Sizes (issue 3): batch 8, dim 1536, dstate 16, B/C (batch, 1, dstate, seqlen), bf16 u/delta/z/B/C,
fp32 A/D, softplus, with z; seqlen 1k/4k/16k/64k (``--quick``: 1k/4k).
"""

from __future__ import annotations

import argparse
import datetime
import platform
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run by path from anywhere
    sys.path.insert(0, str(ROOT))

EXP2_PER_S = 4.1e12  # measured on the H200 (issue 3): MUFU exp2 throughput, the second floor
SLOW_CALL_S = 5.0  # a path whose single call takes longer is reported, not benchmarked further


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def scan_inputs(batch, dim, seqlen, dstate, *, dtype=torch.bfloat16, seed=0, device="cuda", grad=False):
    """Mamba-block-like inputs: A = -(1..dstate), Δ before softplus ~ N(-1, 1) + bias, B/C one group."""
    g = torch.Generator(device=device).manual_seed(seed)
    r = lambda *s, dt=dtype: torch.randn(*s, generator=g, device=device, dtype=torch.float32).to(dt)  # noqa: E731
    t = dict(
        u=r(batch, dim, seqlen), delta=(r(batch, dim, seqlen, dt=torch.float32) - 1.0).to(dtype),
        A=-torch.arange(1, dstate + 1, device=device, dtype=torch.float32).repeat(dim, 1),
        B=r(batch, 1, dstate, seqlen), C=r(batch, 1, dstate, seqlen), D=r(dim, dt=torch.float32),
        z=r(batch, dim, seqlen), delta_bias=0.5 * r(dim, dt=torch.float32),
    )
    for k in ("u", "delta", "z", "B", "C", "A", "D", "delta_bias"):
        t[k].requires_grad_(grad)
    return t


def call_scan(fn, t, **kw):
    return fn(t["u"], t["delta"], t["A"], t["B"], t["C"], t["D"], t["z"], t["delta_bias"], True, **kw)


def scan_fwd_bwd(fn, t, dout):
    out = call_scan(fn, t)
    names = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
    return torch.autograd.grad(out, [t[k] for k in names], dout)


# --- correctness pre-check --------------------------------------------------------------------


def precheck(lines: list[str]) -> None:
    """Triton vs the float64 reference on one mid-size problem, fp32 and bf16, every gradient."""
    from kernels.selective_scan.reference import selective_scan_ref
    from kernels.selective_scan.triton_scan import selective_scan_triton

    lines += ["## Correctness pre-check (Triton vs float64 reference)", "",
              "batch 2, dim 256, seqlen 2048, dstate 16, B/C (batch, 2, dstate, seqlen), all options, "
              "initial_state, loss on out and last state; norm-wise relative errors.", "",
              "| dtype | out | last | du | ddelta | dA | dB | dC | dD | dz | ddelta_bias | dinitial_state |",
              "|---|" + "---|" * 11]
    names = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state")
    for dtype in (torch.float32, torch.bfloat16):
        gen7 = torch.Generator(device="cuda").manual_seed(7)
        r = lambda *s, g=gen7: torch.randn(*s, generator=g, device="cuda")  # noqa: E731
        base = dict(u=r(2, 256, 2048), delta=r(2, 256, 2048) - 1.0,
                    A=-torch.arange(1, 17, device="cuda", dtype=torch.float32).repeat(256, 1),
                    B=r(2, 2, 16, 2048), C=r(2, 2, 16, 2048), D=r(256), z=r(2, 256, 2048),
                    delta_bias=0.5 * r(256), initial_state=r(2, 256, 16))
        low = {k: (v if k in ("A", "D", "delta_bias", "initial_state") else v.to(dtype)) for k, v in base.items()}
        results = []
        for fn, cast in ((selective_scan_triton, None), (selective_scan_ref, torch.float64)):
            leaves = {k: (v.to(cast) if cast else v).detach().clone().requires_grad_() for k, v in low.items()}
            out, last = fn(*(leaves[k] for k in names[:-1]), True, True, initial_state=leaves["initial_state"])
            gen = torch.Generator(device="cuda").manual_seed(1)
            d_out = torch.randn(out.shape, generator=gen, device="cuda", dtype=torch.float64)
            d_last = torch.randn(last.shape, generator=gen, device="cuda", dtype=torch.float64)
            ((out.double() * d_out).sum() + (last.double() * d_last).sum()).backward()
            results.append((out, last, [leaves[k].grad for k in names]))
        (o, la, gr), (ro, rla, rgr) = results
        errs = [rel_err(o, ro), rel_err(la, rla)] + [rel_err(a, b) for a, b in zip(gr, rgr)]
        lines.append(f"| {str(dtype).replace('torch.', '')} | " + " | ".join(f"{e:.1e}" for e in errs) + " |")
    lines.append("")


# --- timing helpers ---------------------------------------------------------------------------


def bench_ms(fns: list[Callable[[], object]], rep_ms: int) -> float:
    """Median ms of do_bench, cycling through ``fns`` (one per input set) call by call."""
    import triton.testing

    state = {"i": 0}

    def rotate():
        state["i"] = (state["i"] + 1) % len(fns)
        return fns[state["i"]]()

    return float(triton.testing.do_bench(rotate, warmup=max(10, rep_ms // 4), rep=rep_ms, return_mode="median"))


def slow_ms(fn: Callable[[], object], repeats: int = 3) -> float:
    """Median ms over a few CUDA-event-timed calls, for paths too slow for do_bench's estimate loop."""
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def one_call_s(fn: Callable[[], object]) -> float:
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - t0


def host_ms(fn: Callable[[], object], calls: int = 20) -> float:
    """Median host (CPU) time of one call, without synchronising: what Python, autograd and the
    launches cost before the GPU has to wait. When it nears the GPU time, do_bench times the host."""
    torch.cuda.synchronize()
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    torch.cuda.synchronize()
    return sorted(times)[len(times) // 2]


def kernel_ms(fn: Callable[[], object], calls: int = 10) -> float:
    """GPU time of one call as the sum of its kernels' device times (torch.profiler): the time the
    call would take if the host never made the GPU wait."""
    kernels = _profiled_kernels(fn, calls)
    if kernels is None:
        return float("nan")
    return sum(sum(durations) for durations in kernels.values()) / calls / 1e3


def copy_bandwidth(lines: list[str]) -> float:
    """Device-to-device copy bandwidth in bytes/s (read + write), 2 GiB buffers."""
    src = torch.randn(2**29, device="cuda")
    dst = torch.empty_like(src)
    ms = bench_ms([lambda src=src, dst=dst: dst.copy_(src)], 200)
    bw = 2 * src.numel() * src.element_size() / (ms * 1e-3)
    lines += [f"Device-to-device copy: {bw / 1e12:.2f} TB/s (read + write of 2 GiB, median {ms:.3f} ms).", ""]
    del src, dst
    return bw


# --- the scan table ---------------------------------------------------------------------------


def scan_rows(lines, seqlens, bw, args) -> None:
    from kernels.selective_scan.chunked import selective_scan_chunked
    from kernels.selective_scan.reference import selective_scan_ref
    from kernels.selective_scan.triton_scan import selective_scan_triton

    b, d, n = args.batch, args.dim, args.dstate
    lines += ["## Selective scan", "",
              f"batch {b}, dim {d}, dstate {n}, B/C ({b}, 1, {n}, L), bf16 u/delta/z/B/C, fp32 A/D, softplus, z. "
              "Floors: bytes (read u, delta, z, B, C once and write y once; backward also reads dout and writes "
              "du, ddelta, dz, fp32 dB, dC) at the measured copy bandwidth, and exp2 (batch·dim·L·dstate "
              f"exponentials per pass at {EXP2_PER_S / 1e12:.1f} T/s). Fraction = floor / time.", "",
              "| L | path | fwd ms | fwd+bwd ms | bytes floor fwd / fwd+bwd µs | fwd % of bytes floor "
              "| fwd+bwd % of bytes floor | exp2 floor fwd µs |",
              "|---|---|---|---|---|---|---|---|"]
    paths = [(name, fn) for name, fn in (("triton", selective_scan_triton), ("torch (chunked)", selective_scan_chunked),
                                          ("reference", selective_scan_ref)) if name.split()[0] in args.paths]
    too_slow: set[str] = set()
    launch_rows: list[str] = []  # the Triton path's host vs GPU time per call
    for L in seqlens:
        elems = b * d * L
        fwd_bytes = elems * 2 * 4 + b * n * L * 2 * 2
        bwd_bytes = elems * 2 * 7 + b * n * L * (2 * 2 + 4 * 2)
        floor_f, floor_fb = fwd_bytes / bw * 1e6, (fwd_bytes + bwd_bytes) / bw * 1e6
        exp_floor = elems * n / EXP2_PER_S * 1e6
        sets = [scan_inputs(b, d, L, n, seed=s, grad=True) for s in range(2 if L <= 16384 else 1)]
        douts = [torch.randn(b, d, L, device="cuda", dtype=torch.bfloat16) for _ in sets]
        for name, fn in paths:
            if name == "reference" and L > args.ref_max_seqlen:
                # its autograd graph holds every step's (batch, dim, dstate) state: tens of GB beyond 4k
                lines.append(f"| {L} | {name} | not run above L = {args.ref_max_seqlen} | | | | | |")
                continue
            if name in too_slow:
                lines.append(f"| {L} | {name} | skipped (slower than {SLOW_CALL_S:.0f} s at a shorter L) | | | | | |")
                continue
            try:
                with torch.no_grad():
                    first = one_call_s(lambda fn=fn, t=sets[0]: call_scan(fn, t))
                    if first > 0.2:  # maybe compilation (Triton, torch.compile): time a second call
                        first = one_call_s(lambda fn=fn, t=sets[0]: call_scan(fn, t))
                if first > SLOW_CALL_S:
                    too_slow.add(name)
                    lines.append(f"| {L} | {name} | {first * 1e3:.0f} (one call) | not run | | | | |")
                    continue
                with torch.no_grad():
                    fwds = [lambda fn=fn, t=t: call_scan(fn, t) for t in sets]
                    f_ms = bench_ms(fwds, args.rep) if first < 0.2 else slow_ms(fwds[0])
                fbs = [lambda fn=fn, t=t, g=g: scan_fwd_bwd(fn, t, g) for t, g in zip(sets, douts)]
                fb_ms = bench_ms(fbs, args.rep) if first < 0.2 else slow_ms(fbs[0])
                if name == "triton":
                    with torch.no_grad():
                        f_host, f_gpu = host_ms(fwds[0]), kernel_ms(fwds[0])
                    fb_host, fb_gpu = host_ms(fbs[0]), kernel_ms(fbs[0])
                    launch_rows.append(f"| {L} | {f_ms:.3f} | {f_gpu:.3f} | {f_host:.3f} | {fb_ms:.3f} | "
                                       f"{fb_gpu:.3f} | {fb_host:.3f} |")
            except torch.cuda.OutOfMemoryError:
                too_slow.add(name)
                lines.append(f"| {L} | {name} | out of GPU memory | | | | | |")
                torch.cuda.empty_cache()
                continue
            lines.append(f"| {L} | {name} | {f_ms:.3f} | {fb_ms:.3f} | {floor_f:.0f} / {floor_fb:.0f} | "
                         f"{100 * floor_f / (f_ms * 1e3):.0f}% | {100 * floor_fb / (fb_ms * 1e3):.0f}% | "
                         f"{exp_floor:.0f} |")
            print(lines[-1], flush=True)
        del sets, douts
        torch.cuda.empty_cache()
    lines.append("")
    if launch_rows:
        lines += ["### Triton scan: GPU time and host time per call", "",
                  "do_bench times a call from its first kernel's start to its last kernel's end, so when the "
                  "host (Python, autograd, launches) needs about as long as the GPU, it times the host. "
                  "GPU = the sum of the call's kernel times (torch.profiler, 10 calls); host = median time to "
                  "issue one call without waiting (20 calls).", "",
                  "| L | fwd do_bench ms | fwd GPU ms | fwd host ms | fwd+bwd do_bench ms | fwd+bwd GPU ms "
                  "| fwd+bwd host ms |", "|---|---|---|---|---|---|---|", *launch_rows, ""]
        print("\n".join(lines[-len(launch_rows) - 5:]), flush=True)


def config_sweep(lines, args) -> None:
    """Triton scan launch configurations at L = 4096 (block_d:chunk:num_warps)."""
    from kernels.selective_scan import triton_scan

    b, d, n, L = args.batch, args.dim, args.dstate, 4096
    lines += ["## Triton scan launch configurations (L = 4096)", "",
              "| block_d | chunk | num_warps | B/C fp32 | bwd block_d | fwd ms | fwd+bwd ms |",
              "|---|---|---|---|---|---|---|"]
    sets = [scan_inputs(b, d, L, n, seed=s, grad=True) for s in range(2)]
    douts = [torch.randn(b, d, L, device="cuda", dtype=torch.bfloat16) for _ in sets]
    for spec in args.configs.split(","):
        block_d, chunk, warps, *rest = (int(x) for x in spec.split(":"))
        bc32, bwd_block_d = bool(rest and rest[0]), (rest[1] if len(rest) > 1 else 4)
        triton_scan.CONFIG_OVERRIDE = triton_scan.ScanConfig(block_d, chunk, warps, bc32, bwd_block_d)
        try:
            with torch.no_grad():
                f_ms = bench_ms([lambda t=t: call_scan(triton_scan.selective_scan_triton, t) for t in sets], args.rep)
            fb_ms = bench_ms([lambda t=t, g=g: scan_fwd_bwd(triton_scan.selective_scan_triton, t, g)
                              for t, g in zip(sets, douts)], args.rep)
            lines.append(f"| {block_d} | {chunk} | {warps} | {bc32} | {bwd_block_d} | {f_ms:.3f} | {fb_ms:.3f} |")
        except Exception as exc:  # a configuration that does not compile is a result, not a crash
            lines.append(f"| {block_d} | {chunk} | {warps} | {bc32} | {bwd_block_d} | failed: {type(exc).__name__}: "
                         f"{str(exc)[:80]} | |")
        finally:
            triton_scan.CONFIG_OVERRIDE = None
        print(lines[-1], flush=True)
    lines.append("")


# --- conv1d and decoding ----------------------------------------------------------------------


def conv_rows(lines, seqlens, args) -> None:
    from kernels import causal_conv1d_fn

    lines += ["## causal_conv1d_fn (width 4, silu, bias), forward + backward", "",
              "| L | fwd ms | fwd+bwd ms |", "|---|---|---|"]
    for L in seqlens:
        try:
            x = torch.randn(args.batch, args.dim, L, device="cuda", dtype=torch.bfloat16, requires_grad=True)
            w = torch.randn(args.dim, 4, device="cuda", requires_grad=True)
            bias = torch.randn(args.dim, device="cuda", requires_grad=True)
            dy = torch.randn_like(x)
            conv = lambda x=x, w=w, bias=bias: causal_conv1d_fn(x, w, bias, activation="silu")  # noqa: E731
            with torch.no_grad():
                f_ms = bench_ms([conv], args.rep)
            fb_ms = bench_ms([lambda c=conv, x=x, w=w, bias=bias, dy=dy: torch.autograd.grad(c(), (x, w, bias), dy)],
                             args.rep)
            lines.append(f"| {L} | {f_ms:.3f} | {fb_ms:.3f} |")
        except Exception as exc:
            lines.append(f"| {L} | failed: {type(exc).__name__}: {str(exc)[:100]} | |")
        print(lines[-1], flush=True)
    lines.append("")


def _decode_step(batch: int, dim: int, dstate: int, width: int = 4) -> Callable[[], torch.Tensor]:
    """One decoding step on random inputs: conv update then state update, states updated in place."""
    from kernels import causal_conv1d_update, selective_state_update

    bf = dict(device="cuda", dtype=torch.bfloat16)
    state = torch.randn(batch, dim, dstate, device="cuda")
    conv_state = torch.randn(batch, dim, width, **bf)
    x, dt, z = torch.randn(batch, dim, **bf), torch.randn(batch, dim, **bf) - 1.0, torch.randn(batch, dim, **bf)
    Bm, Cm = torch.randn(batch, dstate, **bf), torch.randn(batch, dstate, **bf)
    A = -torch.arange(1, dstate + 1, device="cuda", dtype=torch.float32).repeat(dim, 1)
    D, dt_bias = torch.randn(dim, device="cuda"), 0.5 * torch.randn(dim, device="cuda")
    w = torch.randn(dim, width, **bf)

    def step():
        xc = causal_conv1d_update(x, conv_state, w, None, "silu")
        return selective_state_update(state, xc, dt, A, Bm, Cm, D, z, dt_bias, True)

    return step


def _capture(step: Callable[[], object], steps: int) -> torch.cuda.CUDAGraph:
    """A CUDA graph of ``steps`` steps, warmed up (compiled) on a side stream first."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(steps):
            step()
    graph.replay()
    torch.cuda.synchronize()
    return graph


def _sleep_cycles_per_ms() -> float:
    """GPU clock cycles per ms of ``torch.cuda._sleep`` (a spin kernel), measured."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda._sleep(1_000_000)  # warm-up
    start.record()
    torch.cuda._sleep(10_000_000)
    end.record()
    torch.cuda.synchronize()
    return 10_000_000 / start.elapsed_time(end)


def _replays_us(graph: torch.cuda.CUDAGraph, replays: int, sleep_cycles: int) -> tuple[float, bool]:
    """µs per replay over ``replays`` back-to-back replays between two events. With ``sleep_cycles``
    the replays are queued behind a spin kernel, so the device runs them back to back and the
    host's launch pace is hidden; the flag says whether the spin outlasted the host's enqueueing."""
    torch.cuda.synchronize()
    spin, start, end = (torch.cuda.Event(enable_timing=True) for _ in range(3))
    spin.record()
    if sleep_cycles:
        torch.cuda._sleep(sleep_cycles)
    start.record()
    t0 = time.perf_counter()
    for _ in range(replays):
        graph.replay()
    host_ms = (time.perf_counter() - t0) * 1e3
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) * 1e3 / replays, spin.elapsed_time(start) > host_ms


def _median_replays_us(graph, replays, sleep_cycles, repeats=15) -> tuple[float, bool]:
    runs = [_replays_us(graph, replays, sleep_cycles) for _ in range(repeats)]
    return sorted(us for us, _ in runs)[repeats // 2], all(ok for _, ok in runs)


def _profiled_kernels(fn: Callable[[], object], calls: int) -> dict[str, list[float]] | None:
    """Device durations (µs) of every CUDA kernel ``fn`` runs over ``calls`` calls, by kernel name,
    from the profiler (CUPTI); None where the profiler records no kernels."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    kernels: dict[str, list[float]] = {}
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            kernels.setdefault(e.name, []).append(e.time_range.elapsed_us())
    return kernels or None


def decode_rows(lines, args) -> None:
    """One decoding step, plainly and replayed in CUDA graphs, at each of ``args.decode_batches``.

    Method (what each column means):
    - plain call: do_bench median of the Python call (host launch cost dominates).
    - replay, L2 flushed: do_bench median of replaying a one-step graph; do_bench writes 256 MB
      before each call, so the state comes from HBM every time (round 1's method, kept to compare).
    - replay, back to back: a decode loop as the GPU sees it. 200 replays of the one-step graph
      queued behind a spin kernel (``torch.cuda._sleep``, sized to outlast the host's enqueueing),
      timed between two events: device time per replay including each graph launch, state warm
      in L2 as in a decode loop, the host's pace hidden. Median of 15. The target's numerator.
    - Python replay loop: the same 200 replays with the GPU idle at the start: what a Python loop
      of ``graph.replay()`` achieves (bounded by the host when that is slower).
    - graph of 100 / 100: one replay of a 100-step graph behind the spin kernel, per step: GPU time
      with graph launch amortised (round 1's "GPU time"). The target's denominator.
    - kernel time: the two kernels' own durations (profiler, median of 50 eager steps, summed).
    - kernels per replay: every CUDA kernel the profiler sees over 20 replays of the one-step graph,
      divided by 20 (2 = only our two kernels: no copy, cast, fill or RNG-prologue kernel).
    """
    n, dim = args.dstate, args.dim
    lines += ["## One decoding step (selective_state_update + causal_conv1d_update)", "",
              f"dim {dim}, dstate {n}, conv width 4, bf16 activations, fp32 state. µs per step. "
              "Method: `decode_rows` docstring in benchmarks/bench_kernels.py. Target (issue 3): "
              "back-to-back replay ≤ 2 × GPU time (graph of 100 / 100).", "",
              "| batch | plain call | replay, L2 flushed | replay, back to back | Python replay loop "
              "| graph of 100 / 100 | kernel time (conv + ssm) | kernels per replay | back to back / GPU time "
              "| back to back / kernel time |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    cycles_per_ms = _sleep_cycles_per_ms()
    for batch in args.decode_batches:
        try:
            step = _decode_step(batch, dim, n)
            plain_us = bench_ms([step], args.rep) * 1e3
            one, hundred = _capture(step, 1), _capture(step, 100)
            flushed_us = bench_ms([one.replay], args.rep) * 1e3
            t0 = time.perf_counter()
            for _ in range(200):
                one.replay()
            torch.cuda.synchronize()
            host_ms = (time.perf_counter() - t0) * 1e3
            sleep = int(cycles_per_ms * (3 * host_ms + 1.0))
            b2b_us, hidden = _median_replays_us(one, 200, sleep)
            loop_us, _ = _median_replays_us(one, 200, 0)
            gpu_us = _median_replays_us(hundred, 2, sleep)[0] / 100
            eager = _profiled_kernels(step, 50)
            replayed = _profiled_kernels(one.replay, 20)
            kernel_us = (sum(sorted(v)[len(v) // 2] for v in eager.values()) if eager else float("nan"))
            per_replay = (f"{sum(len(v) for v in replayed.values()) / 20:g} ({', '.join(sorted(replayed))})"
                          if replayed else "n/a")
            lines.append(f"| {batch} | {plain_us:.1f} | {flushed_us:.2f} | {b2b_us:.2f}{'' if hidden else ' (*)'} "
                         f"| {loop_us:.2f} | {gpu_us:.2f} | {kernel_us:.2f} | {per_replay} | {b2b_us / gpu_us:.2f}x "
                         f"| {b2b_us / kernel_us:.2f}x |")
            if eager:
                lines[-1] += "  " + ", ".join(f"{k} {sorted(v)[len(v) // 2]:.2f}" for k, v in sorted(eager.items()))
            if not hidden:
                lines.append("(*) the spin kernel ended before the host had queued every replay: host-bound.")
        except Exception as exc:  # one failing size is a result, not a crash of the whole run
            lines.append(f"| {batch} | failed: {type(exc).__name__}: {str(exc)[:120]} | | | | | | | | |")
        print(lines[-1], flush=True)
    lines.append("")


# --- main -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_kernels", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="write the markdown report here (also printed)")
    parser.add_argument("--quick", action="store_true", help="seqlen 1k and 4k only, shorter timing")
    parser.add_argument("--seqlens", default="1024,4096,16384,65536")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--dim", type=int, default=1536)
    parser.add_argument("--dstate", type=int, default=16)
    parser.add_argument("--rep", type=int, default=200, help="do_bench measuring time per row, ms")
    parser.add_argument("--configs", default="16:16:1,32:16:2,32:8:1,16:16:1:0:2,32:8:1:0:2",
                        help="Triton scan launch configurations to sweep at L=4096, "
                             "block_d:chunk:num_warps[:bc_fp32[:bwd_block_d]]")
    parser.add_argument("--ref-max-seqlen", type=int, default=4096, help="longest L for the sequential reference")
    parser.add_argument("--skip-check", action="store_true", help="skip the correctness pre-check")
    parser.add_argument("--paths", default="triton,torch,reference", help="scan implementations to time")
    parser.add_argument("--scan-only", action="store_true", help="skip the conv1d and decoding sections")
    parser.add_argument("--decode-only", action="store_true",
                        help="only the decoding-step rows (no pre-check, scan, sweep or conv1d): under a minute")
    parser.add_argument("--decode-batches", default="1,8,64",
                        help="batch sizes of the decoding-step rows (comma-separated)")
    args = parser.parse_args(argv)
    if args.decode_only and args.scan_only:
        parser.error("--decode-only and --scan-only exclude each other")
    try:
        args.decode_batches = [int(b) for b in args.decode_batches.split(",")]
        if min(args.decode_batches) < 1:
            raise ValueError
    except ValueError:
        parser.error(f"--decode-batches: expected positive integers separated by commas, got {args.decode_batches!r}")
    if not torch.cuda.is_available():
        parser.error("needs a CUDA GPU (the Triton kernels are timed natively)")
    import triton

    seqlens = [int(s) for s in args.seqlens.split(",")]
    if args.quick:
        seqlens, args.rep = [s for s in seqlens if s <= 4096], min(args.rep, 100)
    command = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(sys.argv[1:] if argv is None else argv)])
    lines = [f"# Kernel benchmark ({datetime.date.today().isoformat()})", "",
             f"- command: `{command}`", f"- GPU: {torch.cuda.get_device_name()}",
             f"- torch {torch.__version__}, triton {triton.__version__}, Python {platform.python_version()}",
             "- times: median of triton.testing.do_bench over random inputs (two rotating sets where memory allows)",
             ""]
    t0 = time.perf_counter()
    if not args.decode_only:
        if not args.skip_check:
            precheck(lines)
            print("\n".join(lines), flush=True)
        bw = copy_bandwidth(lines)
        scan_rows(lines, seqlens, bw, args)
        if args.configs:
            config_sweep(lines, args)
    if not args.scan_only:
        if not args.decode_only:
            conv_rows(lines, seqlens, args)
        decode_rows(lines, args)
    lines.append(f"Total benchmark wall time: {time.perf_counter() - t0:.0f} s.")
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
