"""Throughput of the gene-call decoder and the GFF3 writer on a whole bacterial genome.

    .venv/bin/python benchmarks/bench_genome_decoder.py [--genome PATH] [--repeats 5]

Probabilities are synthetic but realistic in shape: the reference labels of the genome with 0.9 on
the true class, mixed 30 % with Dirichlet noise, so the decoder sees as many positive ORFs as a
decent model would produce. Reports the median wall time of ``decode`` (circular genome) and of
``write_gff3``, bases per second, and the calls' metrics against the annotation.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time

import numpy as np

from pipelines.genome.annotation import read_genbank
from pipelines.genome.decoder import decode
from pipelines.genome.evaluate import evaluate
from pipelines.genome.gff3 import write_gff3
from pipelines.genome.labels import cds_labels

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT = os.path.join(
    HERE, "..", "..", "shared", "data", "genomes", "ecoli_k12_mg1655", "GCF_000005845.2_ASM584v2_genomic.gbff.gz"
)


def synthetic_probs(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """(L, 2) labels -> (L, 2, 4) probabilities: 0.9 on the label, 30 % Dirichlet noise."""
    rng = np.random.default_rng(seed)
    probs = np.full(labels.shape + (4,), 0.1 / 3, dtype=np.float32)
    np.put_along_axis(probs, labels[:, :, None].astype(np.int64), 0.9, axis=2)
    noise = rng.dirichlet(np.ones(4), size=labels.shape).astype(np.float32)
    return 0.7 * probs + 0.3 * noise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--genome", default=DEFAULT)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    (seq,) = read_genbank(args.genome)[:1]
    probs = synthetic_probs(cds_labels(len(seq), seq.cds))
    decode_times, write_times = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            start = time.perf_counter()
            calls = decode(seq.seq, probs, seqid=seq.id, transl_table=seq.transl_table, circular=seq.circular)
            decode_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            write_gff3(os.path.join(tmp, "calls.gff3"), calls, {seq.id: (len(seq), seq.circular)}, {seq.id: seq.seq})
            write_times.append(time.perf_counter() - start)
    m = evaluate(calls, seq.cds, {seq.id: len(seq)})
    dec, wr = statistics.median(decode_times), statistics.median(write_times)
    print(
        f"{seq.id}: {len(seq):,} bp, {len(calls)} calls; {platform.machine()}, {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print(f"decode     median {dec:.2f} s over {args.repeats} runs ({len(seq) / dec / 1e6:.2f} Mb/s)")
    print(f"write_gff3 median {wr * 1000:.0f} ms")
    print(
        f"calls vs annotation: sensitivity {m.sensitivity:.4f}, precision {m.precision:.4f}, "
        f"exact start {m.exact_start:.4f}, coding F1 {m.coding_f1:.4f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
