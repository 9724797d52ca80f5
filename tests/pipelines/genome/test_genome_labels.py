"""Per-base, per-strand CDS labels derived from hand-built GenBank and GTF annotations."""

import gzip

import numpy as np
import pytest
from Bio.Seq import Seq

from pipelines.data.errors import InputError
from pipelines.genome.annotation import read_genbank, read_gtf
from pipelines.genome.labels import cds_labels, coding_mask


def labels_of(path):
    (rec,) = read_genbank(path)
    return rec, cds_labels(len(rec), rec.cds)


def expected_track(length, assignments):
    """Track of ``length`` zeros with ``assignments``: [(forward indices in reading order, first codon position)]."""
    track = np.zeros(length, dtype=np.int8)
    for indices, first in assignments:
        for k, i in enumerate(indices):
            track[i] = (first - 1 + k) % 3 + 1
    return track


def test_genes_on_both_strands(write_genbank, random_dna):
    path = write_genbank(random_dna(60), ["CDS 4..15", "CDS complement(31..42)"])
    rec, labels = labels_of(path)
    assert labels.shape == (60, 2) and labels.dtype == np.int8
    np.testing.assert_array_equal(labels[:, 0], expected_track(60, [(range(3, 15), 1)]))
    # Reverse strand: read from forward index 41 down to 30; position 1 is the highest coordinate of each codon.
    np.testing.assert_array_equal(labels[:, 1], expected_track(60, [(range(41, 29, -1), 1)]))
    assert list(labels[39:42, 1]) == [3, 2, 1]


def test_pseudo_cds_are_excluded(write_genbank, random_dna):
    path = write_genbank(
        random_dna(60),
        ["CDS 1..12", "CDS 20..31\n/pseudo", 'CDS complement(40..51)\n/pseudogene="unprocessed"'],
    )
    rec, labels = labels_of(path)
    assert [c.parts for c in rec.cds] == [((0, 12, 1),)]
    assert labels[12:].sum() == 0 and labels[:, 1].sum() == 0


def test_overlapping_genes_longest_wins_and_strands_are_independent(write_genbank, random_dna):
    # A: 1..30 (+); B: 26..37 (+), another frame, 5 bases shared; C: complement(20..40) on the other track.
    path = write_genbank(random_dna(60), ["CDS 26..37", "CDS 1..30", "CDS complement(20..40)"])
    rec, labels = labels_of(path)
    a = expected_track(60, [(range(0, 30), 1)])
    b = expected_track(60, [(range(25, 37), 1)])
    want = np.where(np.arange(60) < 30, a, b)  # the shared bases 25..29 keep the longer gene A's frame
    np.testing.assert_array_equal(labels[:, 0], want)
    assert list(labels[25:30, 0]) != list(b[25:30])  # the rule decides something: B's frame differs there
    np.testing.assert_array_equal(labels[:, 1], expected_track(60, [(range(39, 18, -1), 1)]))


def test_equal_length_overlap_keeps_the_first_listed(write_genbank, random_dna):
    path = write_genbank(random_dna(40), ["CDS 1..12", "CDS 11..22"])
    _, labels = labels_of(path)
    assert list(labels[10:12, 0]) == [2, 3]  # gene 1's positions 11, 12 (not gene 2's 1, 2)


def test_genes_across_the_origin_of_a_circular_genome(write_genbank, random_dna):
    path = write_genbank(
        random_dna(30), ["CDS join(25..30,1..6)", "CDS complement(join(28..30,1..3))"], topology="circular"
    )
    rec, labels = labels_of(path)
    assert rec.circular
    np.testing.assert_array_equal(labels[:, 0], expected_track(30, [([*range(24, 30), *range(0, 6)], 1)]))
    # Reverse strand across the origin: forward 2, 1, 0 first, then 29, 28, 27.
    np.testing.assert_array_equal(labels[:, 1], expected_track(30, [([2, 1, 0, 29, 28, 27], 1)]))
    assert rec.cds[1].five_prime == 2 and rec.cds[1].three_prime == 27


def test_joins_carry_the_codon_phase_across_parts(write_genbank, random_dna):
    # Intron: 8 bases, then the next part begins at codon position 3.
    path = write_genbank(random_dna(40), ["CDS join(1..8,20..30)"])
    _, labels = labels_of(path)
    np.testing.assert_array_equal(labels[:, 0], expected_track(40, [([*range(0, 8), *range(19, 30)], 1)]))
    assert labels[19, 0] == 3 and labels[8:19, 0].sum() == 0


def test_ribosomal_slippage_reads_a_base_twice(write_genbank, random_dna):
    # -1 frameshift (as in prfB/dnaX): base 10 is read at the end of part 1 and again at the start of part 2.
    path = write_genbank(random_dna(40), ["CDS join(1..10,10..21)\n/ribosomal_slippage"])
    _, labels = labels_of(path)
    assert list(labels[:9, 0]) == [1, 2, 3] * 3
    assert labels[9, 0] == 2  # second reading (11th base of the CDS) wins
    assert list(labels[9:21, 0]) == [2, 3] + [1, 2, 3] * 3 + [1]


def test_trans_splicing_across_strands(write_genbank, random_dna):
    # chloroplast rps12 style: the first exon on the reverse strand, the next on the forward strand.
    path = write_genbank(random_dna(60), ["CDS join(complement(51..55),10..19)\n/trans_splicing"])
    rec, labels = labels_of(path)
    assert rec.cds[0].strand == 1  # counted on the strand of its stop codon
    assert list(labels[50:55, 1]) == [2, 1, 3, 2, 1]  # forward 54, 53, ... read first: 1 2 3 1 2
    assert list(labels[9:19, 0]) == [3, 1, 2, 3, 1, 2, 3, 1, 2, 3]  # continues at codon position 3


def test_codon_start_shifts_the_first_codon(write_genbank, random_dna):
    path = write_genbank(random_dna(30), ["CDS <1..12\n/codon_start=2", "CDS complement(16..>30)\n/codon_start=3"])
    _, labels = labels_of(path)
    assert list(labels[:12, 0]) == [3] + [1, 2, 3] * 3 + [1, 2]
    assert list(labels[29:26:-1, 1]) == [2, 3, 1]


def test_genetic_code_4_reads_tga_as_tryptophan(write_genbank, random_dna):
    seq = "CC" + "ATG" + "AAA" + "TGA" + "GGC" + "TAA" + random_dna(20)
    path = write_genbank(seq, ["CDS 3..17\n/transl_table=4"])
    rec, labels = labels_of(path)
    assert rec.transl_table == 4 and rec.cds[0].transl_table == 4
    assert str(Seq(seq[2:17]).translate(table=4)) == "MKWG*"  # the in-frame TGA is Trp, not a stop
    assert list(labels[2:17, 0]) == [1, 2, 3] * 5  # the whole gene is coding


def test_coding_mask_is_the_union_on_each_strand(write_genbank, random_dna):
    path = write_genbank(random_dna(40), ["CDS 1..12", "CDS 10..21", "CDS complement(5..10)"])
    rec, _ = labels_of(path)
    mask = coding_mask(40, rec.cds)
    assert mask.shape == (2, 40)
    assert mask[0].nonzero()[0].tolist() == list(range(0, 21))
    assert mask[1].nonzero()[0].tolist() == list(range(4, 10))


def test_cds_outside_the_sequence_is_an_error(write_genbank, random_dna):
    path = write_genbank(random_dna(30), ["CDS 1..12"])
    (rec,) = read_genbank(path)
    with pytest.raises(ValueError, match="outside the sequence"):
        cds_labels(10, rec.cds)


def test_bad_qualifier_names_the_record(write_genbank, random_dna):
    path = write_genbank(random_dna(30), ["CDS 1..12\n/transl_table=eleven"])
    with pytest.raises(InputError, match=r"record TEST1\.1.*transl_table"):
        read_genbank(path)


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_genbank(tmp_path / "absent.gb")
    (tmp_path / "empty.gb").write_text("nothing here\n")
    with pytest.raises(InputError, match="no GenBank record"):
        read_genbank(tmp_path / "empty.gb")


GTF = """\
#!genome-build test
I\tsgd\tgene\t3\t20\t.\t+\t.\tgene_id "G1"; gene_biotype "protein_coding";
I\tsgd\tCDS\t3\t8\t.\t+\t0\tgene_id "G1"; transcript_id "G1_mRNA"; transcript_biotype "protein_coding";
I\tsgd\tCDS\t12\t17\t.\t+\t0\tgene_id "G1"; transcript_id "G1_mRNA"; transcript_biotype "protein_coding";
I\tsgd\tstop_codon\t18\t20\t.\t+\t0\tgene_id "G1"; transcript_id "G1_mRNA"; transcript_biotype "protein_coding";
I\tsgd\tstop_codon\t25\t27\t.\t-\t0\tgene_id "G2"; transcript_id "G2_mRNA"; transcript_biotype "protein_coding";
I\tsgd\tCDS\t28\t36\t.\t-\t1\tgene_id "G2"; transcript_id "G2_mRNA"; transcript_biotype "protein_coding";
I\tsgd\texon\t38\t40\t.\t+\t.\tgene_id "P1"; transcript_id "P1"; transcript_biotype "pseudogene";
Mito\tsgd\tCDS\t1\t9\t.\t+\t0\tgene_id "M1"; transcript_id "M1_mRNA"; transcript_biotype "protein_coding";
"""


def test_gtf_cds_plus_stop_codon_with_exons_and_frame(tmp_path, random_dna):
    fasta = tmp_path / "g.fa.gz"
    with gzip.open(fasta, "wt") as fh:
        fh.write(f">I chromosome I\n{random_dna(40)}\n>Mito\n{random_dna(12, seed=1)}\n")
    gtf = tmp_path / "g.gtf"
    gtf.write_text(GTF)
    chrom, mito = read_gtf(gtf, fasta)
    assert (chrom.id, mito.id, chrom.transl_table, mito.transl_table) == ("I", "Mito", 1, 3)
    g1, g2 = chrom.cds
    assert g1.parts == ((2, 8, 1), (11, 20, 1))  # the stop codon line merged into the last exon
    assert g2.parts == ((24, 36, -1),) and g2.codon_start == 2  # GTF frame 1 -> codon_start 2
    labels = cds_labels(len(chrom), chrom.cds)
    assert list(labels[2:8, 0]) == [1, 2, 3, 1, 2, 3] and list(labels[11:14, 0]) == [1, 2, 3]
    assert labels[35, 1] == 3 and labels[34, 1] == 1  # first base skipped by frame 1
    assert mito.cds[0].transl_table == 3


def test_gtf_on_an_unknown_sequence_is_an_error(tmp_path, random_dna):
    fasta = tmp_path / "g.fa"
    fasta.write_text(f">II\n{random_dna(40)}\n")
    gtf = tmp_path / "g.gtf"
    gtf.write_text(GTF)
    with pytest.raises(InputError, match=r"sequences \['I', 'Mito'\] are not in"):
        read_gtf(gtf, fasta)
