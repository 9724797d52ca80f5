"""Reader throughput on CPU: tokenised bases/s from gzipped FASTA, windows/s from a CSV.

The readers must not limit GPU training: compare these with the training step's tokens/s.
Medians over ``--repeats`` runs; single process, no DataLoader workers.

    .venv/bin/python benchmarks/bench_readers.py [--root ../shared/data] [--repeats 5]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch

from pipelines.data.datamodules import DNAClassificationDataModule, ForecastDataModule
from pipelines.data.fasta import read_sequences, tokenize
from pipelines.data.paths import default_root
from pipelines.data.splits import PRESETS
from pipelines.data.timeseries import read_series_csv


def median_time(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def tokenise_file(path: Path) -> tuple[int, int]:
    bases = records = 0
    for record in read_sequences(path):
        bases += len(tokenize(record.seq))
        records += 1
    return records, bases


def iterate_windows(module: ForecastDataModule) -> int:
    return sum(len(batch["x"]) for batch in module.train_dataloader())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=default_root())
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch thread, "
          f"Python {platform.python_version()}, median of {args.repeats}")

    fasta = {
        "yeast genome (17 records, gzip)":
            "genomes/scerevisiae_s288c_r64/Saccharomyces_cerevisiae.R64-1-1.dna.toplevel.fa.gz",
        "gue_prom_core_notata train (70 bp, gzip)": "gue_prom_core_notata/train.fa.gz",
    }
    for label, rel in fasta.items():
        seconds, (records, bases) = median_time(lambda rel=rel: tokenise_file(args.root / rel), args.repeats)
        print(f"| FASTA read + tokenize | {label} | {records:,} records, {bases / 1e6:.2f} Mb | {seconds:.2f} s | "
              f"{bases / seconds / 1e6:.1f} Mbases/s, {records / seconds:,.0f} records/s |")

    # Per-epoch cost of the DNA training loader (sequences are tokenised once, at setup).
    dna = DNAClassificationDataModule(dataset="gue_prom_core_notata", root=str(args.root), batch_size=256, seed=0)
    dna.setup("fit")
    seconds, tokens = median_time(lambda: sum(int(b["lengths"].sum()) for b in dna.train_dataloader()), args.repeats)
    print(f"| DNA train loader (RC augment, batch 256) | gue_prom_core_notata train | {tokens / 1e6:.2f} M tokens | "
          f"{seconds:.2f} s | {tokens / seconds / 1e6:.2f} M tokens/s |")

    for preset, horizon in (("exchange_rate", 96), ("ETTh1", 720)):
        csv = args.root / PRESETS[preset].path
        seconds, frame = median_time(lambda csv=csv: read_series_csv(csv), args.repeats)
        print(f"| CSV read + validate | {preset} | {frame.shape[0]:,} rows x {frame.shape[1]} | {seconds:.3f} s | "
              f"{frame.shape[0] / seconds:,.0f} rows/s |")
        module = ForecastDataModule(dataset=preset, root=str(args.root), input_len=96, horizon=horizon, batch_size=32)
        module.setup("fit")
        seconds, windows = median_time(lambda module=module: iterate_windows(module), args.repeats)
        print(f"| windows (train loader, batch 32) | {preset}, 96 -> {horizon} | {windows:,} windows | "
              f"{seconds:.2f} s | {windows / seconds:,.0f} windows/s |")


if __name__ == "__main__":
    main()
