"""Synonymous recoding of training windows: every protein, start, stop and label survives; overlapping
genes and everything outside genes are untouched; the codon usage follows the drawn GC level; the
windows drawn and their recoding are reproducible; misuse is refused with a message."""

import numpy as np
import pytest
from Bio.Seq import Seq

from pipelines.data.errors import InputError
from pipelines.genome import recoding
from pipelines.genome.annotation import CDS, AnnotatedSequence
from pipelines.genome.recoding import draw_usage, synonyms
from pipelines.genome.windows import GenomeWindows, Region, SplitConfig, build_datasets, label_sequences
from seqmodels import vocab

_COMPLEMENT = str.maketrans("ACGT", "TGCA")
SENSE = [c for c in (a + b + d for a in "ACGT" for b in "ACGT" for d in "ACGT") if c not in ("TAA", "TAG", "TGA")]


def gene(rng, codons):
    return "ATG" + "".join(rng.choice(SENSE, size=codons)) + str(rng.choice(["TAA", "TAG", "TGA"]))


def genome(seed=0, circular=False):
    """Random DNA with five genes: two forward, two reverse, and a reverse gene overlapping the
    end of the last forward one by 20 bases (as convergent neighbours do)."""
    rng = np.random.default_rng(seed)
    seq = list(rng.choice(list("ACGT"), size=3000))
    cds = []

    def plant(pos, text, strand):
        seq[pos : pos + len(text)] = text if strand == 1 else text[::-1].translate(_COMPLEMENT)
        cds.append(CDS("g", ((pos, pos + len(text), strand),), id=f"g{len(cds)}"))

    plant(100, gene(rng, 80), 1)
    plant(500, gene(rng, 120), -1)
    plant(1000, gene(rng, 100), 1)
    plant(1400, gene(rng, 150), 1)  # ends at 1859
    overlap = gene(rng, 90)
    plant(1859 - 20, overlap, -1)
    return AnnotatedSequence("g", "".join(seq), circular=circular, cds=cds)


def protein(text, c):
    ((a, b, strand),) = c.parts
    s = Seq(text[a:b])
    return str((s if strand == 1 else s.reverse_complement()).translate(table=11))


def recoded(rec, recode=1.0, window=None, seed=0, samples=4):
    (ls,) = label_sequences([rec], recodable=True)
    ds = GenomeWindows([ls], [Region(0, 0, len(rec), wrap=rec.circular)], window or len(rec), samples=samples,
                       seed=seed, recode=recode)
    return ls, ds


def test_every_protein_start_stop_and_label_survives_recoding():
    rec = genome()
    ls, ds = recoded(rec)
    tokens, labels = ds[0]
    new = vocab.decode(tokens.numpy())
    assert new != rec.seq
    for c in rec.cds:
        assert protein(new, c) == protein(rec.seq, c)
        ((a, b, strand),) = c.parts
        ends = [slice(a, a + 3), slice(b - 3, b)]
        assert [new[e] for e in ends] == [rec.seq[e] for e in ends]  # start and stop codons as they were
    np.testing.assert_array_equal(labels.numpy(), ls.labels)


def test_only_inner_codons_of_single_genes_change():
    rec = genome()
    _, ds = recoded(rec)
    new = vocab.decode(ds[0][0].numpy())
    changed = np.flatnonzero(np.frombuffer(new.encode(), np.uint8) != np.frombuffer(rec.seq.encode(), np.uint8))
    cover = np.zeros(len(rec), dtype=int)
    for c in rec.cds:
        ((a, b, _),) = c.parts
        cover[a + 3 : b - 3] += 1  # inner codons
        cover[[*range(a, a + 3), *range(b - 3, b)]] += 10  # start and stop codons: never
    cover[1859 - 20 : 1859] += 10  # the overlap of the two convergent genes: never
    assert changed.size > 200
    assert (cover[changed] == 1).all()


@pytest.mark.parametrize("gc, low, high", [(0.1, 0.0, 0.35), (0.9, 0.65, 1.0)])
def test_codon_usage_follows_the_drawn_gc(monkeypatch, gc, low, high):
    monkeypatch.setattr(recoding, "GC_RANGE", (gc, gc))
    rec = genome(seed=1)
    ls, ds = recoded(rec)
    tokens = ds[0][0].numpy()
    third = [ls.codons.position[i] + (2 if ls.codons.strand[i] == 1 else 0) for i in range(len(ls.codons))]
    gc3 = np.isin(tokens[third], (vocab.C, vocab.G)).mean()
    assert low <= gc3 <= high


def test_drawn_usages_are_distributions_over_each_amino_acids_synonyms():
    amino, table = synonyms(11)
    assert table.shape == (18, 6)  # 20 amino acids less Met and Trp; Leu, Ser and Arg have six codons
    assert (amino >= 0).sum() == 61 - 2
    usage = draw_usage(np.random.default_rng(0))
    np.testing.assert_allclose(usage.sum(1), 1.0)
    assert (usage[table < 0] == 0).all() and (usage[table >= 0] > 0).all()
    amino4, _ = synonyms(4)  # M. genitalium's code: TGA is Trp, so Trp has two codons to swap
    assert amino4[16 * 3 + 4 * 2 + 0] >= 0 and amino[16 * 3 + 4 * 2 + 0] == -1


def test_recoding_is_reproducible_and_leaves_the_windows_drawn_alone():
    rec = genome(seed=2, circular=True)
    _, plain = recoded(rec, recode=0.0, window=1000, samples=20)
    _, once = recoded(rec, recode=0.5, window=1000, samples=20)
    _, again = recoded(rec, recode=0.5, window=1000, samples=20)
    assert [plain.span(i) for i in range(20)] == [once.span(i) for i in range(20)]
    changed = 0
    for i in range(20):
        a, b = once[i][0], again[i][0]
        assert (a == b).all()
        changed += int((a != plain[i][0]).any())
    assert 4 <= changed <= 16  # about half the windows at recode 0.5


def test_windows_across_the_origin_keep_their_proteins():
    rec = genome(seed=3, circular=True)
    _, ds = recoded(rec, window=2500, samples=30, seed=4)
    for i in range(30):
        _, start, length = ds.span(i)
        tokens = vocab.decode(ds[i][0].numpy())
        rotated = rec.seq[start:] + rec.seq[:start]
        new = tokens + rotated[length:]  # the window, then the rest of the circle as it was
        for c in rec.cds:
            ((a, b, strand),) = c.parts
            moved = CDS("g", (((a - start) % len(rec), (a - start) % len(rec) + b - a, strand),))
            if moved.parts[0][1] <= len(rec):
                assert protein(new, moved) == protein(rotated, moved)


def test_misuse_is_refused_with_a_message(tmp_path):
    rec = genome()
    (plain,) = label_sequences([rec])
    (ls,) = label_sequences([rec], recodable=True)
    region = [Region(0, 0, len(rec))]
    with pytest.raises(InputError, match="probability"):
        GenomeWindows([ls], region, 1000, samples=4, recode=1.5)
    with pytest.raises(InputError, match="tiled"):
        GenomeWindows([ls], region, 1000, recode=0.5)
    with pytest.raises(InputError, match="recodable"):
        GenomeWindows([plain], region, 1000, samples=4, recode=0.5)


def test_build_datasets_recodes_training_windows_only(tmp_path, write_genbank, random_dna):
    write_genbank(random_dna(3000), ["CDS 101..400", "CDS complement(601..900)"], filename="a.gb")
    write_genbank(random_dna(2000, seed=1), ["CDS 11..310"], filename="b.gb")
    datasets = build_datasets(SplitConfig(train=["a.gb"], val=["b.gb"]), tmp_path, window=500, samples_per_epoch=4,
                              recode=1.0)
    assert datasets["train"].recode == 1.0 and datasets["train"].sequences[0].codons is not None
    assert datasets["val"].recode == 0.0 and datasets["val"].sequences[0].codons is None
