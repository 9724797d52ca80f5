"""Pipelines benchmarks: scoring throughput and the DNA training step.

    # scoring throughput (sequences/s, bases/s) of the GUE-sized classifier, CPU or GPU
    python benchmarks/bench_pipelines.py scoring --device cpu --records 256 --length 300
    # training step tokens/s and peak memory at 1k-128k tokens per sequence (GPU, bf16 autocast)
    python benchmarks/bench_pipelines.py train --device cuda --lengths 1024 8192 32768 131072

Scoring runs :func:`pipelines.scoring.score_records` on in-memory records (the FASTA reader has its
own benchmark, and the GPU machine has no Biopython). The model is the one
``pipelines/configs/gue_prom_core_notata.yaml`` trains (untrained weights: speed does not depend on
them). Each figure is the median of ``--repeats`` timed runs after one warm-up run. Prints a
markdown table (and writes it to ``--out`` if given).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections import namedtuple

import numpy as np
import torch

Record = namedtuple("Record", ["id", "seq"])
GUE_CLASSIFIER = dict(n_classes=2, d_model=128, n_layer=4, bidirectional=True, rc_equivariant=True, pooling="mean")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def bench_scoring(args, device: torch.device) -> list[str]:
    from pipelines import scoring
    from seqmodels.classifier import MambaClassifier

    model = MambaClassifier(**GUE_CLASSIFIER).to(device).eval()
    config = {"class_names": ["negative", "positive"]}
    rng = np.random.default_rng(0)
    rows = ["| records x length | batch | device | sequences/s | bases/s |", "|---|---|---|---|---|"]
    for length in args.length:
        records = [Record(f"r{i}", "".join(rng.choice(list("ACGT"), length))) for i in range(args.records)]
        for batch in args.batch:
            times = []
            for rep in range(args.repeats + 1):
                _sync(device)
                start = time.perf_counter()
                for _ in scoring.score_records(model, config, records, batch_size=batch):
                    pass
                _sync(device)
                if rep:  # the first run warms up (allocator, kernel compilation)
                    times.append(time.perf_counter() - start)
            t = statistics.median(times)
            rows.append(f"| {args.records} x {length} | {batch} | {device.type} | {args.records / t:,.1f} | "
                        f"{args.records * length / t:,.0f} |")
    return rows


def bench_train(args, device: torch.device) -> list[str]:
    from seqmodels.classifier import MambaClassifier

    model = MambaClassifier(**GUE_CLASSIFIER).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    rows = ["| seq length | batch | tokens/step | tokens/s | peak memory (GiB) |", "|---|---|---|---|---|"]
    for length in args.lengths:
        batch = max(1, args.tokens_per_step // length)
        tokens = torch.randint(2, 6, (batch, length), device=device)
        labels = torch.randint(0, 2, (batch,), device=device)
        lengths = torch.full((batch,), length, device=device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        times = []
        try:
            for rep in range(args.repeats + 1):
                _sync(device)
                start = time.perf_counter()
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                    loss = torch.nn.functional.cross_entropy(model(tokens, lengths).float(), labels)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                opt.zero_grad(set_to_none=True)
                _sync(device)
                if rep:
                    times.append(time.perf_counter() - start)
        except torch.OutOfMemoryError:
            rows.append(f"| {length:,} | {batch} | {batch * length:,} | out of memory | |")
            continue
        t = statistics.median(times)
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
        rows.append(f"| {length:,} | {batch} | {batch * length:,} | {batch * length / t:,.0f} | {peak:.2f} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("scoring", "train"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--records", type=int, default=256)
    parser.add_argument("--length", type=int, nargs="+", default=[70, 500])
    parser.add_argument("--batch", type=int, nargs="+", default=[64])
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 8192, 32768, 131072])
    parser.add_argument("--tokens-per-step", type=int, default=131072)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out")
    args = parser.parse_args()
    device = torch.device(args.device)
    rows = bench_scoring(args, device) if args.what == "scoring" else bench_train(args, device)
    header = [f"{args.what} on {_hardware(device)}, torch {torch.__version__}; model: {GUE_CLASSIFIER}", ""]
    text = "\n".join(header + rows)
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
