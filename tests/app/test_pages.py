"""Each page's logic through Streamlit's AppTest: model choice, scoring, charts, downloads, error messages."""

import gzip
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

REPO = Path(__file__).resolve().parents[2]
ENTRY = REPO / "app" / "Home.py"
# The phage genome sample (48 kb in one record) is the genome page's input; scoring it with a
# classifier is a valid but slow check, so it runs with the slow tests only.
SAMPLE_FASTAS = [pytest.param(p, marks=[pytest.mark.slow] if p.name.startswith("phage") else [], id=p.name)
                 for p in sorted((REPO / "data" / "samples").glob("*")) if ".fa" in p.name or ".fq" in p.name]


def open_page(page: str) -> AppTest:
    at = AppTest.from_file(str(ENTRY), default_timeout=120).run()
    return at.switch_page(f"pages/{page}.py").run()


def charts_of(at: AppTest) -> list:
    return [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")]


def _fasta(n: int, length: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    return "".join(f">s{i} label=positive\n{''.join(rng.choice(list('ACGT'), size=length))}\n" for i in range(n))


# --- Models page -------------------------------------------------------------------------------

def test_models_page_describes_each_bundled_package(models_env):
    at = open_page("models")
    assert not at.exception and not at.error
    assert [h.value for h in at.subheader] == ["tiny_dna", "tiny_forecast"]
    text = " ".join(m.value for m in at.markdown)
    assert "classification" in text and "classes: negative, positive" in text
    assert "forecasting" in text and "horizon 6" in text and "quantiles 0.1, 0.5, 0.9" in text
    assert "synthetic test data" in text and "CC0-1.0" in text
    metrics = at.dataframe[0].value
    assert dict(zip(metrics["metric"], metrics["value"])) == {"test_mcc": 0.5, "seed": 0}


def test_models_page_renders_structured_training_data_and_nested_metrics(genes_env):
    at = open_page("models")
    assert not at.exception and not at.error
    assert [h.value for h in at.subheader] == ["tiny_dna", "tiny_forecast", "tiny_genes"]
    text = " ".join(m.value for m in at.markdown)
    assert "**Training data:** none: hand-set weights" in text and "{" not in text  # no dict printed raw
    assert "tracks: forward, reverse" in text
    tables = [d.value for d in at.dataframe]
    settings = next(t for t in tables if "setting" in t.columns)
    assert dict(zip(settings["setting"], settings["value"])) == {"genomes": "synthetic"}
    assert any(dict(zip(t.get("metric", []), t.get("value", []))) == {"test/sensitivity": 1.0} for t in tables)


def _zip_folder(folder: Path, prefix: str = "") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for f in sorted(folder.iterdir()):
            zf.write(f, prefix + f.name)
    return buf.getvalue()


def test_an_uploaded_package_joins_the_list_and_a_broken_one_shows_a_message(models_env):
    at = open_page("models")
    at.file_uploader(key="models_package").upload("mine.zip", _zip_folder(models_env / "tiny_dna", "mine/"),
                                                  "application/zip")
    at.run()
    assert not at.exception and not at.error
    assert "mine (uploaded)" in [h.value for h in at.subheader]
    at.file_uploader(key="models_package").set_value(("evil.zip", b"PK\x03\x04 not really", "application/zip"))
    at.run()
    assert not at.exception
    assert [e.value for e in at.error] and at.error[0].value.startswith("evil.zip: not a zip file")
    assert "tiny_dna" in [h.value for h in at.subheader]  # the page keeps working


# --- DNA page ----------------------------------------------------------------------------------

def _paste(at: AppTest, text: str) -> AppTest:
    at.radio(key="dna_input_kind").set_value("Paste sequences").run()
    at.text_area(key="dna_paste").input(text)
    return at.run()


def test_dna_page_scores_pasted_sequences_into_table_histogram_and_attribution(models_env):
    at = _paste(open_page("dna"), _fasta(5, 30, seed=0))
    assert not at.exception and not at.error
    table = at.dataframe[0].value
    assert list(table["id"]) == [f"s{i}" for i in range(5)] and set(table["length"]) == {30}
    probs = table[["p_negative", "p_positive"]].to_numpy()
    np.testing.assert_allclose(probs.sum(1), 1, rtol=1e-5)
    assert list(table["predicted"]) == [["negative", "positive"][i] for i in probs.argmax(1)]
    assert at.download_button(key="dna_download").proto.label == "Download all results (CSV)"
    titles = lambda: [c["title"]["text"] if isinstance(c["title"], dict) else c["title"] for c in charts_of(at)]
    assert titles() == ["Predicted probabilities"]  # the attribution runs on request only
    at.selectbox(key="dna_attr_id").set_value("s2").run()
    at.button(key="dna_attr_go").click().run()
    assert not at.exception and not at.error
    assert titles() == ["Predicted probabilities", "Per-base attribution"]
    assert at.slider(key="dna_attr_window").value == (1, 30)
    ((_, seq_id), (scores, explained)), = at.session_state["dna_attr_cache"].items()
    assert seq_id == "s2" and explained == table["predicted"][2]
    assert scores.shape == (30,) and np.isfinite(scores).all() and np.abs(scores).max() > 0


def test_dna_filters_narrow_the_table(models_env):
    at = _paste(open_page("dna"), _fasta(6, 20, seed=1))
    at.text_input(key="dna_f_id").input("s3").run()
    assert list(at.dataframe[0].value["id"]) == ["s3"]


@pytest.mark.parametrize("text, message", [
    (">p1\nMKVLLAEEFFPQWRRSTLLKPEEFF\n", "looks like protein"),
    (">a\nACGT\n>a\nACGT\n", "duplicate record id 'a'"),
    ("date,value\n2020-01-01,3\n", "not FASTA/FASTQ"),
])
def test_bad_dna_input_shows_the_data_layers_message_and_the_page_goes_on(models_env, text, message):
    at = open_page("dna")
    at.radio(key="dna_input_kind").set_value("Upload a file").run()
    at.file_uploader(key="dna_upload").upload("bad.fa", text.encode())
    at.run()
    assert not at.exception
    assert len(at.error) == 1 and at.error[0].value.startswith("bad.fa") and message in at.error[0].value
    at.file_uploader(key="dna_upload").set_value(("good.fa.gz", gzip.compress(_fasta(3, 12, 2).encode()), "x"))
    at.run()
    assert not at.error and len(at.dataframe[0].value) == 3


@pytest.mark.parametrize("sample", SAMPLE_FASTAS)
def test_dna_page_scores_each_sample_file(models_env, sample):
    from pipelines.data.fasta import read_sequences

    at = open_page("dna")
    at.radio(key="dna_input_kind").set_value("Use a sample").run()
    at.selectbox(key="dna_sample").set_value(sample).run()
    assert not at.exception and not at.error
    expected = [r.id for r in read_sequences(sample)][:20_000]
    assert list(at.dataframe[0].value["id"]) == expected


# --- Forecast page -----------------------------------------------------------------------------

def _series_csv(rows: int) -> bytes:
    rng = np.random.default_rng(3)
    dates = pd.date_range("2021-01-01", periods=rows, freq="D")
    frame = pd.DataFrame({"date": dates.strftime("%Y-%m-%d"), "USD": 1 + rng.normal(size=rows).cumsum() * 0.01,
                          "EUR": 2 + rng.normal(size=rows).cumsum() * 0.01})
    return frame.to_csv(index=False).encode()


def test_forecast_page_draws_forecast_interval_and_backtest(models_env):
    at = open_page("forecast")
    at.file_uploader(key="fc_upload").upload("rates.csv", _series_csv(80), "text/csv")
    at.run()
    assert not at.exception and not at.error
    assert at.selectbox(key="fc_series").options == ["USD", "EUR"]
    assert at.slider(key="fc_horizon").value == 6  # the model's horizon
    assert len(charts_of(at)) == 1
    backtest = at.dataframe[0].value
    assert list(backtest.index) == ["model", "repeat last value"] and list(backtest.columns) == ["MAE", "MSE"]
    assert (backtest.to_numpy() >= 0).all()
    at.slider(key="fc_horizon").set_value(3).run()
    at.selectbox(key="fc_series").set_value("EUR").run()
    assert not at.exception and not at.error


@pytest.mark.parametrize("csv, message", [
    (b"date,USD\n2021-01-01,1\n2021-01-01,2\n", "duplicate"),
    (b"when,USD\nyesterday,1\ntoday,2\n", "date"),
])
def test_bad_csv_shows_a_message_and_the_page_goes_on(models_env, csv, message):
    at = open_page("forecast")
    at.file_uploader(key="fc_upload").upload("bad.csv", csv, "text/csv")
    at.run()
    assert not at.exception
    assert len(at.error) == 1 and at.error[0].value.startswith("bad.csv") and message in at.error[0].value.lower()


def test_a_series_shorter_than_the_models_input_is_refused_by_name(models_env):
    at = open_page("forecast")
    at.file_uploader(key="fc_upload").upload("short.csv", _series_csv(10), "text/csv")
    at.run()
    assert not at.exception
    assert "series 'USD' has 10 rows; the model needs at least 24" in at.error[0].value
