"""Reproduce the pyrodigal reference figures of issue 9 with ``pipelines.genome.evaluate``.

    .venv/bin/python benchmarks/genome_prodigal_reference.py [--data ../shared/data] [--tolerance 0.005]

For each genome: read the GenBank record (pseudo CDS excluded), run pyrodigal (single-genome mode
with the record's genetic code, meta mode for the phage), evaluate, and compare sensitivity,
precision, exact start and base coding F1 with the issue's table. Prints a Markdown table; exits 1
when any figure is further than the tolerance from the issue's.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

from pipelines.genome.annotation import read_genbank
from pipelines.genome.evaluate import evaluate
from pipelines.genome.prodigal import run_pyrodigal

# name: (file under genomes/, pyrodigal mode, issue-9 sensitivity, precision, exact start, base coding F1)
EXPECTED = {
    "E. coli K-12": (
        "ecoli_k12_mg1655/GCF_000005845.2_ASM584v2_genomic.gbff.gz",
        "single",
        (0.960, 0.954, 0.942, 0.983),
    ),
    "B. subtilis 168": ("bsubtilis_168/Bsub_referencegenome.gb.gz", "single", (0.975, 0.977, 0.906, 0.992)),
    "M. genitalium (code 4)": ("mgenitalium_g37/Mgen_referencegenome.gb.gz", "single", (0.984, 0.962, 0.917, 0.989)),
    "Yersinia phage (meta)": ("yersinia_phage_fhe_yen9_03/LT960552.gbk.gz", "meta", (0.987, 0.991, 0.949, 0.996)),
}
HEADER = (
    "| genome | mode | code | ref CDS | calls | sensitivity | precision | exact start | base coding F1 "
    "| issue figures | max abs diff | pyrodigal s |"
)


def measure(path: str, mode: str) -> dict:
    """pyrodigal against the annotation of one GenBank file: figures, counts, genetic code, seconds."""
    sequences = read_genbank(path)
    reference = [c for s in sequences for c in s.cds]
    start = time.perf_counter()
    calls, _ = run_pyrodigal(sequences, mode)
    seconds = time.perf_counter() - start
    m = evaluate(calls, reference, {s.id: len(s) for s in sequences})
    return {
        "figures": (m.sensitivity, m.precision, m.exact_start, m.coding_f1),
        "n_reference": m.n_reference,
        "n_predicted": m.n_predicted,
        "code": sequences[0].transl_table,
        "seconds": seconds,
    }


def main(argv: list[str] | None = None) -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.path.join(here, "..", "..", "shared", "data"))
    parser.add_argument("--tolerance", type=float, default=0.005)
    args = parser.parse_args(argv)
    import pyrodigal

    machine = platform.processor() or platform.machine()
    print(f"pyrodigal {pyrodigal.__version__}, Python {platform.python_version()}, {machine}, {os.cpu_count()} cores")
    print()
    print(HEADER)
    print("|---" * HEADER.count(" | ") + "|---|")
    worst = 0.0
    for name, (rel, mode, expected) in EXPECTED.items():
        r = measure(os.path.join(args.data, "genomes", rel), mode)
        diff = max(abs(a - b) for a, b in zip(r["figures"], expected))
        worst = max(worst, diff)
        cells = " | ".join(f"{v:.4f}" for v in r["figures"])
        issue = "/".join(f"{v:.3f}" for v in expected)
        counts = f"{r['code']} | {r['n_reference']} | {r['n_predicted']}"
        print(f"| {name} | {mode} | {counts} | {cells} | {issue} | {diff:.4f} | {r['seconds']:.1f} |")
    ok = worst <= args.tolerance
    print()
    print(f"largest difference {worst:.4f} ({'within' if ok else 'OUTSIDE'} tolerance {args.tolerance})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
