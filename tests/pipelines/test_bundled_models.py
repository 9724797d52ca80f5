"""The bundled model packages (data/models/): each loads strictly, records finite held-out figures and
the commands that made it, and is accounted for in data/PROVENANCE.md."""

import math
from pathlib import Path

import pytest

from seqmodels.package import load_package

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = sorted(p for p in (ROOT / "data" / "models").iterdir() if p.is_dir())


def test_there_is_a_package_for_each_task():
    tasks = {load_package(p)[1]["task"] for p in PACKAGES}
    assert tasks == {"classification", "forecasting", "tagging"}


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.name)
def test_package_loads_and_records_its_test_figures(package):
    model, config, metrics = load_package(package)
    assert not model.training and sum(t.numel() for t in model.parameters()) > 0
    figures = {k: v for k, v in metrics["test"].items() if isinstance(v, float)}
    assert figures and all(math.isfinite(v) for v in figures.values())
    assert metrics["fit_command"].startswith("seqmamba fit") and metrics["test_command"]
    assert config.get("licence") or config["task"] != "tagging"  # genomes' terms travel with the caller


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.name)
def test_package_is_described_in_the_provenance_file(package):
    assert f"`{package.name}`" in (ROOT / "data" / "PROVENANCE.md").read_text()


def test_the_listing_leads_with_the_figures_each_task_is_judged_by(capsys):
    from pipelines.models import main as models_main

    assert models_main([]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    metrics = {name: [w.split("=")[0] for w in row.split() if "=" in w] for name, row in rows.items()}
    assert metrics["gue_prom_core_notata-mamba"][0] == "mcc" and metrics["gue_tf_0-mamba"][0] == "mcc"
    assert metrics["gene_caller-mamba"] == ["sensitivity", "precision", "exact_start", "coding_f1"]
    assert metrics["exchange_rate-mamba-h96"][:2] == ["mse", "mae"]


@pytest.mark.slow
def test_the_gene_caller_finds_most_genes_of_phage_lambda(tmp_path):
    # Phage lambda was one of the caller's training genomes: this checks the bundled weights, the
    # stitching and the decoder the package ships (config.json 'decoder') end to end, not
    # generalisation (that is the held-out B. subtilis figure).
    import json

    from pipelines.genome.annotate_eval import main as annotate_eval
    from pipelines.genome.decoder import decoder_for_package
    from pipelines.genome.predict import annotate_genome

    package = ROOT / "data" / "models" / "gene_caller-mamba"
    model, config, _ = load_package(package)
    decoder = decoder_for_package(config, source=str(package))
    assert decoder.adaptive  # the shipped setting, chosen on the tuning genomes
    annotate_genome(model, ROOT / "data" / "samples" / "phage_lambda_NC_001416.fa", tmp_path / "lambda.gff3",
                    genetic_code=11, progress=False, decoder=decoder)
    reference = ROOT.parent / "shared" / "data" / "genomes" / "phage_lambda" / "NC_001416.gbk.gz"
    if not reference.is_file():
        pytest.skip(f"{reference} is not here (the shared data folder)")
    assert annotate_eval([str(tmp_path / "lambda.gff3"), str(reference), "--json", str(tmp_path / "m.json")]) == 0
    ours = json.loads((tmp_path / "m.json").read_text())["prediction"]
    assert ours["sensitivity"] > 0.6 and ours["precision"] > 0.8
