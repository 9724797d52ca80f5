"""How large a genome the app's genome page can annotate interactively on a CPU.

    .venv/bin/python benchmarks/bench_app_genome.py [--model PACKAGE] [--repeats 3] [--threads N]

Times ``pipelines.genome.predict.call_genes`` (what the page runs: stitched windows, the part-1
decoder) on the phage lambda sample (48.5 kb), after one warm-up call (numba compiles on first use).
Without ``--model`` the network is the shipped gene caller's architecture
(``pipelines/configs/genome_tagger.yaml``) with random weights; its speed does not depend on the
weights. Reports the median wall time, bases per second, the machine, and the genome size that
scores in 60 and 120 seconds at that rate.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import yaml

from pipelines.data.fasta import read_sequences
from pipelines.genome.predict import call_genes
from seqmodels import MambaTagger

REPO = Path(__file__).resolve().parents[1]
LAMBDA = REPO / "data" / "samples" / "phage_lambda_NC_001416.fa"
CONFIG = REPO / "pipelines" / "configs" / "genome_tagger.yaml"


def shipped_architecture() -> MambaTagger:
    """The gene caller of genome_tagger.yaml, randomly initialised (checkpointing is a training option)."""
    args = yaml.safe_load(CONFIG.read_text())["model"]["init_args"]["network"]["init_args"]
    args = {**args, "checkpointing": False}
    torch.manual_seed(0)
    return MambaTagger(**args).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a gene-caller package folder (default: the shipped architecture)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model:
        from seqmodels.package import load_package

        model = load_package(args.model)[0].eval()
    else:
        model = shipped_architecture()
    records = list(read_sequences(LAMBDA))
    bases = sum(len(r.seq) for r in records)
    call_genes(model, records[:1], window=2_000, overlap=500)  # warm-up: numba compilation, allocator
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        call_genes(model, records)
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    rate = bases / median
    params = sum(p.numel() for p in model.parameters())
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"model: {args.model or 'genome_tagger.yaml architecture (random weights)'}, {params:,} parameters")
    print(f"phage lambda, {bases:,} bp: median {median:.1f} s of {args.repeats} "
          f"({', '.join(f'{t:.1f}' for t in times)}); {rate:,.0f} bp/s")
    print(f"genome scored in 60 s: {rate * 60:,.0f} bp; in 120 s: {rate * 120:,.0f} bp")


if __name__ == "__main__":
    main()
