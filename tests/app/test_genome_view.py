"""The genome page's data helpers and chart: the gene table's coordinates, window clipping (also across
the origin), coding probabilities binned against a float64 loop, and the chart's checks."""

import numpy as np
import pandas as pd
import pytest

from app import charts, genome_view
from pipelines.genome.annotation import CDS


def test_genes_table_gives_gff3_coordinates_lengths_and_partial_ends():
    calls = [CDS("s", ((9, 99, 1),), id="a", score=12.5),
             CDS("s", ((200, 290, -1),), id="b", partial3=True),
             CDS("s", ((990, 1000, 1), (0, 20, 1)), id="c")]  # across the origin of a 1000 bp circle
    table = genome_view.genes_table(calls)
    assert list(table["left"]) == [10, 201, 991] and list(table["right"]) == [99, 290, 20]
    assert list(table["strand"]) == ["+", "-", "+"] and list(table["length_bp"]) == [90, 90, 30]
    assert list(table["length_aa"]) == [29, 30, 9]  # the stop codon is not an amino acid
    assert list(table["partial"]) == ["", "3'", ""]
    assert genome_view.genes_table([]).columns.tolist() == table.columns.tolist()


def test_gene_intervals_are_clipped_to_the_window_and_split_at_the_origin():
    calls = [CDS("s", ((9, 99, 1),), id="a"), CDS("s", ((990, 1000, 1), (0, 20, 1)), id="c"),
             CDS("t", ((0, 90, 1),), id="other")]
    whole = genome_view.gene_intervals(calls, "s", 1, 1000)
    assert list(zip(whole["id"], whole["start"], whole["end"])) == [("a", 10, 99), ("c", 991, 1000), ("c", 1, 20)]
    window = genome_view.gene_intervals(calls, "s", 50, 995)
    assert list(zip(window["id"], window["start"], window["end"])) == [("a", 50, 99), ("c", 991, 995)]
    assert genome_view.gene_intervals(calls, "s", 100, 900).empty


@pytest.mark.parametrize("length, lo, hi, max_points", [(1000, 1, 1000, 64), (1000, 17, 603, 50), (37, 1, 37, 100),
                                                        (5000, 2, 4999, 1500), (10, 4, 4, 3)])
def test_binned_coding_is_the_mean_of_each_bin(length, lo, hi, max_points):
    coding = np.random.default_rng(length + lo).random((length, 2)).astype(np.float32)
    frame = genome_view.binned_coding(coding, lo, hi, max_points)
    for k, strand in enumerate("+-"):
        rows = frame[frame["strand"] == strand]
        assert len(rows) <= max_points and rows["position"].iloc[0] == lo
        edges = [*rows["position"], hi + 1]
        expected = [np.mean(coding[a - 1 : b - 1, k].astype(np.float64)) for a, b in zip(edges, edges[1:])]
        np.testing.assert_allclose(rows["probability"], expected, rtol=1e-12)
        sizes = np.diff(edges)
        assert len(set(sizes[:-1])) <= 1 and sizes[-1] <= sizes[0]  # equal bins, the last one maybe shorter
    if hi - lo + 1 <= max_points:
        assert len(frame) == 2 * (hi - lo + 1)  # single bases when they fit


def test_binned_coding_and_the_chart_refuse_bad_arguments():
    coding = np.zeros((10, 2))
    with pytest.raises(ValueError, match="shape"):
        genome_view.binned_coding(np.zeros(10), 1, 10)
    with pytest.raises(ValueError, match="lo"):
        genome_view.binned_coding(coding, 5, 11)
    genes = pd.DataFrame({"id": ["a"], "strand": ["+"], "start": [1], "end": [9], "length_bp": [9]})
    with pytest.raises(ValueError, match="coding: missing columns"):
        charts.genome_track(genes, pd.DataFrame({"position": [1]}), 1, 10)
    with pytest.raises(ValueError, match="after"):
        charts.genome_track(genes, genome_view.binned_coding(coding, 1, 10), 10, 1)
