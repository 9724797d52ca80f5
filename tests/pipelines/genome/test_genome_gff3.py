"""GFF3 output is valid, parses back to the same calls, and bad GFF3 is reported by line; bedGraph runs."""

import numpy as np
import pytest

from pipelines.data.errors import InputError
from pipelines.genome.annotation import CDS
from pipelines.genome.gff3 import read_gff3, write_bedgraph, write_gff3

SEQUENCES = {"chr1": (100, False), "plasmid 2": (60, True)}
CALLS = [
    CDS("chr1", ((9, 30, 1),), id="g1", score=12.3456),
    CDS("chr1", ((40, 70, -1),), id="g2", score=-1.0),
    CDS("chr1", ((0, 12, 1),), id="g3", partial5=True, score=2.0),
    CDS("chr1", ((80, 100, 1),), id="g4", partial3=True),
    CDS("chr1", ((50, 58, 1), (70, 83, 1)), id="spliced", transl_table=4),  # 8 + 13 bases: phase carries
    CDS("plasmid 2", ((54, 60, 1), (0, 9, 1)), id="across+"),
    CDS("plasmid 2", ((0, 6, -1), (51, 60, -1)), id="across-"),
    CDS("plasmid 2", ((20, 29, -1), (10, 14, 1)), id="trans"),
    CDS("plasmid 2", ((59, 60, 1), (0, 8, 1)), id="straddle"),  # start codon across the origin
]


def data_lines(path):
    return [line.rstrip("\n").split("\t") for line in open(path) if line.strip() and not line.startswith("#")]


def test_written_gff3_is_valid(tmp_path):
    path = tmp_path / "calls.gff3"
    write_gff3(path, CALLS, SEQUENCES, sequence={"chr1": "ACGT" * 25, "plasmid 2": "TG" + "C" * 57 + "A"})
    text = open(path).read().splitlines()
    assert text[0] == "##gff-version 3"
    assert text[1:3] == ["##sequence-region chr1 1 100", "##sequence-region plasmid%202 1 60"]
    rows = data_lines(path)
    assert all(len(r) == 9 for r in rows)
    for seqid, _, ftype, start, end, _score, strand, phase, _attrs in rows:
        length = SEQUENCES[seqid.replace("%20", " ")][0]
        assert 1 <= int(start) <= int(end)
        assert strand in "+-"
        if ftype == "CDS":
            assert int(end) <= length and phase in "012"
        if ftype == "gene":
            assert int(end) <= length or seqid.startswith("plasmid")  # only circular calls pass the end
    cds = {r[8].split(";")[0]: r for r in rows if r[2] == "CDS"}
    assert cds["ID=g1"][3:8] == ["10", "30", "12.35", "+", "0"]  # 1-based inclusive
    assert cds["ID=g2"][3:8] == ["41", "70", "-1.00", "-", "0"]
    assert "start_type=CGT" in cds["ID=g1"][8]  # bases 10..12 of ACGTACGT...
    assert "partial=10" in cds["ID=g3"][8] and "start_type=Edge" in cds["ID=g3"][8]
    assert "start_type=ATG" in cds["ID=straddle"][8]  # A at 60, then T, G at 1, 2
    assert "start_type=GGG" in cds["ID=across-"][8]  # reverse strand: C, C, C read as G, G, G
    phases = [r[7] for r in rows if r[2] == "CDS" and r[8].startswith("ID=spliced;")]
    assert phases == ["0", "1"]  # 8 bases then the second part must skip 1 to reach a codon start
    gene_across = next(r for r in rows if r[2] == "gene" and r[8] == "ID=gene-across+")
    assert gene_across[3:5] == ["55", "69"]  # GFF3 circular convention: end = length + 9
    region = next(r for r in rows if r[2] == "region" and r[0] == "plasmid%202")
    assert "Is_circular=true" in region[8]


def test_round_trip(tmp_path):
    path = tmp_path / "calls.gff3"
    write_gff3(path, CALLS, SEQUENCES)
    calls, lengths = read_gff3(path)
    assert lengths == {"chr1": 100, "plasmid 2": 60}
    assert len(calls) == len(CALLS)
    for got, want in zip(calls, CALLS):
        assert (got.seqid, got.id, got.parts, got.transl_table) == (want.seqid, want.id, want.parts, want.transl_table)
        assert (got.partial5, got.partial3, got.codon_start) == (want.partial5, want.partial3, 1)
        assert got.score == (None if want.score is None else pytest.approx(want.score, abs=0.005))


def test_origin_crossing_line_is_split_at_the_origin(tmp_path):
    path = tmp_path / "x.gff3"
    path.write_text(
        "##gff-version 3\n##sequence-region c 1 60\n"
        "c\tx\tregion\t1\t60\t.\t+\t.\tID=c;Is_circular=true\n"
        "c\tx\tCDS\t55\t69\t.\t+\t0\tID=a\n"
        "c\tx\tCDS\t52\t66\t.\t-\t0\tID=b\n"
    )
    (a, b), _ = read_gff3(path)
    assert a.parts == ((54, 60, 1), (0, 9, 1)) and a.five_prime == 54 and a.three_prime == 8
    assert b.parts == ((0, 6, -1), (51, 60, -1)) and b.five_prime == 5 and b.three_prime == 51


def test_reads_multiline_cds_out_of_order_and_phase(tmp_path):
    path = tmp_path / "x.gff3"
    path.write_text(
        "##gff-version 3\n"
        "s\tx\tCDS\t30\t40\t.\t-\t0\tID=m\n"
        "s\tx\tCDS\t50\t60\t.\t-\t2\tID=m\n"  # the 5' part of a - strand CDS is the one further right
        "s\tx\tCDS\t1\t9\t.\t+\t0\t.\n"
        "s\tx\tCDS\t11\t19\t.\t+\t0\tNote=no ID\n"  # no ID: each line a call of its own
    )
    calls, lengths = read_gff3(path)
    assert lengths == {}
    m, p, q = calls
    assert m.parts == ((49, 60, -1), (29, 40, -1)) and m.codon_start == 3
    assert p.parts == ((0, 9, 1),) and q.parts == ((10, 19, 1),)


@pytest.mark.parametrize(
    "line, message",
    [
        ("s\tx\tCDS\t10\t20\t.\t+\t0", "9 tab-separated columns"),
        ("s\tx\tCDS\t20\t10\t.\t+\t0\tID=a", "1 <= start <= end"),
        ("s\tx\tCDS\tten\t20\t.\t+\t0\tID=a", "start and end must be integers"),
        ("s\tx\tCDS\t10\t20\t.\t.\t0\tID=a", "strand"),
        ("s\tx\tCDS\t10\t20\t.\t+\t.\tID=a", "phase 0, 1 or 2"),
        ("s\tx\tCDS\t10\t20\tgood\t+\t0\tID=a", "score"),
        ("s\tx\tCDS\t10\t20\t.\t+\t0\tID", "not key=value"),
        ("s\tx\tCDS\t10\t120\t.\t+\t0\tID=a", "past the end of s"),
    ],
)
def test_bad_lines_are_named(tmp_path, line, message):
    path = tmp_path / "bad.gff3"
    path.write_text(f"##gff-version 3\n##sequence-region s 1 100\n{line}\n")
    with pytest.raises(InputError, match=message) as err:
        read_gff3(path)
    assert "bad.gff3: line 3" in str(err.value)


def test_writer_rejects_calls_off_the_sequences(tmp_path):
    with pytest.raises(ValueError, match="not among the sequences"):
        write_gff3(tmp_path / "a.gff3", [CDS("other", ((0, 9, 1),))], SEQUENCES)
    with pytest.raises(ValueError, match="beyond chr1"):
        write_gff3(tmp_path / "a.gff3", [CDS("chr1", ((90, 120, 1),))], SEQUENCES)


def test_bedgraph_merges_runs_per_strand(tmp_path):
    rng = np.random.default_rng(0)
    plus = np.repeat(rng.random(5), [3, 1, 4, 2, 10])  # (20,) in five runs
    minus = np.zeros(20)
    minus[5:9] = 0.25
    path = tmp_path / "p.bedgraph"
    write_bedgraph(path, {"chr1": np.stack([plus, minus], axis=1)})
    lines = open(path).read().splitlines()
    assert lines[0].startswith('track type=bedGraph name="coding_plus"')
    split = lines.index(next(line for line in lines if 'name="coding_minus"' in line))
    plus_rows = [r.split("\t") for r in lines[1:split]]
    assert [(int(a), int(b)) for _, a, b, _ in plus_rows] == [(0, 3), (3, 4), (4, 8), (8, 10), (10, 20)]
    np.testing.assert_allclose([float(v) for *_, v in plus_rows], np.round(plus[[0, 3, 4, 8, 10]], 3))
    assert lines[split + 1 :] == ["chr1\t0\t5\t0.000", "chr1\t5\t9\t0.250", "chr1\t9\t20\t0.000"]
