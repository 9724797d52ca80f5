"""The three data modules: batch formats of docs/ARCHITECTURE.md, seeds, augmentation, errors."""

import gzip

import numpy as np
import pytest
import torch

from pipelines.data.augment import reverse_complement_array
from pipelines.data.datamodules import DNAClassificationDataModule, ForecastDataModule, TaggingDataModule
from pipelines.data.datasets import IGNORE_INDEX, TaggingWindows
from pipelines.data.errors import InputError
from pipelines.data.paths import SAMPLES
from pipelines.data.timeseries import read_series_csv
from seqmodels import vocab


def write_fasta(path, n, rng, labels=("neg", "pos"), lo=20, hi=60):
    lines = []
    for i in range(n):
        seq = "".join(rng.choice(list("ACGT"), size=int(rng.integers(lo, hi))))
        lines += [f">r{i} label={labels[i % len(labels)]}", seq]
    data = ("\n".join(lines) + "\n").encode()
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


@pytest.fixture
def dataset_root(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "toy"
    folder.mkdir()
    write_fasta(folder / "train.fa.gz", 64, rng)
    write_fasta(folder / "dev.fa.gz", 16, rng)
    write_fasta(folder / "test.fa", 16, rng)
    return tmp_path


def batches(loader):
    return [{k: v.clone() for k, v in b.items()} for b in loader]


def test_dna_batches_follow_the_contract(dataset_root):
    dm = DNAClassificationDataModule(dataset="toy", root=str(dataset_root), batch_size=8, seed=1)
    dm.setup("fit")
    assert dm.classes == ["neg", "pos"] and dm.n_classes == 2
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"tokens", "lengths", "labels"}
    tokens, lengths, labels = batch["tokens"], batch["lengths"], batch["labels"]
    assert tokens.dtype == lengths.dtype == labels.dtype == torch.long
    assert tokens.shape == (8, int(lengths.max())) and labels.shape == (8,)
    for row, n in zip(tokens, lengths):
        assert torch.all((row[:n] >= vocab.A) & (row[:n] <= vocab.N)) and torch.all(row[n:] == vocab.PAD)
    assert set(labels.tolist()) <= {0, 1}
    assert sum(len(b["labels"]) for b in dm.val_dataloader()) == 16


def test_same_seed_same_batches_other_seed_other_batches(dataset_root):
    def run(seed, workers=0):
        dm = DNAClassificationDataModule(dataset="toy", root=str(dataset_root), batch_size=8, seed=seed,
                                         max_len=30, num_workers=workers)
        dm.setup("fit")
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(0)
        first = batches(loader)
        loader.sampler.set_epoch(1)
        return first, batches(loader)

    (a0, a1), (b0, _) = run(5), run(5)
    assert all(torch.equal(x["tokens"], y["tokens"]) for x, y in zip(a0, b0))
    assert not all(torch.equal(x["tokens"], y["tokens"]) for x, y in zip(a0, a1))  # a new epoch differs
    c0, _ = run(6)
    assert not all(torch.equal(x["tokens"], y["tokens"]) for x, y in zip(a0, c0))
    w0, w1 = run(5, workers=2)  # augmentation depends on (seed, epoch, index), not on the worker
    assert all(torch.equal(x["tokens"], y["tokens"]) for x, y in zip(a0 + a1, w0 + w1))


def test_training_crops_and_reverse_complements_evaluation_does_not(dataset_root):
    dm = DNAClassificationDataModule(dataset="toy", root=str(dataset_root), batch_size=4, max_len=15, seed=0)
    dm.setup("fit")
    train = dm.datasets["train"]
    rc_seen = fwd_seen = 0
    for epoch in range(6):
        train.set_epoch(epoch)
        for i in range(len(train)):
            full = train.tokens[i].astype(np.int64)
            got = np.asarray(train[i]["tokens"])
            assert len(got) == min(15, len(full))
            text, fwd, rc = vocab.decode(got), vocab.decode(full), vocab.decode(reverse_complement_array(full))
            fwd_seen += text in fwd
            rc_seen += text in rc and text not in fwd
            assert text in fwd or text in rc  # a crop of the sequence or of its reverse complement
    assert rc_seen > 0.3 * 6 * len(train) and fwd_seen > 0.3 * 6 * len(train)
    val = dm.datasets["val"]
    for i in range(len(val)):
        full = val.tokens[i]
        start = (len(full) - 15) // 2
        np.testing.assert_array_equal(val[i]["tokens"], full[start:start + 15])  # centred, forward


def test_classes_come_from_the_model_and_foreign_labels_are_refused(dataset_root):
    dm = DNAClassificationDataModule(dataset="toy", root=str(dataset_root), classes=["pos", "neg"])
    dm.setup("test")
    labels = torch.cat([b["labels"] for b in dm.test_dataloader()])
    assert labels.tolist() == [1, 0] * 8  # the given order, not sorted
    strict = DNAClassificationDataModule(dataset="toy", root=str(dataset_root), classes=["enhancer", "other"])
    with pytest.raises(InputError, match=r"label 'neg' is not one of the model's classes \(enhancer, other\)"):
        strict.setup("test")


def test_explicit_files_hold_out_and_missing_splits(tmp_path):
    rng = np.random.default_rng(1)
    train = write_fasta(tmp_path / "mine.fa", 40, rng, labels=("a", "b", "c"))
    dm = DNAClassificationDataModule(train=str(train), val_fraction=0.25, batch_size=4, seed=3)
    dm.setup("fit")
    assert dm.classes == ["a", "b", "c"]
    assert len(dm.datasets["train"]) == 30 and len(dm.datasets["val"]) == 10
    train_seqs = {t.tobytes() for t in dm.datasets["train"].tokens}
    assert not any(t.tobytes() in train_seqs for t in dm.datasets["val"].tokens)
    with pytest.raises(InputError, match=r"no test file in the settings; pass it explicitly \(--data.test PATH\)"):
        DNAClassificationDataModule(train=str(train)).setup("test")
    with pytest.raises(InputError, match="no dataset 'nope' under the data root"):
        DNAClassificationDataModule(dataset="nope", root=str(tmp_path)).setup("fit")


def test_one_class_is_refused(tmp_path):
    path = write_fasta(tmp_path / "one.fa", 5, np.random.default_rng(2), labels=("only",))
    with pytest.raises(InputError, match=r"only one class \(only\)"):
        DNAClassificationDataModule(train=str(path)).setup("fit")


def test_predict_reads_unlabelled_files(tmp_path):
    path = tmp_path / "x.fa"
    path.write_bytes(b">a\nACGTN\n>b\nGG\n")
    dm = DNAClassificationDataModule(predict=str(path), classes=["neg", "pos"], batch_size=2)
    dm.setup("predict")
    batch = next(iter(dm.predict_dataloader()))
    assert batch["lengths"].tolist() == [5, 2] and batch["labels"].tolist() == [IGNORE_INDEX, IGNORE_INDEX]
    assert batch["tokens"][1].tolist() == [vocab.G, vocab.G, vocab.PAD, vocab.PAD, vocab.PAD]


def test_tagging_windows_are_padded_with_ignore_labels():
    rng = np.random.default_rng(3)
    genome = rng.integers(vocab.A, vocab.T + 1, size=250).astype(np.int8)
    tracks = rng.integers(0, 2, size=(250, 2)).astype(np.int8)  # (N, n_tracks)
    short = (genome[:30], tracks[:30])
    data = TaggingWindows([(genome, tracks), short], window=100)
    assert len(data) == 3 + 1  # starts 0, 100, 150 on the genome; the short sequence whole
    dm = TaggingDataModule(train=data, val=data, batch_size=4, seed=0)
    batch = next(iter(dm.val_dataloader()))
    assert batch["tokens"].shape == (4, 100) and batch["labels"].shape == (4, 100, 2)
    assert batch["lengths"].tolist() == [100, 100, 100, 30]
    np.testing.assert_array_equal(batch["labels"][2].numpy(), tracks[150:250])
    assert torch.all(batch["labels"][3, 30:] == IGNORE_INDEX) and torch.all(batch["tokens"][3, 30:] == vocab.PAD)
    assert sorted(i for b in dm.train_dataloader() for i in b["lengths"].tolist()) == [30, 100, 100, 100]
    with pytest.raises(InputError, match="no test dataset"):
        dm.test_dataloader()


def test_forecast_module_on_the_bundled_sample():
    csv = SAMPLES / "exchange_rate_last1000.csv"
    dm = ForecastDataModule(csv=str(csv), input_len=48, horizon=24, batch_size=16, seed=0)
    dm.setup("fit")
    assert dm.sizes == (700, 100, 200) and dm.channels == ["0", "1", "2", "3", "4", "5", "6", "OT"]
    batch = next(iter(dm.train_dataloader()))
    assert batch["x"].shape == (16, 48, 8) and batch["y"].shape == (16, 24, 8) and batch["x"].dtype == torch.float32
    raw = read_series_csv(csv).to_numpy()
    # Scaled with the training rows' mean and std, and back again.
    np.testing.assert_allclose(dm.mean, raw[:700].mean(axis=0), rtol=1e-10)
    first_val = next(iter(dm.val_dataloader()))
    np.testing.assert_allclose(dm.inverse_transform(first_val["y"][0]).numpy(), raw[700:724], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dm.inverse_transform(first_val["x"][0].numpy()), raw[652:700], rtol=1e-5, atol=1e-6)
    exported = dm.export_config()
    assert exported["channels"] == dm.channels and len(exported["scaler_scale"]) == 8
    assert exported["step_seconds"] == 86400
    same = ForecastDataModule(csv=str(csv), input_len=48, horizon=24, batch_size=16, seed=0)
    same.setup("fit")
    assert torch.equal(next(iter(same.train_dataloader()))["x"], batch["x"])


def test_forecast_module_settings_errors(tmp_path):
    with pytest.raises(InputError, match="give exactly one of dataset"):
        ForecastDataModule()
    with pytest.raises(InputError, match="unknown forecasting dataset 'ETTm9'"):
        ForecastDataModule(dataset="ETTm9")
    dm = ForecastDataModule(csv=str(SAMPLES / "exchange_rate_last1000.csv"), input_len=96, horizon=336)
    with pytest.raises(InputError, match="the validation split has 100 rows, fewer than the horizon 336"):
        dm.setup("fit")
