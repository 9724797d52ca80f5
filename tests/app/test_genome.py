"""The genome page through AppTest: it says when no gene caller is there, calls the planted genes of a
synthetic genome with a hand-set gene caller exactly, writes the GFF3 the genome pipeline writes, zooms,
annotates the phage lambda sample, and shows the data layer's messages for bad or too large input."""

import gzip
import io
import json
import zipfile

import pytest
from conftest import ENTRY, SAMPLES, gca_gene_caller, planted_genome
from streamlit.testing.v1 import AppTest

GENES = [(500, 100, 1), (2000, 80, -1), (4000, 150, 1), (6500, 60, -1)]  # (0-based start, codons, strand)
GENOME = planted_genome(8000, GENES)


def open_genome_page() -> AppTest:
    at = AppTest.from_file(str(ENTRY), default_timeout=120).run()
    return at.switch_page("pages/genome.py").run()


def upload(at: AppTest, name: str, data: bytes) -> AppTest:
    at.file_uploader(key="genome_upload").upload(name, data, "application/octet-stream")
    return at.run()


def call_genes_now(at: AppTest) -> AppTest:
    at.button(key="genome_go").click()
    return at.run()


def chart(at: AppTest) -> dict:
    (spec,) = [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")]
    return spec


def test_without_a_gene_caller_the_page_says_none_is_bundled_and_states_its_limit(models_env):
    at = open_genome_page()
    assert not at.exception and not at.error
    assert any("No gene caller is bundled" in w.value for w in at.warning)
    assert not [b for b in at.button if b.key == "genome_go"]
    assert "250,000 bp" in at.caption[0].value and "seqmamba score" in at.caption[0].value


def test_an_uploaded_gene_caller_can_be_chosen(models_env, gene_models):
    at = open_genome_page()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for f in sorted((gene_models / "tiny_genes").iterdir()):
            zf.write(f, f"mine/{f.name}")
    at.file_uploader(key="genome_package").upload("mine.zip", buf.getvalue(), "application/zip")
    at.run()
    assert not at.exception and not at.error
    assert at.selectbox(key="genome_model").options == ["mine (uploaded)"]


def test_the_planted_genes_are_called_tracked_tabled_and_written_as_gff3(genes_env, tmp_path):
    from pipelines.genome.gff3 import read_gff3
    from pipelines.genome.predict import annotate_genome

    at = open_genome_page()
    assert at.selectbox(key="genome_model").options == ["tiny_genes"]  # classifiers left out
    at = call_genes_now(upload(at, "planted.fa.gz", gzip.compress(f">planted\n{GENOME}\n".encode())))
    assert not at.exception and not at.error
    table = at.dataframe[0].value
    expected = [(start + 1, start + 3 * n + 6, "+" if strand == 1 else "-", 3 * n + 6, n + 1)
                for start, n, strand in GENES]
    assert list(zip(table["left"], table["right"], table["strand"], table["length_bp"], table["length_aa"])) == \
        expected
    assert {m.label: m.value for m in at.metric} | {"Time": None} == {"Genes": "4", "Bases": "8,000", "Time": None}

    # The GFF3 offered is what the genome pipeline writes for the same model, genome and settings.
    results = at.session_state["genome_results"]["value"]
    (tmp_path / "planted.fa").write_text(f">planted\n{GENOME}\n")
    annotate_genome(gca_gene_caller(), tmp_path / "planted.fa", tmp_path / "direct.gff3", tmp_path / "direct.bg",
                    progress=False)
    assert results["gff3"] == (tmp_path / "direct.gff3").read_bytes()
    assert results["bedgraph"] == (tmp_path / "direct.bg").read_bytes()
    calls, lengths = read_gff3(tmp_path / "direct.gff3")
    assert lengths == {"planted": 8000} and len(calls) == 4
    assert at.download_button(key="genome_download_gff3").proto.label == "Download the genes (GFF3)"

    # The chart: gene lanes above the coding probability, on the whole genome first, then the window chosen.
    spec = chart(at)
    assert [panel["title"] for panel in spec["vconcat"]] == ["Called genes", "Coding probability"]
    assert spec["vconcat"][1]["encoding"]["x"]["scale"]["domain"] == [0.5, 8000.5]
    at.slider(key="genome_window").set_value((1900, 2300)).run()
    assert not at.exception
    assert chart(at)["vconcat"][0]["encoding"]["x"]["scale"]["domain"] == [1899.5, 2300.5]


def test_the_phage_lambda_sample_is_annotated(genes_env):
    from pipelines.data.fasta import read_sequences

    at = open_genome_page()
    at.radio(key="genome_input_kind").set_value(at.radio(key="genome_input_kind").options[1]).run()
    at = call_genes_now(at)
    assert not at.exception and not at.error
    assert {m.label: m.value for m in at.metric}["Bases"] == "48,502"
    text = next(read_sequences(SAMPLES / "phage_lambda_NC_001416.fa")).seq.upper()
    for _, gene in at.dataframe[0].value.iterrows():  # every call an ORF read by this model
        assert gene["sequence"] == "NC_001416.1" and gene["length_bp"] % 3 == 0
        if gene["strand"] == "+" and not gene["partial"]:
            assert text[gene["left"] - 1 : gene["left"] + 2] in ("ATG", "GTG", "TTG")


@pytest.mark.parametrize("name, data, message", [
    ("protein.fa", b">p1\nMKVLLAEEFFPQWRRSTLLKPEEFF\n", "record 'p1'"),
    ("big.fa", f">big\n{'ACGT' * 62_501}\n".encode(), "more than 250,000 bp"),
])
def test_bad_or_too_large_genomes_get_a_short_message_and_the_page_goes_on(genes_env, name, data, message):
    at = call_genes_now(upload(open_genome_page(), name, data))
    assert not at.exception
    assert len(at.error) == 1 and at.error[0].value.startswith(name) and message in at.error[0].value
    at = call_genes_now(upload(at, "good.fa", f">good\n{GENOME}\n".encode()))
    assert not at.error and len(at.dataframe[0].value) == 4
