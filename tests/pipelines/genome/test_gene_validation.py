"""Gene-level validation during training: a perfect tagger scores 1, a silent one 0 (never NaN), the
callback logs the figures a ModelCheckpoint can choose on, and a bad genome entry stops the run
before training starts."""

from types import SimpleNamespace

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from Bio import SeqIO
from Bio.Seq import Seq
from Bio.SeqFeature import FeatureLocation, SeqFeature
from Bio.SeqRecord import SeqRecord
from torch import nn

from pipelines.data.errors import InputError
from pipelines.genome.annotation import CDS, AnnotatedSequence
from pipelines.genome.datamodule import GenomeDataModule
from pipelines.genome.decoder import DecoderConfig
from pipelines.genome.labels import cds_labels
from pipelines.genome.validation import GeneCallValidation, gene_call_scores
from pipelines.tasks import TaggingTask
from seqmodels import MambaTagger, vocab

pytestmark = pytest.mark.usefixtures("quick_cpu")
_COMPLEMENT = str.maketrans("ACGT", "TGCA")
CODONS = ("GCA", "GCT", "GAA", "GAT", "AAA", "CTG")


def genome(seqid, length=12_000, seed=0):
    """Random DNA with ATG...stop genes of 80-120 codons on both strands."""
    rng = np.random.default_rng(seed)
    seq, cds, pos = list(rng.choice(list("ACGT"), size=length)), [], 100
    while pos + 400 < length - 100:
        gene = "ATG" + "".join(rng.choice(CODONS, size=int(rng.integers(80, 120)))) + "TAA"
        strand = 1 if len(cds) % 2 == 0 else -1
        seq[pos : pos + len(gene)] = gene if strand == 1 else gene[::-1].translate(_COMPLEMENT)
        cds.append(CDS(seqid, ((pos, pos + len(gene), strand),), id=f"{seqid}_{len(cds)}"))
        pos += len(gene) + int(rng.integers(100, 300))
    return AnnotatedSequence(seqid, "".join(seq), cds=cds)


class OracleTagger(nn.Module):
    """Returns each window's true labels as confident logits (found by the window's text in the one
    genome it knows); non-coding everywhere in a window it does not find."""

    def __init__(self, genome_):
        super().__init__()
        self.config = SimpleNamespace(n_tracks=2, n_classes=4)
        self.text = genome_.seq
        self.labels = torch.from_numpy(cds_labels(len(genome_), genome_.cds).astype(np.int64))
        self.anchor = nn.Parameter(torch.zeros(()))

    def forward(self, tokens, lengths=None):
        rows = []
        for row in tokens:
            offset = self.text.find(vocab.decode(row))
            labels = self.labels[offset : offset + len(row)] if offset >= 0 else torch.zeros(len(row), 2).long()
            rows.append(8.0 * nn.functional.one_hot(labels, 4).float())
        return torch.stack(rows)


def test_a_perfect_tagger_scores_one_and_a_silent_one_zero():
    g = genome("chrA")
    perfect = gene_call_scores(OracleTagger(g), [[g]], DecoderConfig())
    assert len(g.cds) >= 20
    assert perfect["val/genes/f1"] == pytest.approx(1.0) and perfect["val/genes/chrA/f1"] == pytest.approx(1.0)
    assert perfect["val/genes/coding_f1"] == pytest.approx(1.0)
    silent = gene_call_scores(OracleTagger(genome("elsewhere", seed=9)), [[g]], DecoderConfig())
    assert silent["val/genes/f1"] == 0.0 and silent["val/genes/precision"] == 0.0  # nothing called: 0, not NaN
    assert silent["val/genes/sensitivity"] == 0.0


def test_genomes_weigh_the_same_whatever_their_gene_count():
    big, small = genome("big", 40_000, seed=1), genome("small", 8_000, seed=2)
    scores = gene_call_scores(OracleTagger(big), [[big], [small]], DecoderConfig())  # finds big's genes only
    assert len(big.cds) > 4 * len(small.cds)
    assert scores["val/genes/big/f1"] == pytest.approx(1.0) and scores["val/genes/small/f1"] == 0.0
    assert scores["val/genes/f1"] == pytest.approx(0.5)  # the mean of the two, not pooled over genes


def write_genome(path, g):
    """A GenBank file of ``g`` (Biopython writes it, the part-1 reader reads it back)."""
    record = SeqRecord(Seq(g.seq), id=g.id, name=g.id, annotations={"molecule_type": "DNA", "topology": "linear"})
    for c in g.cds:
        (start, end, strand), = c.parts
        record.features.append(SeqFeature(FeatureLocation(start, end, strand), type="CDS",
                                          qualifiers={"transl_table": ["11"]}))
    SeqIO.write(record, path, "genbank")
    return path


def tiny_fit(tmp_path, lr):
    """The pieces of a short fit on two written genomes: (task, data, checkpoint on val/genes/f1,
    GeneCallValidation of the validation genome)."""
    (tmp_path / "genomes").mkdir(exist_ok=True)
    write_genome(tmp_path / "genomes" / "train.gb", genome("train", 12_000, seed=3))
    write_genome(tmp_path / "genomes" / "val.gb", genome("val", 8_000, seed=4))
    torch.manual_seed(0)
    network = MambaTagger(n_tracks=2, n_classes=4, d_model=8, n_layer=1, d_state=4, bidirectional=True,
                          rc_equivariant=True)
    task = TaggingTask(network, track_names=["forward", "reverse"], lr=lr, weight_decay=0.0)
    data = GenomeDataModule(train=["genomes/train.gb"], val=["genomes/val.gb"], root=str(tmp_path), window=2_000,
                            samples_per_epoch=4, batch_size=2)
    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="val/genes/f1", mode="max",
                                              filename="best-{step}", save_top_k=1)
    validation = GeneCallValidation(["genomes/val.gb"], root=str(tmp_path), decoder={"min_score": 0})
    return task, data, checkpoint, validation


def test_the_callback_logs_gene_figures_a_checkpoint_can_monitor(tmp_path):
    task, data, checkpoint, validation = tiny_fit(tmp_path, lr=0.01)
    trainer = pl.Trainer(accelerator="cpu", max_steps=4, val_check_interval=2, limit_val_batches=1,
                         callbacks=[validation, checkpoint], logger=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=1)
    trainer.fit(task, datamodule=data)
    metrics = trainer.callback_metrics
    for name in ("val/genes/f1", "val/genes/sensitivity", "val/genes/precision", "val/genes/coding_f1",
                 "val/genes/val/f1"):
        assert name in metrics and 0.0 <= float(metrics[name]) <= 1.0
    assert checkpoint.best_model_path and checkpoint.best_model_score is not None


def _ema_run(tmp_path, ema_first: bool, monkeypatch):
    """A short fit with EMA weight averaging; returns (trainer, task, weights each validation scored)."""
    import pipelines.genome.validation as validation_module

    scored = []
    real_scores = validation_module.gene_call_scores

    def spy(model, *args, **kwargs):
        scored.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return real_scores(model, *args, **kwargs)

    monkeypatch.setattr(validation_module, "gene_call_scores", spy)
    task, data, checkpoint, validation = tiny_fit(tmp_path, lr=0.05)
    ema = pl.callbacks.EMAWeightAveraging(decay=0.5)
    callbacks = [ema, validation, checkpoint] if ema_first else [validation, ema, checkpoint]
    trainer = pl.Trainer(accelerator="cpu", max_steps=4, val_check_interval=2, limit_val_batches=1,
                         callbacks=callbacks, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(task, datamodule=data)
    return trainer, task, scored


def test_with_weight_averaging_the_gene_figures_score_the_averaged_weights_that_are_saved(tmp_path, monkeypatch):
    trainer, task, scored = _ema_run(tmp_path, ema_first=False, monkeypatch=monkeypatch)
    assert len(scored) == 2  # steps 2 and 4
    checkpoint = torch.load(trainer.checkpoint_callback.last_model_path or trainer.checkpoint_callback.best_model_path,
                            map_location="cpu", weights_only=False)
    saved = {k.removeprefix("network."): v for k, v in checkpoint["state_dict"].items()}
    raw = {k.removeprefix("network."): v for k, v in checkpoint["current_model_state"].items()}
    best_step = checkpoint["global_step"]
    figures = scored[best_step // 2 - 1]  # the validation that chose this checkpoint
    assert all(torch.equal(figures[k], saved[k]) for k in figures)  # what was scored is what export reads
    assert any(not torch.equal(saved[k], raw[k]) for k in saved)  # and it is not the raw weights


def test_weight_averaging_listed_before_the_gene_validation_is_refused(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="GeneCallValidation must come before EMAWeightAveraging"):
        _ema_run(tmp_path, ema_first=True, monkeypatch=monkeypatch)


def test_a_missing_genome_stops_the_run_before_training(tmp_path):
    callback = GeneCallValidation(["genomes/nowhere.gb"], root=str(tmp_path))
    with pytest.raises(InputError, match="nowhere.gb"):
        callback.setup(None, None, "fit")


def test_bad_decoder_settings_are_refused_when_the_callback_is_built():
    with pytest.raises(InputError, match="GeneCallValidation: decoder must map .*no_such_setting"):
        GeneCallValidation(["genomes/x.gb"], decoder={"no_such_setting": 1})
    with pytest.raises(InputError, match="GeneCallValidation: decoder: min_score"):
        GeneCallValidation(["genomes/x.gb"], decoder={"min_score": "high"})
    with pytest.raises(ValueError, match="at least one genome"):
        GeneCallValidation([])
