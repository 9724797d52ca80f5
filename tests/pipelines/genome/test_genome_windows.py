"""Long genome windows: tokens and labels line up, tiling covers every base once, random windows stay in
their region (and cross the origin of circular genomes), splits cannot leak, and batches collate."""

import numpy as np
import pytest
import torch
from Bio.Seq import Seq

from pipelines.data.errors import InputError
from pipelines.genome.annotation import CDS, read_genbank
from pipelines.genome.labels import cds_labels
from pipelines.genome.windows import (
    GenomeWindows,
    LabelledSequence,
    Region,
    SplitConfig,
    build_datasets,
    label_sequences,
    region_blocks,
    reverse_complement_example,
)
from seqmodels import vocab


def labelled(n, seed=0, circular=False):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(vocab.A, vocab.T + 1, size=n).astype(np.int8)
    labels = rng.integers(0, 4, size=(n, 2)).astype(np.int8)
    return LabelledSequence(f"s{seed}", tokens, labels, circular)


def test_tokens_and_labels_of_an_annotated_record(write_genbank, random_dna):
    seq = random_dna(60)
    (rec,) = read_genbank(write_genbank(seq, ["CDS 4..15", "CDS complement(31..42)"]))
    (ls,) = label_sequences([rec])
    np.testing.assert_array_equal(ls.tokens, vocab.encode(seq))
    np.testing.assert_array_equal(ls.labels, cds_labels(60, rec.cds))
    assert vocab.decode(ls.tokens) == seq


def test_tiling_sees_every_base_once_in_order():
    seqs = [labelled(250, 0), labelled(90, 1)]
    regions = [Region(0, 20, 250), Region(1, 0, 90)]
    ds = GenomeWindows(seqs, regions, window=100)
    assert len(ds) == 3 + 1
    got_tokens, got_labels = zip(*(ds[i] for i in range(len(ds))))
    assert [len(t) for t in got_tokens] == [100, 100, 30, 90]
    want_tokens = np.concatenate([seqs[0].tokens[20:], seqs[1].tokens])
    want_labels = np.concatenate([seqs[0].labels[20:], seqs[1].labels])
    np.testing.assert_array_equal(torch.cat(got_tokens).numpy(), want_tokens)
    np.testing.assert_array_equal(torch.cat(got_labels).numpy(), want_labels)
    assert got_tokens[0].dtype == torch.long and got_labels[0].shape == (100, 2)


def test_random_windows_stay_in_their_regions_and_are_reproducible():
    seqs = [labelled(1000, 0), labelled(400, 1)]
    regions = [Region(0, 100, 600), Region(1, 50, 400)]
    ds = GenomeWindows(seqs, regions, window=120, samples=200, seed=3)
    spans = [ds.span(i) for i in range(len(ds))]
    for i, start, length in spans:
        region = next(r for r in regions if r.index == i)
        assert length == 120 and region.start <= start and start + length <= region.end
    assert {i for i, _, _ in spans} == {0, 1}
    assert spans == [GenomeWindows(seqs, regions, 120, 200, seed=3).span(i) for i in range(200)]
    ds.set_epoch(1)
    assert [ds.span(i) for i in range(200)] != spans
    tokens, labels = ds[7]
    i, start, _ = ds.span(7)
    np.testing.assert_array_equal(tokens.numpy(), seqs[i].tokens[start : start + 120])
    np.testing.assert_array_equal(labels.numpy(), seqs[i].labels[start : start + 120])


def test_windows_cross_the_origin_of_a_circular_genome():
    seq = labelled(300, 0, circular=True)
    ds = GenomeWindows([seq], [Region(0, 0, 300, wrap=True)], window=100, samples=100, seed=0)
    crossing = [k for k in range(len(ds)) if ds.span(k)[1] + 100 > 300]
    assert crossing  # about a third of the windows
    k = crossing[0]
    _, start, _ = ds.span(k)
    tokens, labels = ds[k]
    idx = np.arange(start, start + 100) % 300
    np.testing.assert_array_equal(tokens.numpy(), seq.tokens[idx])
    np.testing.assert_array_equal(labels.numpy(), seq.labels[idx])


def test_window_longer_than_a_linear_sequence_is_the_whole_sequence():
    ds = GenomeWindows([labelled(50)], [Region(0, 0, 50)], window=100, samples=3)
    assert all(ds.span(i) == (0, 0, 50) for i in range(3))


def test_region_blocks_are_disjoint_and_cover_each_sequence():
    seqs = [labelled(1000, 0), labelled(77, 1)]
    blocks = region_blocks(seqs, (0.8, 0.1, 0.1))
    assert blocks["train"][0] == Region(0, 0, 800) and blocks["val"][0] == Region(0, 800, 900)
    for i, s in enumerate(seqs):
        covered = sorted((r.start, r.end) for split in blocks.values() for r in split if r.index == i)
        assert covered[0][0] == 0 and covered[-1][1] == len(s)
        assert all(a[1] == b[0] for a, b in zip(covered, covered[1:]))


def test_split_config_refuses_leaks_and_contradictions():
    with pytest.raises(InputError, match="'a.gb' is in both 'train' and 'test'"):
        SplitConfig(train=["a.gb", "b.gb"], test=["a.gb"])
    with pytest.raises(InputError, match="leave 'val' and 'test' empty"):
        SplitConfig(mode="region", train=["a.gb"], val=["b.gb"])
    with pytest.raises(InputError, match="summing to 1"):
        SplitConfig(mode="region", train=["a.gb"], fractions=(0.8, 0.1, 0.2))
    with pytest.raises(InputError, match="'train' lists no genome"):
        SplitConfig()
    with pytest.raises(InputError, match="split mode"):
        SplitConfig(mode="chromosome", train=["a.gb"])


def test_build_datasets_and_batches_through_the_tagging_data_module(tmp_path, write_genbank, random_dna):
    from pipelines.data.datamodules import TaggingDataModule

    write_genbank(random_dna(3000, 1), ["CDS 4..1500"], filename="a.gb", topology="circular")
    write_genbank(random_dna(2000, 2), ["CDS complement(10..900)"], filename="b.gb")
    write_genbank(random_dna(700, 3), ["CDS 1..300"], filename="c.gb")
    split = SplitConfig(train=["a.gb", "b.gb"], val=["c.gb"])
    ds = build_datasets(split, tmp_path, window=500, samples_per_epoch=6, seed=1)
    assert set(ds) == {"train", "val"} and len(ds["train"]) == 6 and len(ds["val"]) == 2
    dm = TaggingDataModule(train=ds["train"], val=ds["val"], batch_size=4)
    batch = next(iter(dm.train_dataloader()))
    assert batch["tokens"].shape == (4, 500) and batch["labels"].shape == (4, 500, 2)
    assert int(batch["labels"].max()) <= 3 and int(batch["tokens"].min()) >= vocab.A
    val = next(iter(dm.val_dataloader()))
    assert val["lengths"].tolist() == [500, 200] and (val["labels"][1, 200:] == -100).all()

    regional = build_datasets(SplitConfig(mode="region", train=["a.gb", "b.gb"]), tmp_path, window=100)
    assert sum(len(regional[s].regions) for s in ("train", "val", "test")) == 6
    assert len(regional["val"]) == 3 + 2  # 300 and 200 bases of validation blocks, tiled by 100


def test_genome_data_module_from_plain_settings(tmp_path, write_genbank, random_dna):
    from pipelines.genome.datamodule import GenomeDataModule

    write_genbank(random_dna(1200, 1), ["CDS 4..900"], filename="a.gb", topology="circular")
    write_genbank(random_dna(500, 2), ["CDS complement(10..300)"], filename="b.gb")
    dm = GenomeDataModule(
        train=["a.gb"], test=["b.gb"], root=str(tmp_path), window=256, samples_per_epoch=4, batch_size=2
    )
    assert dm.hparams.train == ["a.gb"] and dm.hparams.test == ["b.gb"]
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["tokens"].shape == (2, 256) and batch["labels"].shape == (2, 256, 2)
    assert [b["lengths"].tolist() for b in dm.test_dataloader()] == [[256, 244]]
    with pytest.raises(InputError, match="no val dataset"):
        dm.val_dataloader()


def test_reverse_complement_example_equals_labelling_the_other_strand(write_genbank, random_dna):
    seq = random_dna(90, seed=4)
    features = ["CDS 4..15", "CDS complement(31..42)", "CDS join(50..57,61..72)", "CDS complement(70..90)"]
    (rec,) = read_genbank(write_genbank(seq, features))
    (ls,) = label_sequences([rec])
    tokens, labels = reverse_complement_example(
        torch.from_numpy(ls.tokens.astype(np.int64)), torch.from_numpy(ls.labels.astype(np.int64))
    )
    # The same genes annotated on the reverse-complemented sequence.
    flipped = [CDS(c.seqid, tuple((90 - b, 90 - a, -s) for a, b, s in c.parts)) for c in rec.cds]
    np.testing.assert_array_equal(labels.numpy(), cds_labels(90, flipped))
    np.testing.assert_array_equal(tokens.numpy(), vocab.encode(str(Seq(seq).reverse_complement())))
