"""How many sequence segments the "v4" backward should take, by batch and length (issue 3, K6).

    python3 benchmarks/bench_bwd_segments.py --out $OUT/bwd_segments.md

Sweep 5 (``results/h200_bwd_sweep5.md``) found v4 at a 128-register cap fastest with 8 segments at
every batch it tried (1, 2, 4, 8), although at batch 8 two segments already fill the SMs' resident
slots: the segment rule of round 4 (fill the slots, no more) does not carry over. This grid times
forward+backward (median of ``triton.testing.do_bench``, issue 3's dim 1536 / dstate 16, bf16,
random Mamba-block-like inputs, B/C (batch, 1, dstate, L)) of v4 16:1:16 with a 128-register cap for
segments 1-32 at batches 1-32 and lengths 1k / 4k / 16k, and uncapped at the batch-8 row, so the
default's rule rests on measurements. Under three minutes on an H200.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "benchmarks"):  # run by path from anywhere
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from bench_bwd_sweep import timing_closures  # noqa: E402

from kernels.selective_scan import triton_scan  # noqa: E402

SEGMENTS = (1, 2, 4, 8, 16, 32)


def v4(segments: int, cap: int | None = 128) -> triton_scan.ScanConfig:
    return triton_scan.ScanConfig(16, 16, 1, bwd_kernel="v4", bwd_block_d=16, bwd_num_warps=1,
                                  bwd_segments=segments, bwd_maxnreg=cap)


def fwd_bwd_ms(size: dict, rep_ms: int, device) -> float:
    """Median ms of forward+backward for the current config (the forward alone is not needed here)."""
    import triton.testing

    _, fwd_bwd = timing_closures(**size, device=device)
    return float(triton.testing.do_bench(fwd_bwd, warmup=max(10, rep_ms // 4), rep=rep_ms, return_mode="median"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path)
    p.add_argument("--rep", type=int, default=60, help="do_bench measuring time per timing, ms")
    p.add_argument("--grid", default="1:4096,2:4096,4:4096,8:1024,8:4096,8:16384,16:4096,32:4096",
                   help="batch:seqlen pairs")
    args = p.parse_args(argv)
    device = "cuda"
    t0 = time.time()
    grid = [tuple(int(x) for x in pair.split(":")) for pair in args.grid.split(",")]
    lines = ["# Segments of the v4 backward (issue 3, K6)", "",
             f"- command: `python3 benchmarks/bench_bwd_segments.py --grid {args.grid}`",
             f"- device: {torch.cuda.get_device_name()}; torch {torch.__version__}, "
             f"triton {__import__('triton').__version__}",
             "- fwd+bwd ms, median of triton.testing.do_bench, dim 1536, dstate 16, bf16, z, D, bias, "
             "softplus, B/C (batch, 1, 16, L); v4 16:1:16, 128-register cap unless marked", "",
             "| batch | seqlen | " + " | ".join(f"seg {s}" for s in SEGMENTS) + " | seg 8 uncapped | best | rule now |",
             "|---" * (len(SEGMENTS) + 5) + "|"]
    for batch, seqlen in grid:
        size = dict(batch=batch, dim=1536, seqlen=seqlen, dstate=16)
        cells = {}
        for seg in SEGMENTS:
            triton_scan.CONFIG_OVERRIDE = v4(seg)
            cells[seg] = fwd_bwd_ms(size, args.rep, device)
        triton_scan.CONFIG_OVERRIDE = v4(8, None)
        uncapped = fwd_bwd_ms(size, args.rep, device)
        triton_scan.CONFIG_OVERRIDE = None
        best = min(cells, key=cells.get)
        rule = triton_scan.default_config(1536, seqlen, 16, 2, batch, triton_scan._sm_count(torch.device(device)))
        row = (f"| {batch} | {seqlen} | " + " | ".join(f"{cells[s]:.3f}" for s in SEGMENTS)
               + f" | {uncapped:.3f} | seg {best} | {rule.bwd_kernel} seg {rule.bwd_segments} |")
        lines.append(row)
        print(row, flush=True)
    lines += ["", f"{time.time() - t0:.0f} s in all"]
    text = "\n".join(lines) + "\n"
    if args.out:
        args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
