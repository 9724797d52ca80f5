"""Builders for small hand-written annotation files used across the genome tests."""

import textwrap

import numpy as np
import pytest
import torch


def genbank_text(seq: str, features: list[str], name: str = "TEST1", topology: str = "linear", division: str = "BCT"):
    """A minimal GenBank flat file: ``features`` are (location, qualifier lines...) blocks as written in
    the FEATURES table, e.g. ``"CDS complement(join(25..30,1..3))\\n/transl_table=4"``."""
    lines = [
        f"LOCUS       {name:<16}{len(seq):>12} bp    DNA     {topology:<8} {division} 01-JAN-2000",
        "DEFINITION  hand-built test record.",
        f"ACCESSION   {name}",
        f"VERSION     {name}.1",
        "FEATURES             Location/Qualifiers",
        f"     source          1..{len(seq)}",
    ]
    for block in features:
        head, *quals = textwrap.dedent(block).strip().splitlines()
        key, location = head.split(None, 1)
        lines.append(f"     {key:<16}{location}")
        lines += [f"                     {q.strip()}" for q in quals]
    lines.append("ORIGIN")
    s = seq.lower()
    for i in range(0, len(s), 60):
        chunk = " ".join(s[j : j + 10] for j in range(i, min(i + 60, len(s)), 10))
        lines.append(f"{i + 1:>9} {chunk}")
    lines.append("//")
    return "\n".join(lines) + "\n"


@pytest.fixture
def write_genbank(tmp_path):
    """Write a hand-built GenBank record to a file and return its path."""

    def write(seq, features, filename="rec.gb", **kwargs):
        path = tmp_path / filename
        path.write_text(genbank_text(seq, features, **kwargs))
        return path

    return write


@pytest.fixture
def random_dna():
    def make(n, seed=0):
        return "".join(np.random.default_rng(seed).choice(list("ACGT"), size=n))

    return make


@pytest.fixture(scope="module")
def quick_cpu():
    """Flush subnormals (the CPU scan is ~10x slower on them) and run on one thread: on a loaded
    2-core machine two OpenMP threads waiting on each other made a training step of the tiny tagger
    60x slower (5 s against 0.08 s). Both restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_flush_denormal(True)
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    torch.set_flush_denormal(False)
