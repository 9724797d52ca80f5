"""A 1 GB FASTA streams through the reader and tokenizer in bounded memory (peak RSS, not time)."""

import gzip
import subprocess
import sys
import textwrap

import pytest

GB = 1 << 30

READER = textwrap.dedent("""
    import resource, sys
    from pipelines.data.fasta import read_sequences, tokenize
    bases = records = 0
    for record in read_sequences(sys.argv[1]):
        bases += len(tokenize(record.seq))
        records += 1
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB
    print(records, bases, peak_mb)
""")


def write_fasta(path, total_bytes: int, record_bases: int, opener=open):
    line = b"ACGTTGCAAC" * 6 + b"\n"  # 60 bases a line
    body = line * (record_bases // 60)
    written, index = 0, 0
    with opener(path, "wb") as out:
        while written < total_bytes:
            header = b">rec%08d\n" % index
            out.write(header + body)
            written += len(header) + len(body)
            index += 1
    return index, index * (record_bases // 60) * 60


def peak_rss(path) -> tuple[int, int, float]:
    out = subprocess.run([sys.executable, "-c", READER, str(path)], capture_output=True, text=True, check=True)
    records, bases, peak = out.stdout.split()
    return int(records), int(bases), float(peak)


@pytest.mark.slow
@pytest.mark.parametrize("record_bases", [600, 6_000_000])  # many short records; few chromosome-sized ones
def test_one_gigabyte_fasta_streams_in_bounded_memory(tmp_path, record_bases):
    path = tmp_path / "big.fa"
    n_records, n_bases = write_fasta(path, GB, record_bases)
    records, bases, peak_mb = peak_rss(path)
    assert (records, bases) == (n_records, n_bases)
    # Python + numpy + torch imports take ~300 MB; a record in flight a few times its size. The file is 1 GB.
    assert peak_mb < 500, f"peak RSS {peak_mb:.0f} MB while streaming a 1 GB file"


@pytest.mark.slow
def test_one_gigabyte_gzip_fasta_streams_in_bounded_memory(tmp_path):
    path = tmp_path / "big.fa.gz"
    n_records, n_bases = write_fasta(path, GB, 60_000, opener=lambda p, m: gzip.open(p, m, compresslevel=1))
    records, bases, peak_mb = peak_rss(path)
    assert (records, bases) == (n_records, n_bases)
    assert peak_mb < 500, f"peak RSS {peak_mb:.0f} MB while streaming 1 GB of gzip-compressed FASTA"
