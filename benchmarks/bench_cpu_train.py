"""Whole-process CPU training step of a small Mamba classifier, per scan engine (NOTES C2).

    OMP_NUM_THREADS=1 python benchmarks/bench_cpu_train.py --engine numba
    OMP_NUM_THREADS=1 python benchmarks/bench_cpu_train.py --engine torch

One AdamW step (forward, backward, update) of ``MambaClassifier(d_model, n_layer=4,
bidirectional=True)`` on random tokens of a GUE-sized batch (256 x 70 by default); prints the
median of ``--steps`` timed steps after one untimed warm-up step (numba compiles there).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kernels.selective_scan import chunked  # noqa: E402
from seqmodels.classifier import MambaClassifier  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--engine", choices=chunked.ENGINES, required=True)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--seqlen", type=int, default=70)
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--rc", action="store_true", help="rc_equivariant (two strands per layer)")
    p.add_argument("--steps", type=int, default=3)
    args = p.parse_args()
    real = chunked._choose_engine
    chunked._choose_engine = lambda engine, tensors: real(engine or args.engine, tensors)
    torch.manual_seed(0)
    model = MambaClassifier(n_classes=2, d_model=args.d_model, n_layer=4, bidirectional=True, rc_equivariant=args.rc)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    tokens = torch.randint(0, 4, (args.batch, args.seqlen))
    labels = torch.randint(0, 2, (args.batch,))
    times = []
    for step in range(args.steps + 1):
        t0 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(tokens), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step:
            times.append(time.perf_counter() - t0)
    print(f"engine {args.engine}: step median {statistics.median(times):.2f} s "
          f"({', '.join(f'{t:.2f}' for t in times)}), threads {torch.get_num_threads()}, loss {loss.item():.4f}")


if __name__ == "__main__":
    main()
