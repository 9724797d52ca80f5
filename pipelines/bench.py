"""``seqmamba bench``: the GPU kernel benchmark, ``benchmarks/bench_kernels.py`` run from the source tree."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_kernels.py"


def main(argv: list[str]) -> int:
    """Load the benchmark script by path (benchmarks/ is not an installed package) and run it."""
    if not SCRIPT.is_file():
        raise FileNotFoundError(f"{SCRIPT} not found: `seqmamba bench` needs a source checkout of seqmamba")
    spec = importlib.util.spec_from_file_location("seqmamba_bench_kernels", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return int(module.main(argv) or 0)
