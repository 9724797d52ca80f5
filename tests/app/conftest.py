"""Fixtures for the app tests: tiny model packages, AppTest on the real entry script, a live server."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from live_app import free_port, start_app, stop_app

REPO = Path(__file__).resolve().parents[2]
ENTRY = REPO / "app" / "Home.py"
SAMPLES = REPO / "data" / "samples"


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """A folder of two tiny untrained packages (DNA classifier, forecaster), like data/models/."""
    import torch

    from seqmodels import MambaClassifier, MambaForecaster, save_package

    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    save_package(MambaClassifier(n_classes=2, class_names=("negative", "positive"), d_model=8, n_layer=1,
                                 rc_equivariant=True),
                 root / "tiny_dna", metrics={"test_mcc": 0.5, "seed": 0},
                 extra_config={"training_data": "synthetic test data", "licence": "CC0-1.0"})
    save_package(MambaForecaster(input_len=24, horizon=6, d_model=8, n_layer=1), root / "tiny_forecast",
                 metrics={"test_mse": 0.1}, extra_config={"training_data": "synthetic series", "licence": "CC0-1.0"})
    return root


@pytest.fixture
def models_env(tiny_models, monkeypatch):
    """Point the app's bundled-model discovery at the tiny packages."""
    monkeypatch.setenv("SEQMAMBA_MODELS", str(tiny_models))
    return tiny_models


@pytest.fixture
def app_url(models_env, tmp_path):
    """URL of the app started with `seqmamba app` on a free port, serving the tiny packages."""
    port = free_port()
    proc = start_app(port, dict(os.environ), tmp_path / "app.log")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_app(proc)


# A gene caller that needs no training: its per-base output depends on the base alone. On the forward
# strand G, C, A read as codon positions 1, 2, 3 (T as non-coding); on the reverse strand their
# complements do. So a planted gene ATG (GCA)n TAA on either strand is coding in exactly its frame,
# and the decoder calls it, while random DNA in between scores negative in every frame.
GCA_CODON_CLASSES = {0: {"G": 1, "C": 2, "A": 3, "T": 0}, 1: {"C": 1, "G": 2, "T": 3, "A": 0}}


def gca_gene_caller():
    """A MambaTagger (2 strand tracks x 4 classes) with hand-set weights: see GCA_CODON_CLASSES."""
    import torch

    from seqmodels import MambaTagger, vocab

    model = MambaTagger(n_tracks=2, n_classes=4, d_model=8, n_layer=1, d_state=4,
                        track_names=("forward", "reverse"), class_names=("noncoding", "codon1", "codon2", "codon3"))
    with torch.no_grad():
        for layer in model.backbone.stack.layers:
            layer.mixer.out_proj.weight.zero_()  # no layer adds anything: features = norm(embedding)
        embedding = model.backbone.embedding.weight
        embedding.copy_(4 * torch.eye(embedding.shape[0], embedding.shape[1]) - 0.5)  # token t -> axis t
        model.head.weight.zero_()
        model.head.bias.zero_()
        for track, classes in GCA_CODON_CLASSES.items():
            for base, cls in classes.items():
                model.head.weight[4 * track + cls, int(vocab.encode(base)[0])] = 10.0
    return model.eval()


def planted_genome(length: int, genes: list[tuple[int, int, int]], seed: int = 0) -> str:
    """Random DNA with genes ATG (GCA)n TAA planted at (start, codons n, strand) (0-based starts)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    seq = list(rng.choice(list("ACGT"), size=length))
    for start, n, strand in genes:
        gene = "ATG" + "GCA" * n + "TAA"
        if strand == -1:
            gene = gene[::-1].translate(str.maketrans("ACGT", "TGCA"))
        seq[start : start + len(gene)] = gene
    return "".join(seq)


@pytest.fixture(scope="session")
def gene_models(tiny_models, tmp_path_factory):
    """The tiny packages plus the hand-set gene caller ``tiny_genes``, in one models folder."""
    import shutil

    from seqmodels import save_package

    root = tmp_path_factory.mktemp("models_with_genes")
    for package in tiny_models.iterdir():
        shutil.copytree(package, root / package.name)
    save_package(gca_gene_caller(), root / "tiny_genes", metrics={"test": {"sensitivity": 1.0}},
                 extra_config={"training_data": {"dataset": "none: hand-set weights", "genomes": ["synthetic"]},
                               "licence": "CC0-1.0"})
    return root


@pytest.fixture
def genes_env(gene_models, monkeypatch):
    """Point the app's bundled-model discovery at the tiny packages with a gene caller among them."""
    monkeypatch.setenv("SEQMAMBA_MODELS", str(gene_models))
    return gene_models
