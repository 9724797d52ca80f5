"""DNA page: classify the sequences of a FASTA/FASTQ file; table, histogram, attribution, CSV."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import streamlit as st

from app import charts, common
from pipelines.attribution import ism_attribution
from pipelines.data.errors import InputError
from pipelines.data.fasta import read_sequences, tokenize

# Interactive scoring on a CPU: beyond this many records, point to `seqmamba score`.
MAX_RECORDS = 20_000
# In-silico mutagenesis runs 3 forward passes per base: longer sequences go through the CLI.
MAX_ATTRIBUTION_BP = 1_000
SAMPLE_SUFFIXES = (".fa", ".fa.gz", ".fasta", ".fasta.gz", ".fq", ".fq.gz", ".fastq", ".fastq.gz")

st.title("DNA sequences")
st.caption("Classify each sequence of a FASTA or FASTQ file (plain or gzip) with a bundled or uploaded model.")


def _input_bytes() -> tuple[str, bytes] | None:
    """The chosen input as (name, bytes): an upload, pasted text or a sample file."""
    samples = sorted(p for p in common.SAMPLES_DIR.glob("*") if p.name.endswith(SAMPLE_SUFFIXES))
    kinds = ["Upload a file", "Paste sequences"] + (["Use a sample"] if samples else [])
    kind = st.radio("Input", kinds, horizontal=True, key="dna_input_kind", label_visibility="collapsed")
    if kind == "Upload a file":
        upload = st.file_uploader(f"FASTA or FASTQ, plain or gzip (up to {common.upload_limit_mb()} MB)",
                                  key="dna_upload")
        return None if upload is None else (upload.name, upload.getvalue())
    if kind == "Paste sequences":
        text = st.text_area("FASTA text, or one bare sequence", key="dna_paste", height=160,
                            placeholder=">seq1\nACGTTGCA...\n>seq2\n...")
        if not text.strip():
            return None
        if not text.lstrip().startswith((">", "@")):
            text = ">pasted\n" + text  # a bare sequence gets a header so it reads as FASTA
        return "pasted sequences", text.encode()
    sample = st.selectbox("Sample file", samples, format_func=lambda p: p.name, key="dna_sample")
    return sample.name, Path(sample).read_bytes()


def _read(name: str, data: bytes) -> tuple[list, bool]:
    """Records of the input (at most MAX_RECORDS) and whether there were more."""
    records = []
    for record in read_sequences(data, name=name, max_bytes=common.MAX_DECOMPRESSED_BYTES):
        if len(records) == MAX_RECORDS:
            return records, True
        records.append(record)
    return records, False


def _score(entry: common.ModelEntry, name: str, data: bytes) -> dict:
    """Read and score the input with the model, showing progress; the result is kept per session."""
    from pipelines.scoring import score_records

    loaded = common.load_model(entry)
    records, truncated = _read(name, data)
    bar = st.progress(0.0, text=f"Scoring {len(records):,} sequences...")
    rows = []
    for done, batch in score_records(loaded.model, loaded.config, records):
        rows.extend(batch)
        bar.progress(done / len(records), text=f"Scored {done:,} of {len(records):,} sequences")
    bar.empty()
    return {"table": pd.DataFrame(rows), "sequences": {r.id: r.seq for r in records}, "truncated": truncated,
            "classes": list(loaded.config["class_names"]), "name": name}


def _results(key: str, entry: common.ModelEntry, name: str, data: bytes) -> dict | None:
    """Results for this input and model: computed once, then read back from the session."""
    cached = st.session_state.get("dna_results")
    if cached is not None and cached["key"] == key:
        return cached["value"]
    try:
        value = _score(entry, name, data)
    except (InputError, ValueError) as exc:
        common.show_error(exc)
        st.session_state.pop("dna_results", None)
        return None
    st.session_state["dna_results"] = {"key": key, "value": value}
    return value


def _show_table(results: dict) -> pd.DataFrame:
    """The filterable results table and the CSV download; returns the rows in view."""
    table: pd.DataFrame = results["table"]
    prob_cols = [c for c in table.columns if c.startswith("p_")]
    f1, f2, f3 = st.columns([2, 2, 3])
    chosen = f1.multiselect("Predicted class", results["classes"], default=results["classes"], key="dna_f_class")
    floor = f2.slider("Confidence at least", 0.0, 1.0, 0.0, 0.05, key="dna_f_conf")
    needle = f3.text_input("Id contains", key="dna_f_id")
    view = table[table["predicted"].isin(chosen) & (table[prob_cols].max(axis=1) >= floor)]
    if needle:
        view = view[view["id"].str.contains(needle, regex=False)]
    st.dataframe(view, hide_index=True, width="stretch", key="dna_table",
                 column_config={c: st.column_config.ProgressColumn(c, min_value=0.0, max_value=1.0, format="%.3f")
                                for c in prob_cols})
    st.caption(f"{len(view):,} of {len(table):,} sequences shown; click a column header to sort.")
    stem = results["name"].split(".")[0].replace(" ", "_")
    st.download_button("Download all results (CSV)", table.to_csv(index=False).encode(),
                       file_name=f"{stem}_scores.csv", mime="text/csv", key="dna_download")
    return view


def _show_attribution(results: dict, view: pd.DataFrame, entry: common.ModelEntry) -> None:
    """In-silico mutagenesis track of one chosen sequence, zoomable along the sequence."""
    st.subheader("Which bases drive the prediction")
    if view.empty:
        st.info("No sequence in view; relax the filters above.")
        return
    seq_id = st.selectbox("Sequence", view["id"].tolist(), key="dna_attr_id")
    seq = results["sequences"][seq_id]
    if len(seq) > MAX_ATTRIBUTION_BP:
        st.info(f"{seq_id} has {len(seq):,} bp; the attribution is computed here for sequences up to "
                f"{MAX_ATTRIBUTION_BP:,} bp.")
        return
    cache = st.session_state.setdefault("dna_attr_cache", {})
    key = (st.session_state["dna_results"]["key"], seq_id)
    if key not in cache:
        # Three forward passes per base: run it on request, not on every page load.
        if not st.button(f"Compute the attribution of {seq_id} ({3 * len(seq):,} mutants)", key="dna_attr_go"):
            return
        loaded = common.load_model(entry)
        bar = st.progress(0.0, text=f"Mutating each base of {seq_id}...")
        # Our RC-equivariant classifiers are exactly RC-invariant, so the average over both strands equals
        # one strand's track (tests/pipelines/test_attribution.py): averaging would only double the cost.
        scores, target = ism_attribution(
            loaded.model, tokenize(seq), rc_average=False,
            progress=lambda done, total: bar.progress(done / total, text=f"{done:,} of {total:,} mutants"))
        bar.empty()
        cache.clear()  # keep one sequence's track: enough for this view, bounded memory
        cache[key] = scores, results["classes"][target]
    scores, explained = cache[key]
    track = pd.DataFrame({"position": range(1, len(seq) + 1), "base": list(seq.upper()), "score": scores})
    lo, hi = (1, 1) if len(seq) == 1 else st.slider(
        "Window (bp)", 1, len(seq), (1, min(len(seq), charts.MAX_LETTERS_SHOWN)), key="dna_attr_window")
    st.altair_chart(charts.attribution_track(track, lo, hi), width="stretch", key="dna_attr_chart")
    st.caption(f"In-silico mutagenesis for class {explained!r}: the change in its log-probability when the base "
               "is replaced by each other base (averaged), with the sign flipped: positive bases support the "
               "class. Move the window or drag and scroll on the chart to zoom.")


source_col, model_col = st.columns([3, 2], gap="large")
with model_col:
    entry = common.model_picker("classification", key="dna_model")
    with st.expander("Add a model package"):
        common.package_uploader(key="dna_package")
with source_col:
    given = _input_bytes()

if entry is not None and given is not None:
    name, data = given
    key = hashlib.sha256(data).hexdigest() + "|" + str(entry.path)
    results = _results(key, entry, name, data)
    if results is not None:
        if results["truncated"]:
            st.warning(f"Only the first {MAX_RECORDS:,} records were scored here; use `seqmamba score` for the "
                       "whole file.")
        view = _show_table(results)
        if not view.empty:
            probs = view[[c for c in view.columns if c.startswith("p_")]]
            st.altair_chart(charts.probability_histogram(probs.rename(columns=lambda c: c[2:])), width="stretch")
        _show_attribution(results, view, entry)
