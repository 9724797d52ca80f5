"""Sweep of the selective-scan backward kernels on the GPU (issue 3, tasks K1, K1b, K4, K5).

    python3 benchmarks/bench_bwd_sweep.py --out $OUT/bwd_sweep.md

For each variant (the old backward "v1" at its default, "v2" and "v3" (v2 reading the pre-gate
output the forward stores) at several block_d:num_warps:chunk launches, "partials": dB/dC channel
sums stored per program instead of atomics; "seg N": the backward split into N sequence-parallel
segments; "fast softplus": softplus without the MUFU): a correctness check of out and every gradient against the
float64 reference on a small random problem, bf16, every option on (z, D, delta_bias, softplus,
B/C (batch, 1, dstate, seqlen)), and a second with time-invariant B/C plus initial_state and a
loss on the last state; then the median of ``triton.testing.do_bench`` of forward and of
forward+backward at issue 3's size (batch 8, dim 1536, dstate 16, bf16, random data) at seqlen 4k
for every variant, and at 1k/16k/64k for v1, the fastest two unsegmented v3 variants and the fastest two
segmented ones; then, at batch 1, 2 and 4 (a grid that fills fewer warps per SM), the one-warp launch
with each segment count at 4k and 16k, beside the count ``triton_scan.backward_segments`` picks.
One variant failing (compile error, wrong gradients) is reported and the sweep goes on. Under four minutes on an H200.

``--smoke`` (CPU, ``TRITON_INTERPRET=1``): tiny sizes, float32, no do_bench; checks that the
script runs end to end.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run by path from anywhere
    sys.path.insert(0, str(ROOT))

from kernels.selective_scan import triton_scan  # noqa: E402
from kernels.selective_scan.reference import selective_scan_ref  # noqa: E402
from kernels.selective_scan.triton_bwd_v2 import scan_bwd_v2_kernel  # noqa: E402
from kernels.selective_scan.triton_bwd_v4 import scan_bwd_v4_kernel  # noqa: E402

GRAD_NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state")
# Relative-error limits of the check: bf16 inputs/outputs on the GPU (as the gpu tests), fp32 in
# the interpreter.
TOL = {torch.bfloat16: 2e-2, torch.float32: 1e-4}


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    cfg: triton_scan.ScanConfig


DEFAULT_NAME = "v4 16:1:16 seg 8 r128 (default at batch 8)"


def variants() -> list[Variant]:
    """v1 (the first default), v3 16:2:32 (round 3's default) and v3 16:1:16 with two segments
    (round 4's) as baselines, then "v4" (round 5) uncapped and capped: at 128 registers with 8
    segments it is the GPU default at this batch (sweep 5, `results/h200_bwd_sweep5.md`), the
    segments chosen per problem by ``triton_scan.backward_segments``. Left out after the offline
    sm_90 compile (benchmarks/NOTES.md, K1 and K1b): v2 64:2:16 and 32:1:16 (254-255 registers),
    16:1:32 (stack), 8:1:32, 32:1:8; v3 16:2:16. Left out after H200 sweeps 2 and 3 (slower there):
    every v2 launch, partials, 16:4:32, 16:4:64, 16:2:32 with segments, 8:1:16 with segments, fast
    softplus, a 128-register cap on v3."""
    out = [Variant("v1 bwd_block_d 4", triton_scan.ScanConfig(16, 16, 1))]
    # (kernel, block_d, warps, backward chunk, segments): the forward keeps chunk 16 (the first H200
    # sweep: a chunk-32 forward took 13 ms at 4k instead of 0.79); a longer backward chunk reads
    # every second stored state (bwd_chunk_factor).
    # Round 5 (K5): "v4" (in-lane folds, benchmarks/NOTES.md) uncapped and at register caps of 128
    # (16 one-warp programs per SM) and 112 (18), with the segments the rule gives those slots.
    # Sweep 4's v3 16:1:16 with 3 / 4 / 8 segments made room for them (results/h200_bwd_sweep4.md).
    launches = [("v3", 16, 2, 32, 1, None), ("v3", 16, 1, 16, 1, None), ("v3", 16, 1, 16, 2, None),
                ("v4", 16, 1, 16, 1, None), ("v4", 16, 1, 16, 2, None), ("v4", 16, 1, 16, 2, 128),
                ("v4", 16, 1, 16, 3, 112), ("v4", 16, 1, 16, 8, 128)]
    for kernel, block_d, warps, chunk, segments, cap in launches:
        cfg = triton_scan.ScanConfig(16, 16, 1, bwd_kernel=kernel, bwd_block_d=block_d, bwd_num_warps=warps,
                                     bwd_chunk_factor=chunk // 16, bwd_segments=segments, bwd_maxnreg=cap)
        name = (f"{kernel} {block_d}:{warps}:{chunk}{f' seg {segments}' if segments > 1 else ''}"
                f"{f' r{cap}' if cap else ''}")
        out.append(Variant(DEFAULT_NAME if name == "v4 16:1:16 seg 8 r128" else name, cfg))
    return out


def make_inputs(batch, dim, seqlen, dstate, *, dtype, device, seed, invariant=False):
    """Mamba-block-like random inputs (never zeros): A = -(1..dstate), Δ before softplus ~ N(-1, 1)
    plus a bias, B/C one group (batch, 1, dstate, seqlen) or time-invariant (dim, dstate)."""
    g = torch.Generator(device=device).manual_seed(seed)

    def r(*shape, dt=dtype):
        return torch.randn(*shape, generator=g, device=device, dtype=torch.float32).to(dt)

    bc_shape = (dim, dstate) if invariant else (batch, 1, dstate, seqlen)
    return dict(
        u=r(batch, dim, seqlen), delta=(r(batch, dim, seqlen, dt=torch.float32) - 1.0).to(dtype),
        A=-torch.arange(1, dstate + 1, device=device, dtype=torch.float32).repeat(dim, 1),
        B=r(*bc_shape), C=r(*bc_shape), D=r(dim, dt=torch.float32), z=r(batch, dim, seqlen),
        delta_bias=0.5 * r(dim, dt=torch.float32), initial_state=r(batch, dim, dstate, dt=torch.float32),
    )


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def _grads(fn, inputs, *, with_state: bool, work_dtype=None, seed=1):
    """out and every gradient of a random-cotangent loss on out (and the last state)."""
    leaves = {k: (v.to(work_dtype) if work_dtype else v).detach().clone().requires_grad_()
              for k, v in inputs.items() if with_state or k != "initial_state"}
    args = [leaves[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]
    out, last = fn(*args, True, True, initial_state=leaves.get("initial_state"))
    g = torch.Generator(device=out.device).manual_seed(seed)
    loss = (out.double() * torch.randn(out.shape, generator=g, device=out.device, dtype=torch.float64)).sum()
    if with_state:
        loss = loss + (last.double() * torch.randn(last.shape, generator=g, device=out.device,
                                                   dtype=torch.float64)).sum()
    loss.backward()
    return out, {k: v.grad for k, v in leaves.items()}


def check(problem: dict, dtype, *, invariant: bool) -> tuple[float, str]:
    """Largest relative error (out and every gradient) of the current config against float64 on
    the same rounded inputs, and the name of the worst quantity."""
    inputs = make_inputs(**problem, dtype=dtype, seed=7, invariant=invariant)
    out, grads = _grads(triton_scan.selective_scan_triton, inputs, with_state=invariant)
    ref_out, ref_grads = _grads(selective_scan_ref, inputs, with_state=invariant, work_dtype=torch.float64)
    errors = {"out": rel_err(out, ref_out)}
    errors.update({f"d{k}": rel_err(grads[k], ref_grads[k]) for k in grads})
    worst = max(errors, key=lambda k: errors[k] if errors[k] == errors[k] else float("inf"))  # NaN is worst
    return errors[worst], worst


def timing_closures(batch, dim, seqlen, dstate, device):
    """(forward, forward+backward) closures on random bf16 inputs as the training step calls them
    (inputs require grad, so the forward stores its chunk states)."""
    t = make_inputs(batch, dim, seqlen, dstate, dtype=torch.bfloat16, device=device, seed=seqlen)
    t.pop("initial_state")
    leaves = [t[k].requires_grad_() for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]
    dout = torch.randn(batch, dim, seqlen, device=device, dtype=torch.bfloat16)

    def fwd():
        return triton_scan.selective_scan_triton(*leaves, True)

    def fwd_bwd():
        return torch.autograd.grad(fwd(), leaves, dout)

    return fwd, fwd_bwd


def bench_pair(size: dict, rep_ms: int, device) -> tuple[float, float]:
    """Median ms of forward and of forward+backward for the current config (NaN on the CPU, where
    each closure only runs once: the smoke run exercises the code, it measures nothing)."""
    import triton.testing

    fwd, fwd_bwd = timing_closures(**size, device=device)
    if device == "cpu":
        fwd_bwd()
        return float("nan"), float("nan")
    warmup = max(10, rep_ms // 4)
    f = triton.testing.do_bench(fwd, warmup=warmup, rep=rep_ms, return_mode="median")
    fb = triton.testing.do_bench(fwd_bwd, warmup=warmup, rep=rep_ms, return_mode="median")
    return float(f), float(fb)


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"


def compiled_kernels(fn) -> dict[int, tuple]:
    """{id: (registers, spills, warps)} of every compiled specialisation of a Triton kernel so far
    (read from the JIT's per-device cache; empty where this Triton version keeps it elsewhere)."""
    found = {}
    for entry in (getattr(fn, "device_caches", None) or {}).values():
        cache = entry[0] if isinstance(entry, tuple) else entry
        for kernel in getattr(cache, "values", lambda: [])():
            found[id(kernel)] = (getattr(kernel, "n_regs", None), getattr(kernel, "n_spills", None),
                                 getattr(getattr(kernel, "metadata", None), "num_warps", None))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_bwd_sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="write the markdown tables here (also printed)")
    parser.add_argument("--smoke", action="store_true", help="CPU interpreter, tiny sizes, no timing")
    parser.add_argument("--rep", type=int, default=100, help="do_bench measuring time per timing, ms")
    parser.add_argument("--seqlens", default="1024,16384,65536", help="further seqlens for the best variants")
    parser.add_argument("--batches", default="1,2,4", help="smaller batches for the default against its segments")
    parser.add_argument("--batch-seqlens", default="4096,16384", help="seqlens of the smaller-batch table")
    args = parser.parse_args(argv)

    if args.smoke:
        if os.environ.get("TRITON_INTERPRET") != "1":
            parser.error("--smoke runs in Triton's interpreter: set TRITON_INTERPRET=1 before starting Python")
        device, dtype = "cpu", torch.float32
        problem = dict(batch=1, dim=8, seqlen=37, dstate=3)  # 2 backward chunks of 32, 3 of 16
        size = dict(batch=1, dim=8, seqlen=16, dstate=2)
        args.seqlens = "8,33"
        args.batches, args.batch_seqlens = "2", "24"
    else:
        if not torch.cuda.is_available():
            parser.error("needs a CUDA GPU (or --smoke with TRITON_INTERPRET=1)")
        device, dtype = "cuda", torch.bfloat16
        # Sizes divisible by 16 like the timed problem, so the check compiles the timed specialisation.
        problem = dict(batch=2, dim=256, seqlen=512, dstate=16)
        size = dict(batch=8, dim=1536, seqlen=4096, dstate=16)
    tol = TOL[dtype]
    main_l = size["seqlen"]  # every variant is timed here; the best ones at --seqlens too
    t0 = time.perf_counter()
    rows: dict[str, dict] = {}

    reg_lines = ["", "Backward kernels compiled for each variant (registers per thread, spilled bytes, warps):", ""]
    for var in variants():
        row = rows[var.name] = {"cfg": var.cfg}
        before = {**compiled_kernels(scan_bwd_v2_kernel), **compiled_kernels(scan_bwd_v4_kernel)}
        triton_scan.CONFIG_OVERRIDE = var.cfg
        try:
            for label, invariant in (("check", False), ("check_inv", True)):
                err, worst = check(dict(problem, device=device), dtype, invariant=invariant)
                row[label] = f"{'PASS' if err <= tol else 'FAIL'} {err:.1e} ({worst})"
            print(f"[{time.perf_counter() - t0:6.1f}s] {var.name}: {row['check']}; invariant B/C: "
                  f"{row['check_inv']}", flush=True)
            row[main_l] = bench_pair(size, args.rep, device)
            print(f"[{time.perf_counter() - t0:6.1f}s] {var.name}: L={main_l} fwd {row[main_l][0]:.3f} ms, "
                  f"fwd+bwd {row[main_l][1]:.3f} ms", flush=True)
        except Exception as exc:  # a variant that fails to compile or run must not stop the sweep
            row["error"] = _short(exc)
            print(f"{var.name}: failed: {row['error']}", flush=True)
            traceback.print_exc()
        finally:
            triton_scan.CONFIG_OVERRIDE = None
            now = {**compiled_kernels(scan_bwd_v2_kernel), **compiled_kernels(scan_bwd_v4_kernel)}
            new = [v for k, v in now.items() if k not in before]
            reg_lines.append(f"- {var.name}: " + (", ".join(f"{r} regs / {sp} spilled / {w} warps" for r, sp, w in new)
                                                    or "no new v2/v3/v4 compile"))

    # v1, the fastest two unsegmented and the fastest two segmented v3 variants that passed both
    # checks, at the other lengths.
    def passed(r):
        return "error" not in r and r.get("check", "").startswith("PASS") and r.get("check_inv", "").startswith("PASS")

    timed = [n for n, r in rows.items() if passed(r) and main_l in r]

    def fastest(kernel, k, segmented=False):
        names = (n for n in timed if rows[n]["cfg"].bwd_kernel == kernel
                 and (rows[n]["cfg"].bwd_segments > 1) == segmented)
        return sorted(names, key=lambda n: rows[n][main_l][1])[:k]

    finalists = (fastest("v1", 1) + fastest("v3", 1) + fastest("v3", 1, segmented=True)
                 + fastest("v4", 2, segmented=True))
    seqlens = [int(s) for s in args.seqlens.split(",") if s]
    for seqlen in seqlens:
        for name in finalists:
            _bench_into(rows[name], seqlen, name, dict(size, seqlen=seqlen), args.rep, device, t0)

    # Smaller batches: the default launch against its own segmented forms, at a few lengths.
    small = [n for n in rows if n == DEFAULT_NAME or n.startswith(("v3 16:1:16", "v4 16:1:16 seg"))]
    batches = [int(b) for b in args.batches.split(",") if b]
    batch_seqlens = [int(s) for s in args.batch_seqlens.split(",") if s]
    for batch in batches:
        for seqlen in batch_seqlens:
            for name in small:
                if passed(rows[name]):
                    _bench_into(rows[name], (batch, seqlen), name, dict(size, batch=batch, seqlen=seqlen),
                                args.rep, device, t0)

    lines = report(rows, finalists, seqlens, main_l, args, problem, size, dtype, time.perf_counter() - t0)
    lines += batch_report(rows, small, batches, batch_seqlens)
    sms = torch.cuda.get_device_properties(0).multi_processor_count if device == "cuda" else 132
    lines += ["", f"Segments the default picks (`backward_segments`, {sms} SMs, dim {size['dim']}): " + ", ".join(
        f"batch {b}: {triton_scan.backward_segments(b, size['dim'], 16, sms)}" for b in [*batches, size["batch"]])]
    lines += reg_lines
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0 if all(passed(r) for r in rows.values()) else 1


def _bench_into(row: dict, key, name: str, size: dict, rep_ms: int, device, t0: float) -> None:
    """Time the variant of ``row`` at ``size``; store (fwd, fwd+bwd) ms or the error under ``key``."""
    triton_scan.CONFIG_OVERRIDE = row["cfg"]
    try:
        row[key] = bench_pair(size, rep_ms, device)
        print(f"[{time.perf_counter() - t0:6.1f}s] {name}: batch {size['batch']} L={size['seqlen']} fwd "
              f"{row[key][0]:.3f} ms, fwd+bwd {row[key][1]:.3f} ms", flush=True)
    except Exception as exc:
        row[key] = _short(exc)
        print(f"{name}: batch {size['batch']} L={size['seqlen']} failed: {row[key]}", flush=True)
    finally:
        triton_scan.CONFIG_OVERRIDE = None
        if device == "cuda":
            torch.cuda.empty_cache()


def _cell(v) -> str:
    return f"{v[1]:.3f} ({v[0]:.3f})" if isinstance(v, tuple) else (v or "—").replace("|", "/")


def batch_report(rows, names, batches, seqlens) -> list[str]:
    """Markdown: fwd+bwd (fwd) ms of the default and its segmented forms at smaller batches."""
    keys = [(b, s) for b in batches for s in seqlens]
    if not any(k in rows[n] for n in names for k in keys):
        return []
    lines = ["", "Smaller batches (fewer programs per SM), fwd+bwd ms (fwd ms):", "",
             "| variant | " + " | ".join(f"batch {b}, {s // 1024}k" if s % 1024 == 0 else f"batch {b}, {s}"
                                       for b, s in keys) + " |",
             "|---|" + "---|" * len(keys)]
    for name in names:
        lines.append(f"| {name} | " + " | ".join(_cell(rows[name].get(k)) for k in keys) + " |")
    return lines


def report(rows, finalists, seqlens, main_l, args, problem, size, dtype, elapsed_s) -> list[str]:
    """Markdown: setting, then one table at 4k for all variants and one over lengths for the best."""
    import triton

    on_gpu = torch.cuda.is_available() and not args.smoke
    device = torch.cuda.get_device_name() if on_gpu else "CPU (Triton interpreter, smoke run: nothing timed)"
    shape = lambda p: ", ".join(f"{k} {v}" for k, v in p.items())  # noqa: E731
    lines = ["# Selective-scan backward sweep (issue 3, K1 / K1b / K4)", "",
             f"- command: `python3 {' '.join(sys.argv)}`",
             f"- device: {device}; torch {torch.__version__}, triton {triton.__version__}; {elapsed_s:.0f} s in all",
             f"- check: {str(dtype).replace('torch.', '')}, {shape(problem)}, B/C (batch, 1, dstate, seqlen), "
             "z, D, delta_bias, softplus; max norm-wise relative error of out and every gradient vs float64 "
             f"on the same inputs (PASS <= {TOL[dtype]:g}); 'invariant': B/C (dim, dstate), initial_state, "
             "loss on the last state too",
             f"- timing: {shape(size)} (first table), bf16, B/C (batch, 1, dstate, L), softplus, z, "
             f"D, bias; median of triton.testing.do_bench (rep {args.rep} ms); forward with inputs requiring "
             "grad; bwd = fwd+bwd - fwd", "",
             "| variant (bwd block_d:warps:chunk) | check | check, invariant B/C | fwd ms | fwd+bwd ms | bwd ms |",
             "|---|---|---|---|---|---|"]
    for name, r in rows.items():
        if "error" in r:
            lines.append(f"| {name} | failed: {r['error'].replace('|', '/')} | | | | |")
            continue
        t = r.get(main_l)
        times = f"{t[0]:.3f} | {t[1]:.3f} | {t[1] - t[0]:.3f}" if t else "— | — | —"
        lines.append(f"| {name} | {r.get('check', '—')} | {r.get('check_inv', '—')} | {times} |")
    if finalists and any(s in rows[n] for n in finalists for s in seqlens):
        all_l = sorted({main_l, *seqlens})
        lines += ["", "fwd+bwd ms (fwd ms) over sequence lengths:", "",
                  "| variant | " + " | ".join(f"{s // 1024}k" if s % 1024 == 0 else str(s) for s in all_l) + " |",
                  "|---|" + "---|" * len(all_l)]
        for name in finalists:
            lines.append(f"| {name} | " + " | ".join(_cell(rows[name].get(s)) for s in all_l) + " |")
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
