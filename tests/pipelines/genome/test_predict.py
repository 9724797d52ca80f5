"""Genome-scale inference (pipelines.genome.predict): the window plan, stitched = single-window within
the measured seam bound (linear and circular), exact stitching of a known answer on phage lambda,
atomic GFF3 / bedGraph output, bad input, and the command line."""

import json
import logging
import os
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from pipelines.data.errors import InputError
from pipelines.data.paths import SAMPLES
from pipelines.genome import predict as predict_module
from pipelines.genome.annotation import read_genbank
from pipelines.genome.decoder import DecoderConfig
from pipelines.genome.evaluate import evaluate
from pipelines.genome.gff3 import read_gff3
from pipelines.genome.labels import cds_labels
from pipelines.genome.predict import (
    GAP_WARNING,
    Tile,
    annotate_genome,
    batch_tokens,
    call_genes,
    main,
    plan_tiles,
    predict_probabilities,
)
from seqmodels import MambaClassifier, MambaTagger, vocab

LAMBDA_FASTA = SAMPLES / "phage_lambda_NC_001416.fa"
LAMBDA_GB = "genomes/phage_lambda/NC_001416.gbk.gz"


# Flush subnormals and run on one thread (conftest.quick_cpu says why).
pytestmark = pytest.mark.usefixtures("quick_cpu")


def lambda_tokens(n=None):
    text = "".join(line.strip() for line in LAMBDA_FASTA.read_text().splitlines()[1:])
    return vocab.encode(text[:n] if n else text)


def sharp_tagger(seed=0, d_model=16, n_layer=2):
    """A randomly initialised bidirectional RC-equivariant tagger whose head is scaled up, so its
    probabilities spread over [0, 1] instead of sitting near 1/4 (a comparison of near-constant
    outputs would prove nothing)."""
    torch.manual_seed(seed)
    model = MambaTagger(n_tracks=2, n_classes=4, d_model=d_model, n_layer=n_layer, d_state=8,
                        bidirectional=True, rc_equivariant=True).eval()
    with torch.no_grad():
        model.head.weight.mul_(10.0)
    return model


def single_pass(model, tokens):
    """The reference: the whole sequence in one forward pass, float64 softmax."""
    with torch.inference_mode():
        logits = model(torch.from_numpy(tokens.astype(np.int64))[None])[0]  # (seqlen, 2, 4)
    return logits.double().softmax(-1).numpy()


# ------------------------------------------------------------------------------------ the plan
@pytest.mark.parametrize("circular", [False, True])
@pytest.mark.parametrize(("length", "window", "overlap"), [
    (1, 10, 2), (10, 10, 2), (11, 10, 2), (1000, 100, 0), (1000, 100, 20), (1001, 100, 49), (97, 40, 7),
    (12_345, 3000, 500),
])
def test_tiles_keep_every_base_once_with_context_or_the_true_end(length, window, overlap, circular):
    tiles = plan_tiles(length, window, overlap, circular)
    assert tiles[0].core_start == 0 and tiles[-1].core_end == length
    assert all(a.core_end == b.core_start for a, b in zip(tiles, tiles[1:]))
    assert len({t.width for t in tiles}) == 1, "equal widths: windows batch without padding"
    for t in tiles:
        assert t.core_start < t.core_end
        left, right = t.core_start - t.start, t.start + t.width - t.core_end
        if circular:
            assert left >= overlap and right >= overlap and t.width <= window
        else:
            assert 0 <= t.start and t.start + t.width <= length and t.width == min(window, length)
            assert left >= overlap or t.start == 0
            assert right >= overlap or t.start + t.width == length


def test_plan_of_a_long_linear_sequence_shifts_the_end_windows_inwards():
    assert plan_tiles(12_000, 4000, 500) == [
        Tile(0, 3000, 0, 4000), Tile(3000, 6000, 2500, 4000), Tile(6000, 9000, 5500, 4000),
        Tile(9000, 12_000, 8000, 4000),
    ]
    assert plan_tiles(3000, 4000, 500, circular=True) == [Tile(0, 3000, -500, 4000)]


@pytest.mark.parametrize(("length", "window", "overlap"), [(0, 10, 1), (10, 10, 5), (10, 10, -1), (10, 0, 0)])
def test_plan_rejects_impossible_settings(length, window, overlap):
    with pytest.raises(ValueError, match="length|window"):
        plan_tiles(length, window, overlap)


# ----------------------------------------------------------------------- stitched vs one pass
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_stitched_equals_single_window_within_the_seam_bound(seed):
    model = sharp_tagger(seed)
    tokens = lambda_tokens(6000)
    full = single_pass(model, tokens)
    assert full.std() > 0.1, "the model's probabilities must vary for the comparison to mean anything"

    stitched = predict_probabilities(model, tokens, window=2000, overlap=250, batch_windows=2)
    assert stitched.probs.shape == (6000, 2, 4) and stitched.probs.dtype == np.float32
    error = np.abs(stitched.probs - full).max()
    assert 0 < stitched.max_seam_gap < 0.05
    assert error <= 2 * stitched.max_seam_gap + 1e-5

    # Without context the seams show: the check above is not vacuous.
    bare = predict_probabilities(model, tokens, window=2000, overlap=0)
    assert np.abs(bare.probs - full).max() > 2 * stitched.max_seam_gap + 1e-5


def test_only_a_seam_gap_above_the_threshold_warns(caplog, monkeypatch):
    model = sharp_tagger(seed=0)
    tokens = lambda_tokens(6000)
    with caplog.at_level(logging.INFO, logger="pipelines.genome.predict"):
        gap = predict_probabilities(model, tokens, window=2000, overlap=250, desc="chr1").max_seam_gap
    assert 0 < gap < GAP_WARNING
    assert [r.levelno for r in caplog.records] == [logging.INFO] and "agree to within" in caplog.text
    caplog.clear()
    monkeypatch.setattr(predict_module, "GAP_WARNING", gap / 2)
    with caplog.at_level(logging.INFO, logger="pipelines.genome.predict"):
        predict_probabilities(model, tokens, window=2000, overlap=250, desc="chr1")
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert "chr1" in caplog.text and "overlap 250 bp" in caplog.text and "raise the overlap" in caplog.text


def test_a_cpu_run_gives_freed_memory_back_after_every_batch_of_windows(monkeypatch):
    # Kept memory fragments across windows (E. coli on one thread peaked at 8.0 GB without this, 3.6 GB
    # with nothing kept): each batch's end trims the heap, so a run is bounded by one batch's working set.
    from pipelines import cpu_memory

    calls = []
    fake = SimpleNamespace(mallopt=lambda param, value: 1, malloc_trim=lambda pad: calls.append(pad) or 1)
    monkeypatch.setattr(cpu_memory, "_glibc", lambda: fake)
    model, tokens = sharp_tagger(seed=1, n_layer=1), lambda_tokens(3000)
    assert len(plan_tiles(3000, 1000, 100)) == 4
    predict_probabilities(model, tokens, window=1000, overlap=100, batch_windows=3)  # batches of 3 and 1
    assert calls == [0, 0, 0]  # after each of the two batches, and once more on leaving
    calls.clear()
    monkeypatch.setattr(predict_module, "TRIM_BETWEEN_WINDOWS", False)
    predict_probabilities(model, tokens, window=1000, overlap=100, batch_windows=3)
    assert calls == [0]  # only on leaving


def test_one_window_is_the_single_pass_and_batching_changes_nothing():
    model = sharp_tagger(seed=1, n_layer=1)
    tokens = lambda_tokens(3000)
    one = predict_probabilities(model, tokens, window=3000, overlap=1000)
    np.testing.assert_allclose(one.probs, single_pass(model, tokens), atol=1e-6)
    assert one.max_seam_gap == 0.0
    alone = predict_probabilities(model, tokens, window=1000, overlap=100, batch_windows=1)
    together = predict_probabilities(model, tokens, window=1000, overlap=100, batch_windows=3)
    np.testing.assert_allclose(alone.probs, together.probs, atol=1e-6)


def test_circular_windows_wrap_across_the_origin():
    model = sharp_tagger(seed=2, n_layer=1)
    tokens = lambda_tokens(3000)
    # One window reading 1000 bases past each end of the circle = the model on that extended sequence.
    ext = np.concatenate([tokens[-1000:], tokens, tokens[:1000]])
    one = predict_probabilities(model, tokens, window=5000, overlap=1000, circular=True)
    np.testing.assert_allclose(one.probs, single_pass(model, ext)[1000:4000], atol=1e-6)
    # Two windows with wrapped context against a pass with 2000 bases of context on both sides.
    long_ext = np.concatenate([tokens[-2000:], tokens, tokens[:2000]])
    reference = single_pass(model, long_ext)[2000:5000]
    two = predict_probabilities(model, tokens, window=2000, overlap=250, circular=True)
    assert len(plan_tiles(3000, 2000, 250, circular=True)) == 2
    assert np.abs(two.probs - reference).max() <= 2 * two.max_seam_gap + 1e-5


# ----------------------------------------------------- a known answer through annotate_genome
class LookupTagger(nn.Module):
    """Stands in for a perfect tagger of one genome: finds each window's text in the genome and
    returns its true labels as confident logits. Any slip in the window arithmetic (offsets, wrap,
    strand tracks) moves labels and changes the gene calls."""

    def __init__(self, text, labels):
        super().__init__()
        self.config = SimpleNamespace(n_tracks=2, n_classes=4)
        self.text, self.labels = text, torch.from_numpy(labels.astype(np.int64))  # (seqlen, 2)
        self.anchor = nn.Parameter(torch.zeros(()))  # gives the module a device

    def forward(self, tokens, lengths=None):
        rows = []
        for row in tokens:
            offset = self.text.find(vocab.decode(row))
            if offset < 0:
                raise AssertionError("predict passed a window that is not a stretch of the genome")
            labels = self.labels[offset : offset + len(row)]  # (width, 2)
            rows.append(8.0 * nn.functional.one_hot(labels, 4).float())
        return torch.stack(rows)  # (batch, width, 2, 4)


def test_windows_stitch_exactly_on_phage_lambda(shared_data, tmp_path):
    (ref,) = read_genbank(os.path.join(shared_data, LAMBDA_GB))
    model = LookupTagger(ref.seq, cds_labels(len(ref), ref.cds))
    windowed, single = tmp_path / "windowed.gff3", tmp_path / "single.gff3"
    summary = annotate_genome(model, LAMBDA_FASTA, windowed, window=10_000, overlap=1_000, progress=False)
    annotate_genome(model, LAMBDA_FASTA, single, window=60_000, overlap=1_000, progress=False)
    calls, lengths = read_gff3(windowed)
    assert windowed.read_text() == single.read_text()
    assert lengths == {ref.id: 48_502} and summary.genes == len(calls) and summary.max_seam_gap == 0.0
    metrics = evaluate(calls, ref.cds, {ref.id: len(ref)})
    # Decoding the true labels: every CDS but those whose labels the overlap rule hides.
    assert metrics.sensitivity > 0.9 and metrics.precision > 0.97 and metrics.coding_f1 > 0.97


# ------------------------------------------------------------------------------ files and errors
def write_fasta(path, records):
    path.write_text("".join(f">{name}\n{seq}\n" for name, seq in records.items()))
    return path


def test_gff3_and_bedgraph_are_written_for_every_record(tmp_path):
    model = sharp_tagger(seed=3, n_layer=1)
    rng = np.random.default_rng(0)
    records = {"chr1": "".join(rng.choice(list("ACGT"), size=2500)), "plasmid": "acgtn" * 300}
    fasta = write_fasta(tmp_path / "g.fa", records)
    gff, bed = tmp_path / "out" / "genes.gff3", tmp_path / "out" / "coding.bedgraph"
    bed.parent.mkdir()
    summary = annotate_genome(model, fasta, gff, bed, window=1000, overlap=100, progress=False,
                              decoder=DecoderConfig(min_length=60, min_score=-1e9))
    calls, lengths = read_gff3(gff)
    assert lengths == {"chr1": 2500, "plasmid": 1500}
    assert summary.sequences == 2 and summary.bases == 4000 and summary.genes == len(calls) > 0
    lines = [line.split("\t") for line in bed.read_text().splitlines() if not line.startswith("track ")]
    table = pd.DataFrame(lines, columns=["seq", "start", "end", "p"]).astype({"start": int, "end": int, "p": float})
    for seqid, n in lengths.items():
        rows = table[table.seq == seqid]
        assert rows.end.sum() - rows.start.sum() == 2 * n  # both strands tile the whole sequence
    assert table.p.between(0, 1).all()
    assert sorted(os.listdir(gff.parent)) == ["coding.bedgraph", "genes.gff3"]  # no temporary files left
    umask = os.umask(0)
    os.umask(umask)
    assert gff.stat().st_mode & 0o777 == bed.stat().st_mode & 0o777 == 0o666 & ~umask  # as open() creates files


def test_a_failed_run_leaves_no_output_behind(tmp_path):
    fasta = write_fasta(tmp_path / "g.fa", {"s": "ACGT" * 300})
    out = tmp_path / "genes.gff3"
    with pytest.raises(InputError, match="transl_table"):
        annotate_genome(sharp_tagger(n_layer=1), fasta, out, genetic_code=99, window=1000, overlap=100,
                        progress=False)
    assert os.listdir(tmp_path) == ["g.fa"]


def test_bad_input_is_named(tmp_path):
    model = sharp_tagger(n_layer=1)
    protein = write_fasta(tmp_path / "protein.fa", {"p1": "MKVLILEEFQPRST" * 5})
    with pytest.raises(InputError, match=r"protein\.fa.*p1.*protein"):
        annotate_genome(model, protein, tmp_path / "x.gff3", progress=False)
    with pytest.raises(InputError, match="missing.fa: (file not found|no such file)"):
        annotate_genome(model, tmp_path / "missing.fa", tmp_path / "x.gff3", progress=False)
    classifier = MambaClassifier(n_classes=2, d_model=8, n_layer=1)
    with pytest.raises(ValueError, match="2 strand tracks x 4 classes"):
        annotate_genome(classifier, LAMBDA_FASTA, tmp_path / "x.gff3", progress=False)
    with pytest.raises(ValueError, match="batch_windows"):
        predict_probabilities(model, lambda_tokens(100), batch_windows=0)


def test_in_memory_records_for_the_app():
    model = sharp_tagger(seed=6, n_layer=1)
    rng = np.random.default_rng(2)
    records = [SimpleNamespace(id="a", seq="".join(rng.choice(list("ACGT"), 1500))),
               SimpleNamespace(id="b", seq="ACGT")]
    result = call_genes(model, records, window=1000, overlap=100, decoder=DecoderConfig(min_length=60, min_score=-1e9))
    assert result.sequences == {"a": (1500, False), "b": (4, False)} and result.texts["b"] == "ACGT"
    assert {k: v.shape for k, v in result.coding.items()} == {"a": (1500, 2), "b": (4, 2)}
    assert result.summary.genes == len(result.calls) > 0 and {c.seqid for c in result.calls} == {"a"}
    assert call_genes(model, records[:1], window=1000, overlap=100, keep_coding=False).coding == {}
    with pytest.raises(InputError, match="upload.fa, record 'b'.*duplicate"):
        call_genes(model, [records[1], records[1]], source="upload.fa")
    with pytest.raises(InputError, match="record 'e'.*empty"):
        call_genes(model, [SimpleNamespace(id="e", seq="")])
    with pytest.raises(InputError, match="no sequence"):
        call_genes(model, [])


def test_calls_without_coding_probabilities_cannot_write_a_bedgraph(tmp_path):
    result = call_genes(sharp_tagger(n_layer=1), [SimpleNamespace(id="c", seq="ACGT" * 50)], keep_coding=False)
    with pytest.raises(ValueError, match="keep_coding"):
        result.write(tmp_path / "x.gff3", tmp_path / "x.bedgraph")
    assert not (tmp_path / "x.gff3").exists()


def test_cpu_inference_restores_the_callers_subnormal_setting():
    from pipelines.genome.predict import _flushing_denormals

    model, tokens = sharp_tagger(n_layer=1), lambda_tokens(200)
    for setting in (False, True):
        torch.set_flush_denormal(setting)
        predict_probabilities(model, tokens)
        assert _flushing_denormals() is setting
    # (the module fixture leaves it on for the other tests)


def test_batch_tokens_counts_real_tokens_only():
    batch = {"tokens": torch.zeros(3, 10, dtype=torch.long), "lengths": torch.tensor([10, 4, 7])}
    assert batch_tokens(batch) == 21
    assert batch_tokens({"tokens": torch.zeros(2, 5, dtype=torch.long)}) == 10


def test_command_line_writes_calls_and_stats(tmp_path, capsys):
    from seqmodels.package import save_package

    save_package(sharp_tagger(seed=4, n_layer=1), tmp_path / "pkg")
    fasta = write_fasta(tmp_path / "g.fa", {"contig": "".join(np.random.default_rng(1).choice(list("ACGT"), 3000))})
    out, stats = tmp_path / "genes.gff3", tmp_path / "stats.json"
    code = main([str(tmp_path / "pkg"), str(fasta), "-o", str(out), "--window", "2000", "--overlap", "200",
                 "--circular", "--genetic-code", "4", "--stats", str(stats), "--no-progress"])
    assert code == 0
    result = json.loads(stats.read_text())
    assert result["bases"] == 3000 and result["device"] == "cpu" and result["peak_gpu_bytes"] is None
    assert result["window"] == 2000 and result["overlap"] == 200 and result["bases_per_second"] > 0
    assert "Is_circular=true" in out.read_text()
    assert "genes on 3,000 bp" in capsys.readouterr().err

    save_package(MambaClassifier(n_classes=2, d_model=8, n_layer=1), tmp_path / "clf")
    assert main([str(tmp_path / "clf"), str(fasta), "-o", str(out)]) == 2
    assert "gene calling needs a tagger" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ GPU
@pytest.mark.gpu
def test_gpu_stitching_matches_the_cpu(tmp_path):
    import copy

    model = sharp_tagger(seed=5)
    tokens = lambda_tokens(20_000)
    cpu = predict_probabilities(model, tokens, window=8000, overlap=1000)
    gpu_model = copy.deepcopy(model).cuda()
    fp32 = predict_probabilities(gpu_model, tokens, window=8000, overlap=1000, batch_windows=4, autocast=False)
    np.testing.assert_allclose(fp32.probs, cpu.probs, atol=2e-3)
    bf16 = predict_probabilities(gpu_model, tokens, window=8000, overlap=1000, batch_windows=4)  # autocast on CUDA
    assert np.quantile(np.abs(bf16.probs - cpu.probs), 0.99) < 0.05

    summary = annotate_genome(gpu_model, LAMBDA_FASTA, tmp_path / "lambda.gff3", window=20_000, overlap=2_000,
                              progress=False)
    assert summary.peak_gpu_bytes > 0 and summary.bases == 48_502
    read_gff3(tmp_path / "lambda.gff3")
