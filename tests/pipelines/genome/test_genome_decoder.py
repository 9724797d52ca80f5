"""The gene-call decoder on synthetic probability tracks: planted genes, a brute-force float64 reference,
genes across the origin, partial genes, genetic codes, minimum length and the overlap rule."""

import numpy as np
import pytest
from Bio.Data import CodonTable
from Bio.Seq import reverse_complement

from pipelines.data.errors import InputError
from pipelines.genome.annotation import CDS
from pipelines.genome.decoder import DecoderConfig, coding_probability, codon_tables, decode
from pipelines.genome.labels import cds_labels

STOPS = {"TAA", "TAG", "TGA"}
SENSE = sorted(c for c in CodonTable.unambiguous_dna_by_id[11].forward_table if c not in STOPS)


def gene(rng, n_codons, stop="TAA", start="ATG"):
    return start + "".join(rng.choice(SENSE, size=n_codons)) + stop


def planted_genome(seed=0):
    """~3 kb of random DNA with four genes: two forward, two reverse; returns (seq, true CDS)."""
    rng = np.random.default_rng(seed)
    pieces, cds, pos = [], [], 0

    def spacer(n):
        nonlocal pos
        pieces.append("".join(rng.choice(list("ACGT"), size=n)))
        pos += n

    def plant(g, strand):
        nonlocal pos
        pieces.append(g if strand == 1 else reverse_complement(g))
        cds.append(((pos, pos + len(g), strand),))
        pos += len(g)

    spacer(137)
    plant(gene(rng, 120, start="GTG"), 1)
    spacer(95)
    plant(gene(rng, 200, stop="TAG"), -1)
    spacer(180)
    plant(gene(rng, 90, start="TTG"), -1)
    spacer(60)
    plant(gene(rng, 150, stop="TGA"), 1)
    spacer(211)
    return "".join(pieces), cds


def model_probs(length, cds, rng, confidence=0.9, noise=0.0):
    """Probabilities (length, 2, 4) a good model would give: ``confidence`` on the true class."""
    labels = cds_labels(length, [CDS("s", parts) for parts in cds])
    probs = np.full((length, 2, 4), (1 - confidence) / 3)
    np.put_along_axis(probs, labels[:, :, None].astype(np.int64), confidence, axis=2)
    if noise:
        probs = (1 - noise) * probs + noise * rng.dirichlet(np.ones(4), size=(length, 2))
    return probs


def parts_of(calls):
    return sorted(c.parts for c in calls)


@pytest.mark.parametrize("noise", [0.0, 0.4])
def test_finds_exactly_the_planted_genes(noise):
    seq, cds = planted_genome()
    probs = model_probs(len(seq), cds, np.random.default_rng(1), noise=noise)
    calls = decode(seq, probs, seqid="chr")
    assert parts_of(calls) == sorted(cds)
    assert all(c.score > 0 and not (c.partial5 or c.partial3) for c in calls)
    assert [c.id for c in calls] == ["chr_1", "chr_2", "chr_3", "chr_4"]


def test_uninformative_probabilities_call_nothing():
    seq, _ = planted_genome()
    probs = np.full((len(seq), 2, 4), 0.25)  # logit(0.25) < 0 everywhere
    assert decode(seq, probs) == []


# ---- brute force: every ORF enumerated codon by codon, scored in float64 -------------------------


def brute_force(seq, probs, cfg, table=11):
    code = CodonTable.unambiguous_dna_by_id[table]
    starts = {c for c in cfg.start_codons if c in code.start_codons}
    n = len(seq)
    q = np.clip(probs.astype(np.float64), cfg.eps, 1 - cfg.eps)
    logit = np.log(q) - np.log1p(-q)
    candidates = []
    for strand, s_seq, lg in ((1, seq, logit[:, 0]), (-1, reverse_complement(seq), logit[::-1, 1])):
        ends = [(t + 3, False) for t in range(n - 2) if s_seq[t : t + 3] in code.stop_codons]
        if cfg.allow_partial:  # a frame running off the 3' end
            for f in range(3):
                last = f + 3 * ((n - f) // 3)
                in_frame = [e for e, _ in ends if e % 3 == last % 3]
                if not in_frame or max(in_frame) < last:
                    ends.append((last, True))
        for e, p3 in ends:
            best = None
            s = e - 6
            while s >= 0 and s_seq[s : s + 3] not in code.stop_codons:
                options = [(s, False)] if s_seq[s : s + 3] in starts else []
                if s < 3 and cfg.allow_partial and not options:
                    options = [(s, True)]  # the frame runs off the 5' end
                for start, p5 in options:
                    if e - start >= cfg.min_length:
                        score = sum(lg[j, (j - start) % 3 + 1] for j in range(start, e))
                        if best is None or score >= best[0]:  # walking 5'-wards: ties go to the longer ORF
                            best = (score, start, p5)
                s -= 3
            if best and best[0] > cfg.min_score:
                a, b = best[1], e
                parts = ((a, b, 1),) if strand == 1 else ((n - b, n - a, -1),)
                candidates.append((best[0], parts, best[2], p3))
    candidates.sort(key=lambda c: -c[0])
    taken = np.zeros(n, dtype=bool)
    kept = []
    for score, parts, p5, p3 in candidates:
        ((a, b, _),) = parts
        if taken[a:b].sum() <= cfg.max_overlap:
            taken[a:b] = True
            kept.append((parts, score, p5, p3))
    return sorted(kept)


@pytest.mark.parametrize("seed", range(6))
def test_matches_the_brute_force_reference_on_random_data(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(300, 700))
    seq = "".join(rng.choice(list("ACGT"), size=n))
    # A "model" that believes in random stretches on either strand, in random frames, plus noise:
    # many ORFs score above zero, overlapping each other, some running off the ends.
    fake = []
    for _ in range(12):
        a = int(rng.integers(0, n - 60))
        fake.append(((a, a + int(rng.integers(30, min(300, n - a))), int(rng.choice([1, -1]))),))
    probs = model_probs(n, fake, rng, confidence=0.8, noise=0.5)
    cfg = DecoderConfig(min_length=30, max_overlap=int(rng.integers(0, 40)))
    want = brute_force(seq, probs, cfg)
    got = sorted((c.parts, c.score, c.partial5, c.partial3) for c in decode(seq, probs, config=cfg))
    assert len(want) >= 3  # the comparison exercises scoring, choice of start and the overlap rule
    assert [(p, p5, p3) for p, _, p5, p3 in got] == [(p, p5, p3) for p, _, p5, p3 in want]
    np.testing.assert_allclose([s for _, s, _, _ in got], [s for _, s, _, _ in want], rtol=1e-4, atol=1e-3)


def test_partial_genes_at_the_ends_of_a_linear_sequence():
    seq, cds = planted_genome()
    probs = model_probs(len(seq), cds, np.random.default_rng(1))
    (first,), (last,) = cds[0], cds[-1]
    # Cut inside gene 1 (codon-aligned, not at a start codon) and 200 bases into gene 4.
    offset = next(k for k in range(30, 90, 3) if seq[first[0] + k : first[0] + k + 3] not in ("ATG", "GTG", "TTG"))
    lo = first[0] + offset
    sub, sub_probs = seq[lo : last[0] + 200], probs[lo : last[0] + 200]
    calls = decode(sub, sub_probs)
    assert len(calls) == 4
    head, tail = calls[0], calls[-1]
    assert head.parts == ((0, first[1] - lo, 1),) and head.partial5 and not head.partial3
    assert tail.parts == ((last[0] - lo, last[0] - lo + 198, 1),) and tail.partial3 and not tail.partial5
    assert sorted(c.parts for c in calls[1:3]) == sorted(tuple((a - lo, b - lo, s) for a, b, s in x) for x in cds[1:3])
    # Without partial genes, the truncated head is called from its first start codon inside the window.
    complete = decode(sub, sub_probs, config=DecoderConfig(allow_partial=False))
    assert not any(c.partial5 or c.partial3 for c in complete)
    assert [c.parts for c in complete[1:]] == [c.parts for c in calls[1:3]]
    assert complete[0].three_prime == head.three_prime and complete[0].five_prime > 0


def rotate_parts(parts, shift, n):
    """Forward parts of a CDS on a circular sequence rotated left by ``shift``, split at the new origin."""
    out = []
    for a, b, s in parts:
        a2, b2 = (a - shift) % n, (b - shift - 1) % n + 1
        pieces = [(a2, b2)] if a2 < b2 else [(a2, n), (0, b2)]
        out += [(x, y, s) for x, y in (pieces if s == 1 else pieces[::-1])]
    return tuple(out)


@pytest.mark.parametrize("gene_index", [0, 1])
def test_gene_across_the_origin_of_a_circular_sequence(gene_index):
    seq, cds = planted_genome()
    n = len(seq)
    probs = model_probs(n, cds, np.random.default_rng(2))
    a, b, strand = cds[gene_index][0]
    shift = (a + b) // 2  # the new origin falls in the middle of the gene
    rseq, rprobs = seq[shift:] + seq[:shift], np.roll(probs, -shift, axis=0)
    calls = decode(rseq, rprobs, circular=True)
    want = sorted(rotate_parts(parts, shift, n) for parts in cds)
    assert parts_of(calls) == want
    crossing = [c for c in calls if len(c.parts) == 2]
    assert len(crossing) == 1 and crossing[0].strand == strand
    # As a linear sequence the same gene is two partial pieces.
    linear = decode(rseq, rprobs, circular=False)
    assert sum(c.partial5 or c.partial3 for c in linear) == 2


def test_circular_calls_do_not_depend_on_where_the_origin_is():
    seq, cds = planted_genome(seed=3)
    n = len(seq)
    probs = model_probs(n, cds, np.random.default_rng(4), noise=0.3)
    base = decode(seq, probs, circular=True)
    for shift in (1, 2, 500, 1234):
        rotated = decode(seq[shift:] + seq[:shift], np.roll(probs, -shift, axis=0), circular=True)
        assert parts_of(rotated) == sorted(rotate_parts(c.parts, shift, n) for c in base)


def test_genetic_code_4_reads_through_tga():
    rng = np.random.default_rng(5)
    no_start = [c for c in SENSE if c not in ("ATG", "GTG", "TTG")]
    g = "ATG" + "".join(rng.choice(SENSE, size=40)) + "TGA" + "".join(rng.choice(no_start, size=40)) + "TAA"
    seq = "CCCCCC" + g + "CCCCCCCCC"
    true = ((6, 6 + len(g), 1),)
    probs = model_probs(len(seq), [true], rng)
    cfg = DecoderConfig(allow_partial=False, min_length=60)
    assert parts_of(decode(seq, probs, transl_table=4, config=cfg)) == [true]
    # Under the standard bacterial code the TGA ends the gene, and nothing starts after it.
    assert parts_of(decode(seq, probs, transl_table=11, config=cfg)) == [((6, 6 + 3 + 120 + 3, 1),)]
    is_start, is_stop = codon_tables(4)
    tga = 16 * 3 + 4 * 2 + 0
    assert not is_stop[tga] and codon_tables(11)[1][tga]
    assert is_start.sum() == 3


def test_minimum_length():
    rng = np.random.default_rng(6)
    g = gene(rng, 18)  # 60 bp with start and stop
    seq = "CCCCCCCCC" + g + "CCCCCCCCC"
    probs = model_probs(len(seq), [((9, 69, 1),)], rng)
    assert decode(seq, probs, config=DecoderConfig(min_length=61, allow_partial=False)) == []
    assert parts_of(decode(seq, probs, config=DecoderConfig(min_length=60))) == [((9, 69, 1),)]
    # Given the choice, the true start beats running off the edge; without it, the edge is all there is.
    assert parts_of(decode(seq, probs, config=DecoderConfig(min_length=61))) == [((0, 69, 1),)]


def test_overlap_rule_keeps_the_higher_scorer():
    rng = np.random.default_rng(7)
    ends_in_t = [c for c in SENSE if c.endswith("T")]
    a = "ATG" + "".join(rng.choice(SENSE, size=99)) + rng.choice(ends_in_t) + "TAA"
    b = "ATG" + "".join(rng.choice(SENSE, size=39)) + rng.choice(ends_in_t) + "TAA"
    # Stop codons sharing 4 bases on opposite strands: A ends ...TTAA, the reverse gene B begins TTAA...
    assert a[-4:] == reverse_complement(b)[:4] == "TTAA"
    seq = "C" * 30 + a + reverse_complement(b)[4:] + "C" * 30
    fwd, rev = (30, 30 + len(a), 1), (30 + len(a) - 4, 30 + len(a) - 4 + len(b), -1)
    probs = model_probs(len(seq), [(fwd,), (rev,)], rng)
    both = decode(seq, probs, config=DecoderConfig(max_overlap=4))
    assert parts_of(both) == [(fwd,), (rev,)]
    (one,) = decode(seq, probs, config=DecoderConfig(max_overlap=3))
    assert one.parts == (fwd,)  # the longer gene scores higher and is kept


def test_start_bonus_and_logit_offset_move_the_start_downstream():
    # A GTG 30 bp upstream of the true ATG, with the 30 bp between read as coding at 0.6 (a model
    # unsure where the gene begins): plain log-odds extend the gene to the GTG (+0.4 per base); an
    # offset above log(0.6/0.4) = 0.41 or a GTG penalty above 30 x 0.41 = 12.2 keep the true start.
    rng = np.random.default_rng(8)
    no_start = [c for c in SENSE if c not in ("ATG", "GTG", "TTG")]
    core = "ATG" + "".join(rng.choice(no_start, size=60)) + "TAA"
    seq = "CCCCCC" + "GTG" + "".join(rng.choice(no_start, size=9)) + core + "CCCCCC"
    upstream, true = (6, 6 + 30 + len(core), 1), (36, 36 + len(core), 1)
    probs = model_probs(len(seq), [(upstream,)], rng, confidence=0.9)
    probs[6:36, 0] = model_probs(len(seq), [(upstream,)], rng, confidence=0.6)[6:36, 0]
    plain = DecoderConfig(allow_partial=False)
    assert parts_of(decode(seq, probs, config=plain)) == [(upstream,)]
    assert parts_of(decode(seq, probs, config=DecoderConfig(allow_partial=False, logit_offset=0.5))) == [(true,)]
    penalised = DecoderConfig(allow_partial=False, start_bonus={"ATG": 0.0, "GTG": -13.0})
    assert parts_of(decode(seq, probs, config=penalised)) == [(true,)]
    mild = DecoderConfig(allow_partial=False, start_bonus={"GTG": -11.0})
    assert parts_of(decode(seq, probs, config=mild)) == [(upstream,)]
    with pytest.raises(ValueError, match="not start codons: AAA"):
        DecoderConfig(start_bonus={"AAA": 1.0})
    with pytest.raises(ValueError, match=r"start_bonus\[GTG\] must be a finite number"):
        DecoderConfig(start_bonus={"GTG": "-2"})
    with pytest.raises(ValueError, match="logit_offset must be a finite number"):
        DecoderConfig(logit_offset=float("nan"))


def test_bad_inputs_are_named():
    seq = "ATG" * 10
    with pytest.raises(InputError, match=r"expected shape \(30, 2, 4\)"):
        decode(seq, np.full((29, 2, 4), 0.25))
    with pytest.raises(InputError, match="finite probabilities"):
        decode(seq, np.full((30, 2, 4), 1.5))
    with pytest.raises(InputError, match="transl_table 99"):
        decode(seq, np.full((30, 2, 4), 0.25), transl_table=99)
    with pytest.raises(ValueError, match="min_length"):
        DecoderConfig(min_length=3)


def test_coding_probability_is_one_minus_noncoding():
    probs = np.random.default_rng(8).dirichlet(np.ones(4), size=(50, 2))
    np.testing.assert_allclose(coding_probability(probs), probs[:, :, 1:].sum(-1))
