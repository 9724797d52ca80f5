"""A tiny bidirectional, reverse-complement-equivariant Mamba tagger learns to call genes: trained on
synthetic DNA with planted open reading frames (labels from the part-1 label code), it finds the genes
of a synthetic genome it never saw through ``annotate_genome`` (stitched windows, part-1 decoder,
GFF3), and on the real phage lambda genome it writes GFF3 the part-1 reader accepts."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipelines.data.paths import SAMPLES
from pipelines.genome.annotation import CDS, AnnotatedSequence
from pipelines.genome.decoder import codon_tables
from pipelines.genome.evaluate import evaluate
from pipelines.genome.gff3 import read_gff3
from pipelines.genome.predict import annotate_genome
from pipelines.genome.windows import GenomeWindows, Region, label_sequences
from seqmodels import MambaTagger

LAMBDA_FASTA = SAMPLES / "phage_lambda_NC_001416.fa"
# Genes built from a few codons (first base always G): a strong 3-periodic signal, learnt in a few
# dozen steps. The slow test uses a realistic ten-codon usage over uniform background instead.
STRONG_CODONS = ("GCA", "GCT", "GAA", "GAT")
USAGE_CODONS = ("GCT", "GCC", "GAA", "GAT", "AAA", "CTG", "GGC", "ATC", "CGT", "ACC")
STOPS = ("TAA", "TAG", "TGA")
_COMPLEMENT = str.maketrans("ACGT", "TGCA")


# Flush subnormals and run on one thread (conftest.quick_cpu says why).
pytestmark = pytest.mark.usefixtures("quick_cpu")


def planted_genome(length, seed, codons, seqid="synthetic"):
    """Uniform random DNA with genes (ATG, 60-150 codons from ``codons``, a stop) on both strands,
    50-250 bp apart. Returns the annotated sequence (text and true CDS)."""
    rng = np.random.default_rng(seed)
    seq = list(rng.choice(list("ACGT"), size=length))
    cds, pos = [], int(rng.integers(50, 200))
    while True:
        gene = "ATG" + "".join(rng.choice(codons, size=int(rng.integers(60, 150)))) + str(rng.choice(STOPS))
        if pos + len(gene) > length - 50:
            break
        strand = 1 if rng.random() < 0.5 else -1
        seq[pos : pos + len(gene)] = gene if strand == 1 else gene[::-1].translate(_COMPLEMENT)
        cds.append(CDS(seqid, ((pos, pos + len(gene), strand),), id=f"g{len(cds)}"))
        pos += len(gene) + int(rng.integers(50, 250))
    return AnnotatedSequence(seqid, "".join(seq), cds=cds)


def train_tagger(codons, steps, seed=0, window=512, batch=4, lr=0.01):
    """A tiny tagger trained with cross-entropy on random windows of a 100 kb planted genome."""
    torch.manual_seed(seed)
    model = MambaTagger(n_tracks=2, n_classes=4, d_model=16, n_layer=1, d_state=16, bidirectional=True,
                        rc_equivariant=True)
    sequences = label_sequences([planted_genome(100_000, seed + 100, codons)])
    windows = GenomeWindows(sequences, [Region(0, 0, len(sequences[0]))], window, samples=steps * batch, seed=seed)
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    for step in range(steps):
        tokens, labels = zip(*(windows[step * batch + i] for i in range(batch)))
        logits = model(torch.stack(tokens))  # (batch, window, 2, 4)
        loss = F.cross_entropy(logits.reshape(-1, 4), torch.stack(labels).reshape(-1))
        loss.backward()
        optimiser.step()
        optimiser.zero_grad()
    return model.eval()


def calls_of(model, genome, tmp_path, **kwargs):
    """Gene calls of ``model`` on ``genome`` through a FASTA file and annotate_genome's GFF3."""
    fasta, gff = tmp_path / f"{genome.id}.fa", tmp_path / f"{genome.id}.gff3"
    fasta.write_text(f">{genome.id}\n{genome.seq}\n")
    annotate_genome(model, fasta, gff, progress=False, **kwargs)
    calls, lengths = read_gff3(gff)
    assert lengths == {genome.id: len(genome)}
    return calls


@pytest.fixture(scope="module")
def trained():
    return train_tagger(STRONG_CODONS, steps=30)


def test_tiny_model_learns_to_find_planted_orfs(trained, tmp_path):
    unseen = planted_genome(12_000, seed=7, codons=STRONG_CODONS, seqid="unseen")
    assert len(unseen.cds) >= 20
    # Windows shorter than the genome, so the calls go through the stitching as well.
    kwargs = {"window": 5000, "overlap": 1000, "min_len": 150}
    before = evaluate(calls_of(train_tagger(STRONG_CODONS, steps=0), unseen, tmp_path, **kwargs), unseen.cds,
                      {unseen.id: len(unseen)})
    after = evaluate(calls_of(trained, unseen, tmp_path, **kwargs), unseen.cds, {unseen.id: len(unseen)})
    assert before.matched_reference <= 0.2 * len(unseen.cds)  # the decoder alone does not find them
    assert after.sensitivity >= 0.8 and after.precision >= 0.8
    assert after.coding_f1 >= 0.85


def test_briefly_trained_model_writes_valid_gff3_for_lambda(trained, tmp_path):
    gff, bed = tmp_path / "lambda.gff3", tmp_path / "lambda.bedgraph"
    summary = annotate_genome(trained, LAMBDA_FASTA, gff, bed, window=20_000, overlap=2_000, min_len=90,
                              progress=False)
    calls, lengths = read_gff3(gff)
    assert lengths == {"NC_001416.1": 48_502} and summary.genes == len(calls)
    text = "".join(line.strip() for line in LAMBDA_FASTA.read_text().splitlines()[1:]).upper()
    is_start, is_stop = codon_tables(11)
    for call in calls:  # every call is an ORF of the standard code: start, no internal stop, stop
        assert len(call.parts) == 1 and call.length % 3 == 0 and call.length >= 90
        a, b, strand = call.parts[0]
        orf = text[a:b] if strand == 1 else text[a:b][::-1].translate(_COMPLEMENT)
        ids = [16 * "ACGT".index(c[0]) + 4 * "ACGT".index(c[1]) + "ACGT".index(c[2])
               for c in (orf[i : i + 3] for i in range(0, len(orf), 3))]
        assert call.partial5 or is_start[ids[0]]
        assert call.partial3 or is_stop[ids[-1]]
        assert not is_stop[ids[:-1]].any()
    header = bed.read_text().splitlines()[0]
    assert header.startswith("track type=bedGraph")


@pytest.mark.slow
def test_learns_planted_genes_with_realistic_codon_usage(tmp_path):
    model = train_tagger(USAGE_CODONS, steps=200, window=1024)
    unseen = planted_genome(40_000, seed=11, codons=USAGE_CODONS, seqid="unseen")
    metrics = evaluate(calls_of(model, unseen, tmp_path, window=10_000, overlap=2_000), unseen.cds,
                       {unseen.id: len(unseen)})
    assert metrics.sensitivity >= 0.9 and metrics.precision >= 0.9
    assert metrics.exact_start >= 0.8 and metrics.coding_f1 >= 0.9
