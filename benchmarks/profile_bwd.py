"""One forward+backward of the selective scan at issue 3's size, for a GPU profiler (issue 3).

    ncu --kernel-name regex:scan_bwd_v2 --launch-skip 2 --launch-count 1 --section Occupancy \\
        --section SchedulerStats --section WarpStateStats --section LaunchStats \\
        python3 benchmarks/profile_bwd.py [--batch 8 --seqlen 4096]

Runs three fwd+bwd passes with the current default launch (the first two compile and warm up, so
``--launch-skip 2`` picks the third) on random bf16 inputs; it measures nothing itself.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.bench_bwd_sweep import timing_closures  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="profile_bwd", description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--dim", type=int, default=1536)
    parser.add_argument("--seqlen", type=int, default=4096)
    parser.add_argument("--dstate", type=int, default=16)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        parser.error("needs a CUDA GPU")
    _, fwd_bwd = timing_closures(args.batch, args.dim, args.seqlen, args.dstate, "cuda")
    for _ in range(3):
        fwd_bwd()
    torch.cuda.synchronize()
    return 0


if __name__ == "__main__":
    sys.exit(main())
