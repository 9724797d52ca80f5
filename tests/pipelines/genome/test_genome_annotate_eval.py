"""``seqmamba annotate-eval``: the command on hand-built files, pyrodigal on phage lambda, and (slow) the
reproduction of issue 9's pyrodigal figures on four genomes."""

import json
import os
import sys

import pytest

from pipelines.cli import main as cli_main
from pipelines.genome.annotate_eval import main
from pipelines.genome.annotation import CDS, AnnotatedSequence, read_genbank
from pipelines.genome.evaluate import evaluate
from pipelines.genome.gff3 import read_gff3, write_gff3
from pipelines.genome.prodigal import choose_mode, run_pyrodigal

FEATURES = ["CDS 1..30", "CDS complement(36..50)", "CDS 11..19"]
CALLS = [
    CDS("TEST1", ((0, 30, 1),)),  # exact
    CDS("TEST1", ((35, 47, -1),)),  # right stop, other start
    CDS("TEST1", ((10, 19, -1),)),  # wrong strand
    CDS("TEST1", ((40, 46, 1),)),  # nothing there
]


@pytest.fixture
def files(tmp_path, write_genbank, random_dna):
    reference = write_genbank(random_dna(50), FEATURES)
    pred = tmp_path / "pred.gff3"
    write_gff3(pred, CALLS, {"TEST1": (50, False)})  # named by LOCUS name, the reference's id is TEST1.1
    return pred, reference


def test_command_prints_and_writes_the_metrics(files, tmp_path, capsys):
    pred, reference = files
    out_json = tmp_path / "m.json"
    assert cli_main(["annotate-eval", str(pred), str(reference), "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert "sensitivity                   0.6667" in out and "precision                     0.5000" in out
    metrics = json.loads(out_json.read_text())["prediction"]
    assert metrics["exact_start"] == 0.5 and metrics["coding_f1"] == pytest.approx(84 / 102)


def test_listed_in_the_cli_help(capsys):
    assert cli_main(["--help"]) == 0
    assert "annotate-eval" in capsys.readouterr().out


def test_calls_on_an_unknown_sequence(tmp_path, write_genbank, random_dna, capsys):
    reference = write_genbank(random_dna(50), FEATURES)
    pred = tmp_path / "pred.gff3"
    write_gff3(pred, [CDS("chrX", ((0, 30, 1),))], {"chrX": (50, False)})
    assert main([str(pred), str(reference)]) == 1
    assert "['chrX'] are not in the reference" in capsys.readouterr().err


def test_length_disagreement(tmp_path, write_genbank, random_dna, capsys):
    reference = write_genbank(random_dna(50), FEATURES)
    pred = tmp_path / "pred.gff3"
    write_gff3(pred, [], {"TEST1.1": (60, False)})
    assert main([str(pred), str(reference)]) == 1
    assert "gives TEST1.1 as 60 bp, the reference has 50 bp" in capsys.readouterr().err


def test_without_pyrodigal_the_message_says_what_to_install(files, monkeypatch, capsys):
    pred, reference = files
    monkeypatch.setitem(sys.modules, "pyrodigal", None)  # import pyrodigal now raises ImportError
    assert main([str(pred), str(reference), "--prodigal"]) == 1
    assert "pip install 'seqmamba[eval]'" in capsys.readouterr().err


def test_auto_mode_is_meta_for_viruses_and_small_genomes():
    big, small, virus = (AnnotatedSequence("x", "A" * int(n), is_virus=v) for n, v in ((2e5, 0), (5e4, 0), (2e5, 1)))
    assert [choose_mode([g]) for g in (big, small, virus)] == ["single", "meta", "meta"]
    assert choose_mode([small], "single") == "single"
    with pytest.raises(ValueError, match="prodigal mode"):
        choose_mode([big], "fast")


LAMBDA = "genomes/phage_lambda/NC_001416.gbk.gz"


def test_pyrodigal_on_phage_lambda(shared_data, tmp_path, capsys):
    pyrodigal = pytest.importorskip("pyrodigal")
    reference = os.path.join(shared_data, LAMBDA)
    (seq,) = read_genbank(reference)
    assert (seq.is_virus, seq.transl_table, len(seq.cds)) == (True, 11, 73)
    # The reference against itself is perfect.
    pred = tmp_path / "ref.gff3"
    write_gff3(pred, seq.cds, {seq.id: (len(seq), seq.circular)})
    out_json = tmp_path / "m.json"
    assert main([str(pred), reference, "--prodigal", "--json", str(out_json)]) == 0
    assert "pyrodigal (meta)" in capsys.readouterr().out
    result = json.loads(out_json.read_text())
    mine = result["prediction"]
    assert (mine["sensitivity"], mine["precision"], mine["exact_start"], mine["coding_f1"]) == (1, 1, 1, 1)
    theirs = result["pyrodigal (meta)"]
    # pyrodigal 3.7.1, meta mode: 64 of 73 CDS found (two pairs share a stop), all 62 calls right.
    assert (theirs["n_predicted"], theirs["matched_reference"], theirs["matched_predicted"]) == (62, 64, 62)
    assert theirs["exact_starts"] == 56 and theirs["coding_f1"] == pytest.approx(0.9761, abs=5e-4)

    # Prodigal's own GFF3 of the same calls, read back, gives the same figures: coordinates agree.
    genes = pyrodigal.GeneFinder(meta=True).find_genes(seq.seq.encode())
    own = tmp_path / "prodigal.gff3"
    with open(own, "w") as fh:
        genes.write_gff(fh, sequence_id=seq.id)
    calls, _ = read_gff3(own)
    direct, _ = run_pyrodigal([seq], "meta")
    assert [c.parts for c in calls] == [c.parts for c in direct]
    lengths = {seq.id: len(seq)}
    assert evaluate(calls, seq.cds, lengths) == evaluate(direct, seq.cds, lengths)


ISSUE_FIGURES = {  # issue 9: pyrodigal 3.7.1 (sensitivity, precision, exact start, base coding F1)
    "genomes/ecoli_k12_mg1655/GCF_000005845.2_ASM584v2_genomic.gbff.gz": ("single", (0.960, 0.954, 0.942, 0.983)),
    "genomes/bsubtilis_168/Bsub_referencegenome.gb.gz": ("single", (0.975, 0.977, 0.906, 0.992)),
    "genomes/mgenitalium_g37/Mgen_referencegenome.gb.gz": ("single", (0.984, 0.962, 0.917, 0.989)),
    "genomes/yersinia_phage_fhe_yen9_03/LT960552.gbk.gz": ("meta", (0.987, 0.991, 0.949, 0.996)),
}


@pytest.mark.slow
@pytest.mark.parametrize("path", ISSUE_FIGURES)
def test_reproduces_the_issue_pyrodigal_figures(shared_data, path):
    pytest.importorskip("pyrodigal")
    mode, expected = ISSUE_FIGURES[path]
    sequences = read_genbank(os.path.join(shared_data, path))
    assert choose_mode(sequences) == mode  # auto mode picks what the issue's table used
    calls, _ = run_pyrodigal(sequences)
    m = evaluate(calls, [c for s in sequences for c in s.cds], {s.id: len(s) for s in sequences})
    got = (m.sensitivity, m.precision, m.exact_start, m.coding_f1)
    assert got == pytest.approx(expected, abs=0.005)
