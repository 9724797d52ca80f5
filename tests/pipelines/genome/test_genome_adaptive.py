"""Genome-adaptive decoding (pipelines.genome.adaptive): on synthetic genomes with a codon-biased
coding model and a planted ribosome-binding site, the statistics learned from a noisy first pass find
planted genes the first pass missed and more of their starts; candidate scores against a float64
brute force; determinism; settings checks; call_genes uses the adaptive decoder."""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from Bio.Data import CodonTable
from Bio.Seq import reverse_complement

from pipelines.data.errors import InputError
from pipelines.genome.adaptive import (
    RBS_WINDOW,
    TRAINING_MIN_LENGTH,
    decode_genome,
    learn_statistics,
)
from pipelines.genome.annotation import CDS
from pipelines.genome.decoder import (
    PACKAGE_SETTINGS,
    DecoderConfig,
    codon_ids,
    codon_tables,
    decode,
    decoder_for_package,
)
from pipelines.genome.evaluate import evaluate
from pipelines.genome.labels import cds_labels
from pipelines.genome.predict import call_genes

CODE = CodonTable.unambiguous_dna_by_id[11]
SENSE = sorted(CODE.forward_table)
STARTS = ("ATG", "GTG", "TTG")
RBS = "AGGAGG"


def synthetic_genome(n_genes=70, seed=0, code=11):
    """A genome of ``n_genes`` planted genes on both strands: sense codons drawn from a skewed codon
    usage, each start codon (ATG 80 %, GTG, TTG) 7 bp after an AGGAGG motif, and an in-frame
    stop-free extension upstream that begins with another start codon (a wrong start the decoder
    can choose), between AT-rich intergenic spacers; codons of NCBI genetic ``code``. Returns
    (sequence, reference CDS list)."""
    rng = np.random.default_rng(seed)
    table = CodonTable.unambiguous_dna_by_id[code]
    sense, stops = sorted(table.forward_table), sorted(table.stop_codons)
    usage = rng.dirichlet(np.full(len(sense), 0.3))  # strongly biased codon usage
    no_start = [c for c in sense if c not in STARTS]
    upstream_codons = rng.dirichlet(np.full(len(no_start), 0.3))
    pieces, cds, pos = [], [], 0
    for _ in range(n_genes):
        spacer = "".join(rng.choice(list("ACGT"), p=[0.35, 0.15, 0.15, 0.35], size=int(rng.integers(40, 160))))
        pieces.append(spacer)
        pos += len(spacer)
        start = rng.choice(STARTS, p=[0.8, 0.1, 0.1])
        body = "".join(rng.choice(sense, p=usage, size=int(rng.integers(80, 300))))
        # Wrong start, a few codons, the RBS ending 7 bp before the true start (in frame: AGG AGG).
        extension = (rng.choice(STARTS) + "".join(rng.choice(no_start, p=upstream_codons, size=int(rng.integers(3, 9))))
                     + RBS + "".join(rng.choice(no_start, p=upstream_codons, size=2)))
        gene = start + body + rng.choice(stops)
        strand = int(rng.choice([1, -1]))
        unit = extension + gene
        pieces.append(unit if strand == 1 else reverse_complement(unit))
        a = pos + (len(extension) if strand == 1 else 0)
        cds.append(CDS("g", ((a, a + len(gene), strand),)))
        pos += len(unit)
    pieces.append("A" * 50)
    return "".join(pieces), cds


def noisy_model(seq, cds, seed=0, missed=0.4):
    """Probabilities (seqlen, 2, 4) of a model that knows most genes (0.8 on the true class, mixed
    20 % with Dirichlet noise) but doubts a share ``missed`` of them (0.3 on the true class: each
    codon scores about -2.7, so the first pass drops them), and has no idea where genes start: the
    upstream extension of each gene reads as coding at 0.65 or 0.35 (a coin toss per gene), so the
    first pass extends half the genes to the wrong start."""
    rng = np.random.default_rng(seed)
    n = len(seq)
    known = [c for c in cds if rng.random() >= missed]
    labels = cds_labels(n, cds)  # (n, 2)
    probs = np.full((n, 2, 4), 0.2 / 3)
    np.put_along_axis(probs, labels[:, :, None].astype(np.int64), 0.8, axis=2)  # missed genes: below
    for c in cds:
        ((a, b, strand),) = c.parts
        track = 0 if strand == 1 else 1
        lo, hi = (a - 33, a) if strand == 1 else (b, b + 33)  # the extension (at most 33 bp of it)
        ext_labels = cds_labels(n, [CDS("g", (((lo, b, 1) if strand == 1 else (a, hi, -1)),))])
        confidence = rng.choice([0.65, 0.35])
        probs[lo:hi, track] = 0.0
        np.put_along_axis(probs[lo:hi, track], ext_labels[lo:hi, track, None].astype(np.int64), confidence, axis=1)
        probs[lo:hi, track, 0] += 1 - confidence
        if c not in known:
            doubt = np.full((n, 4), 0.7 / 3)
            np.put_along_axis(doubt, labels[:, track, None].astype(np.int64), 0.3, axis=1)
            probs[a:b, track] = doubt[a:b]
    return 0.8 * probs + 0.2 * rng.dirichlet(np.ones(4), size=(n, 2))


ADAPTIVE = DecoderConfig(adaptive=True, coding_weight=8.0, start_weight=2.0)


def metrics(seq, probs, cds, cfg):
    (calls,) = decode_genome([("g", seq, probs, False)], config=cfg)
    return evaluate(calls, cds, {"g": len(seq)})


def test_adaptive_pass_finds_genes_and_starts_the_first_pass_missed():
    seq, cds = synthetic_genome()
    probs = noisy_model(seq, cds)
    first = metrics(seq, probs, cds, DecoderConfig())
    second = metrics(seq, probs, cds, ADAPTIVE)
    assert first.sensitivity < 0.7  # the planted misses are missed
    assert second.sensitivity > first.sensitivity + 0.3
    assert second.precision >= 0.95
    assert second.exact_start > first.exact_start + 0.3


def test_learned_statistics_recover_the_planted_codon_usage_and_motif():
    seq, cds = synthetic_genome()
    stats = learn_statistics([(seq, cds)])
    assert stats.genes == sum(c.length >= TRAINING_MIN_LENGTH for c in cds) > 50
    # The dicodon table's mean log-odds, weighted by the planted genes' own dicodons, is positive
    # (coding reads as coding), and it is negative on the same genes read one base off frame.
    codon, _ = _scores_along(seq, stats)
    in_frame = np.concatenate([codon[a + 3 : b - 3 : 3] for (((a, b, s),),) in _parts(cds) if s == 1])
    off_frame = np.concatenate([codon[a + 4 : b - 3 : 3] for (((a, b, s),),) in _parts(cds) if s == 1])
    assert in_frame.mean() > 0.3 > 0 > off_frame.mean()
    # The motif: the RBS positions (-12..-7 before the start) favour AGGAGG's bases.
    rbs_pos = np.arange(RBS_WINDOW - 12, RBS_WINDOW - 6)
    wanted = np.array(["ACGT".index(b) for b in RBS])
    assert (stats.rbs[rbs_pos, wanted] > 0.5).all()
    assert stats.start_codon[_codon_id("ATG")] > 0


def _codons_of(seq, cds):
    """The sense codons of a one-part CDS, read on its strand."""
    ((a, b, strand),) = cds.parts
    orf = seq[a:b] if strand == 1 else reverse_complement(seq[a:b])
    return [orf[k:k + 3] for k in range(0, len(orf) - 3, 3)]


def _parts(cds):
    return [(c.parts,) for c in cds]


def _codon_id(codon):
    return 16 * "ACGT".index(codon[0]) + 4 * "ACGT".index(codon[1]) + "ACGT".index(codon[2])


def _scores_along(seq, stats):
    return stats.strand_scores(seq.encode(), codon_tables(11))


def test_strand_scores_match_a_float64_reference():
    seq, cds = synthetic_genome(n_genes=12, seed=3)
    stats = learn_statistics([(seq, cds)])
    codon, start = _scores_along(seq, stats)
    is_start, is_stop = codon_tables(11)
    ids = codon_ids(seq.encode())
    rng = np.random.default_rng(0)
    for k in rng.choice(np.arange(3, len(seq) - 3), size=300, replace=False):
        c1, c2 = ids[k - 3], ids[k]
        want = 0.0 if (c1 < 0 or c2 < 0 or is_stop[c2]) else float(stats.coding.astype(np.float64)[64 * c1 + c2])
        assert codon[k] == pytest.approx(want, abs=1e-6)
        if is_start[c2]:
            upstream = seq[max(k - RBS_WINDOW, 0) : k]
            offset = RBS_WINDOW - len(upstream)
            want = float(stats.start_codon[c2]) + sum(float(stats.rbs[offset + i, "ACGT".index(b)])
                                                       for i, b in enumerate(upstream))
            assert start[k] == pytest.approx(want, abs=1e-4)
        else:
            assert start[k] == 0.0


def test_second_pass_scores_are_model_plus_weighted_statistics():
    """Each call's score, recomputed in float64: model log-odds over the ORF + coding_weight x the
    dicodon scores of its codons after the start + start_weight x its start score."""
    seq, cds = synthetic_genome(n_genes=20, seed=5)
    probs = noisy_model(seq, cds, seed=5)
    stats = learn_statistics([(seq, cds)])
    cfg = DecoderConfig(coding_weight=2.5, start_weight=1.5, allow_partial=False)
    calls = decode(seq, probs, config=cfg, statistics=stats)
    assert len(calls) > 10
    n = len(seq)
    for c in calls:
        ((a, b, strand),) = c.parts
        if strand == 1:
            s_seq, p, s, e = seq, probs[:, 0], a, b
        else:
            s_seq, p, s, e = reverse_complement(seq), probs[::-1, 1], n - b, n - a
        q = np.clip(p.astype(np.float64), cfg.eps, 1 - cfg.eps)
        model = sum(np.log(q[j, (j - s) % 3 + 1]) - np.log1p(-q[j, (j - s) % 3 + 1]) for j in range(s, e))
        codon, start = stats.strand_scores(s_seq.encode(), codon_tables(11))
        want = model + 2.5 * codon[s + 3 : e : 3].astype(np.float64).sum() + 1.5 * float(start[s])
        assert c.score == pytest.approx(want, rel=1e-4, abs=1e-3)


def test_adaptive_decoding_is_deterministic_and_learns_from_all_records_together():
    seq, cds = synthetic_genome(n_genes=30, seed=7)
    probs = noisy_model(seq, cds, seed=7)
    cut = len(seq) // 2
    records = [("a", seq[:cut], probs[:cut], False), ("b", seq[cut:], probs[cut:], False)]
    once = decode_genome(records, config=ADAPTIVE)
    assert once == decode_genome(records, config=ADAPTIVE)
    assert [c.seqid for c in once[0]] == ["a"] * len(once[0]) and {c.seqid for c in once[1]} == {"b"}
    calls_a = [c for c in cds if c.parts[0][1] <= cut]
    forward = learn_statistics([(seq[:cut], calls_a), (seq[cut:], [])])
    backward = learn_statistics([(seq[cut:], []), (seq[:cut], calls_a)])
    for name in ("coding", "start_codon", "rbs"):
        np.testing.assert_array_equal(getattr(forward, name), getattr(backward, name))
    # Without `adaptive` it is the one-pass decoder on each record.
    plain = DecoderConfig()
    assert decode_genome(records, config=plain) == [decode(t, p, seqid=i, config=plain) for i, t, p, _ in records]


def test_nothing_to_learn_from_keeps_the_first_pass():
    # The model is sure of the planted genes shorter than TRAINING_MIN_LENGTH only: the first pass
    # calls them, there is nothing to learn from, and its calls stand (a table learned from no genes
    # is the background against itself, not "no opinion", so decoding again would change scores).
    seq, cds = synthetic_genome(n_genes=40, seed=2)
    probs = noisy_model(seq, cds, seed=2, missed=0.0)
    keep = np.zeros(len(seq), dtype=bool)
    for c in cds:
        if c.length < TRAINING_MIN_LENGTH:
            ((a, b, _),) = c.parts
            keep[a - 40 : b + 40] = True  # (with the extension upstream, whichever strand)
    flat = np.where(keep[:, None, None], probs, 0.25)  # (seqlen, 2, 4): elsewhere the model has no idea
    (once,) = decode_genome([("s", seq, flat, False)], config=DecoderConfig())
    assert once and all(c.length < TRAINING_MIN_LENGTH for c in once)
    assert decode_genome([("s", seq, flat, False)], config=ADAPTIVE) == [once]
    assert decode_genome([("s", seq, np.full_like(probs, 0.25), True)], config=ADAPTIVE) == [[]]


def test_genetic_code_4_reads_tga_as_tryptophan_in_both_passes():
    seq, cds = synthetic_genome(n_genes=30, seed=13, code=4)  # TGA inside genes, TAA / TAG ending them
    probs = noisy_model(seq, cds, seed=13)
    (calls,) = decode_genome([("g", seq, probs, False)], transl_table=4, config=ADAPTIVE)
    m = evaluate(calls, cds, {"g": len(seq)})
    assert m.sensitivity > 0.9 and m.precision > 0.9
    with_tga = [c for c in cds if "TGA" in _codons_of(seq, c)]  # genes code 11 would cut short
    (cut,) = decode_genome([("g", seq, probs, False)], transl_table=11, config=ADAPTIVE)
    lengths = {"g": len(seq)}
    assert len(with_tga) >= 5
    assert evaluate(calls, with_tga, lengths).exact_start > 0.8 > evaluate(cut, with_tga, lengths).exact_start
    stats = learn_statistics([(seq, cds)], transl_table=4)
    codon, _ = stats.strand_scores(seq.encode(), codon_tables(4))
    tga = [k for (((a, b, s),),) in _parts(cds) if s == 1 for k in range(a + 3, b - 3, 3) if seq[k:k + 3] == "TGA"]
    assert len(tga) >= 10 and (codon[tga] != 0).all()  # scored as a sense codon; a stop would score 0


def test_settings_are_checked_and_named():
    for bad, message in (({"adaptive": "yes"}, "adaptive must be true or false"),
                         ({"coding_weight": -1.0}, "coding_weight must be >= 0"),
                         ({"start_weight": float("inf")}, "start_weight must be a finite number"),
                         ({"coding_weight": "2"}, "coding_weight must be a finite number")):
        with pytest.raises(ValueError, match=message):
            DecoderConfig(**bad)
    assert {"adaptive", "coding_weight", "start_weight"} <= set(PACKAGE_SETTINGS)
    cfg = decoder_for_package({"decoder": {"adaptive": True, "coding_weight": 3, "start_weight": 0.5}}, 120)
    assert (cfg.adaptive, cfg.coding_weight, cfg.start_weight, cfg.min_length) == (True, 3, 0.5, 120)
    with pytest.raises(InputError, match="pkg.*config.json 'decoder': start_weight must be >= 0"):
        decoder_for_package({"decoder": {"adaptive": True, "start_weight": -2}}, source="pkg")


class FixedTagger(torch.nn.Module):
    """A 'model' returning fixed log-probabilities (seqlen, 2, 4) for the one window it is shown."""

    def __init__(self, probs):
        super().__init__()
        self.config = SimpleNamespace(n_tracks=2, n_classes=4)
        self.register_buffer("logp", torch.from_numpy(np.log(probs)).float())

    def forward(self, tokens):  # (1, seqlen) -> (1, seqlen, 2, 4)
        return self.logp[None, : tokens.shape[1]]


def test_call_genes_uses_the_adaptive_decoder():
    seq, cds = synthetic_genome(n_genes=25, seed=9)
    probs = noisy_model(seq, cds, seed=9)
    model = FixedTagger(probs)
    records = [SimpleNamespace(id="g", seq=seq)]
    probs32 = torch.from_numpy(np.log(probs)).float().softmax(-1).numpy()  # what call_genes reads
    for cfg in (DecoderConfig(), ADAPTIVE):
        result = call_genes(model, records, window=len(seq), overlap=0, decoder=cfg)
        assert result.calls == decode_genome([("g", seq, probs32, False)], config=cfg)[0]
    assert (call_genes(model, records, window=len(seq), overlap=0, decoder=ADAPTIVE).calls
            != call_genes(model, records, window=len(seq), overlap=0).calls)


def test_a_gene_with_no_stop_upstream_in_its_frame_is_learned_from():
    rng = np.random.default_rng(4)
    gene = "ATG" + "".join(rng.choice(SENSE, size=120)) + "TAA"
    seq = "CAT" + gene + "GGATCC"  # nothing upstream of the start but one sense codon
    stats = learn_statistics([(seq, [CDS("s", ((3, 3 + len(gene), 1),))])])
    assert stats.genes == 1 and np.isfinite(stats.rbs).all() and stats.start_codon[_codon_id("ATG")] != 0


def test_circular_genome_keeps_its_gene_across_the_origin():
    seq, cds = synthetic_genome(n_genes=30, seed=11)
    probs = noisy_model(seq, cds, seed=11, missed=0.0)
    ((a, b, strand),) = cds[10].parts
    cut = (a + b) // 2  # the origin moved into gene 10
    rotated, rotated_probs = seq[cut:] + seq[:cut], np.concatenate([probs[cut:], probs[:cut]])
    n = len(seq)
    (calls,) = decode_genome([("c", rotated, rotated_probs, True)], config=ADAPTIVE)
    split = [c for c in calls if len(c.parts) == 2]
    assert len(split) == 1 and split[0].strand == strand
    assert {(p[0], p[1]) for p in split[0].parts} == {(a - cut + n, n), (0, b - cut)}


def test_calls_outside_their_sequence_are_refused_naming_the_record_and_call():
    seq = "ATG" + "GCT" * 120 + "TAA"
    bad = CDS("chr2", ((300, len(seq) + 30, 1),), id="chr2_7")
    with pytest.raises(InputError, match=r"record 'chr2'.*call chr2_7 at \[\(300, 396, 1\)\] lies outside its "
                                         r"sequence of 366 bp"):
        learn_statistics([(seq, [bad])])


def test_a_gene_not_starting_at_a_start_codon_teaches_the_coding_table_only():
    """Calls from elsewhere (a reference annotation) may start at ATT or at a codon holding an N: they
    count as coding sequence, but the start model, a choice among start codons, ignores them."""
    rng = np.random.default_rng(12)
    body = "".join(rng.choice(SENSE, size=120)) + "TAA"
    upstream = "".join(rng.choice(list("ACGT"), size=30))
    for start in ("ATT", "ANG", "atg"):
        seq = upstream + start + body
        stats = learn_statistics([(seq, [CDS("s", ((30, len(seq), 1),))])])
        nothing = learn_statistics([(seq, [])])
        assert stats.genes == 1
        assert not np.array_equal(stats.coding, nothing.coding)  # the gene's codons were counted
        if start == "atg":  # lower case reads as ATG: a start the model learns from
            assert stats.start_codon[_codon_id("ATG")] > 0 and np.abs(stats.rbs).sum() > 0
        else:
            np.testing.assert_array_equal(stats.start_codon, nothing.start_codon)
            np.testing.assert_array_equal(stats.rbs, nothing.rbs)


def test_seqmamba_score_with_the_bundled_adaptive_caller_writes_valid_gff3_for_a_genome_too_small_to_learn_from(
        tmp_path):
    """The shipped package decodes adaptively: on a few kb (a handful of genes to learn from), a
    lower-case record with an N run and a 2 bp record it still writes a GFF3 that reads back, with
    every record's region and every call inside its record."""
    from Bio import SeqIO

    from pipelines.genome.gff3 import read_gff3
    from pipelines.score_cmd import main as score

    root = Path(__file__).resolve().parents[3]
    package = root / "data" / "models" / "gene_caller-mamba"
    assert json.loads((package / "config.json").read_text())["decoder"]["adaptive"] is True
    lam = str(next(SeqIO.parse(root / "data" / "samples" / "phage_lambda_NC_001416.fa", "fasta")).seq)
    records = {"piece": lam[:3000], "soft_masked": lam[30000:31000].lower() + "N" * 200 + lam[31000:32000],
               "stub": "AC"}
    fasta = tmp_path / "tiny.fa"
    fasta.write_text("".join(f">{k}\n{v}\n" for k, v in records.items()))
    out = tmp_path / "calls.gff3"
    assert score([str(package), str(fasta), "-o", str(out), "--no-progress"]) == 0
    calls, lengths = read_gff3(out)
    assert lengths == {k: len(v) for k, v in records.items()}
    assert calls and all(0 <= a < b <= lengths[c.seqid] for c in calls for a, b, _ in c.parts)
    assert {c.seqid for c in calls} <= {"piece", "soft_masked"}
