"""Genome page: call the genes of a small genome with a gene-caller package; track, table, GFF3."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import streamlit as st

from app import charts, common, genome_view
from pipelines.data.errors import InputError
from pipelines.data.fasta import SequenceRecord, read_sequences

# Largest genome (all records together) scored here. Measured with benchmarks/bench_app_genome.py:
# the shipped gene caller (d_model 192 since session 6) reads 3,732 bases per second on 2 quiet CPU
# cores and 2,081 on one thread, with the model run keeping freed memory (pipelines/cpu_memory.py;
# benchmarks/RESULTS.md). The caption assumes about half the 2-core rate for a machine doing other
# work, so the limit takes about two minutes; larger genomes go through the CLI.
MAX_GENOME_BP = 250_000
CPU_BP_PER_S = 2_000
# Points per strand in the probability chart: enough for the eye, small for the browser.
MAX_CHART_POINTS = 1_500
SAMPLE = common.SAMPLES_DIR / "phage_lambda_NC_001416.fa"
CLI = "seqmamba score GENE_CALLER genome.fa -o genes.gff3 --bedgraph coding.bedgraph"
NO_CALLER = ("No gene caller is bundled with this copy of seqmamba. Add one below: a zip of a package folder "
             "that `seqmamba export` wrote from a run of `pipelines/configs/genome_tagger.yaml` (a tagger with "
             "2 strand tracks x 4 classes).")

st.title("Genome annotation")
st.caption(f"Call the protein-coding genes of a bacterial, archaeal, phage or organelle genome with a gene-caller "
           f"model: upload a FASTA file (plain or gzip) of up to {MAX_GENOME_BP:,} bp in all. On a CPU this page "
           f"scores about {CPU_BP_PER_S:,} bp per second with the shipped model's size (so "
           f"{MAX_GENOME_BP // 1000} kb takes about {round(MAX_GENOME_BP / CPU_BP_PER_S / 60)} minutes); larger "
           f"genomes go through the command line: `{CLI}`.")


def _is_gene_caller(loaded: common.LoadedModel) -> bool:
    from pipelines.genome.predict import check_tagger

    try:
        check_tagger(loaded.model)
    except ValueError:
        return False
    return True


def _input_bytes() -> tuple[str, bytes] | None:
    """The chosen genome as (name, bytes): an upload or the phage lambda sample."""
    kinds = ["Upload a genome"] + ([f"Use the sample ({SAMPLE.name})"] if SAMPLE.exists() else [])
    kind = st.radio("Input", kinds, horizontal=True, key="genome_input_kind", label_visibility="collapsed")
    if kind == "Upload a genome":
        upload = st.file_uploader(f"Genome FASTA, plain or gzip (up to {common.upload_limit_mb()} MB per file and "
                                  f"{MAX_GENOME_BP:,} bp in all)", key="genome_upload")
        return None if upload is None else (upload.name, upload.getvalue())
    return SAMPLE.name, SAMPLE.read_bytes()


def _read(name: str, data: bytes) -> list[SequenceRecord]:
    """The genome's records; ``InputError`` when the data layer refuses them or they exceed the limit."""
    records, total = [], 0
    for record in read_sequences(data, name=name, max_bytes=common.MAX_DECOMPRESSED_BYTES):
        total += len(record.seq)
        if total > MAX_GENOME_BP:
            raise InputError(f"more than {MAX_GENOME_BP:,} bp, the most this page scores interactively; "
                             f"annotate it with `{CLI}`", file=name)
        records.append(record)
    if not records:
        raise InputError("no sequence in the file", file=name)
    return records


def _with_progress(records: list[SequenceRecord]) -> Iterator[SequenceRecord]:
    """Hand the records on one by one, showing how far the model has got: ``call_genes`` asks for
    the next record only when it has finished the previous one."""
    total, done = sum(len(r.seq) for r in records), 0
    bar = st.progress(0.0)
    for k, record in enumerate(records, start=1):
        bar.progress(done / total, text=f"Calling genes on {record.id} ({len(record.seq):,} bp; record {k} of "
                                        f"{len(records)})...")
        yield record
        done += len(record.seq)
    bar.empty()


def _call(entry: common.ModelEntry, name: str, data: bytes, options: dict) -> dict:
    """Read the genome and call its genes; the result (calls, tables, files) is kept per session."""
    from pipelines.genome.decoder import decoder_for_package
    from pipelines.genome.gff3 import write_bedgraph, write_gff3
    from pipelines.genome.predict import call_genes

    records = _read(name, data)
    loaded = common.load_model(entry)
    decoder = decoder_for_package(loaded.config, options["min_len"], source=entry.name)
    result = call_genes(loaded.model, _with_progress(records), source=name, keep_coding=True, decoder=decoder,
                        **options)
    return {
        "name": name,
        "result": result,
        "table": genome_view.genes_table(result.calls),
        "gff3": genome_view.as_bytes(lambda p: write_gff3(p, result.calls, result.sequences,
                                                           sequence=result.texts)),
        "bedgraph": genome_view.as_bytes(lambda p: write_bedgraph(p, result.coding)),
    }


def _options() -> dict:
    """Decoder settings: genetic code, shortest gene, circular molecules."""
    from Bio.Data import CodonTable

    codes = CodonTable.unambiguous_dna_by_id
    left, right = st.columns(2)
    code = left.selectbox("Genetic code", sorted(codes), index=sorted(codes).index(11), key="genome_code",
                          format_func=lambda i: f"{i}: {codes[i].names[0]}")
    min_len = right.number_input("Shortest gene (bp, stop codon included)", min_value=6, max_value=10_000,
                                 value=90, step=3, key="genome_min_len")
    circular = st.checkbox("Circular molecules (genes may cross the origin)", key="genome_circular")
    return {"genetic_code": int(code), "min_len": int(min_len), "circular": bool(circular)}


def _show(results: dict) -> None:
    """Summary, the gene track of one sequence over a chosen window, the table and the downloads."""
    result, table = results["result"], results["table"]
    summary = result.summary
    a, b, c = st.columns(3)
    a.metric("Genes", f"{summary.genes:,}")
    b.metric("Bases", f"{summary.bases:,}", help=f"{summary.sequences} sequence(s)")
    c.metric("Time", f"{summary.seconds_total:.1f} s", help=f"{summary.bases / summary.seconds_total:,.0f} bp/s")

    seqids = list(result.sequences)
    seqid = seqids[0] if len(seqids) == 1 else st.selectbox("Sequence", seqids, key="genome_seqid")
    length = result.sequences[seqid][0]
    lo, hi = (1, 1) if length == 1 else st.slider("Window (bp)", 1, length, (1, length), key="genome_window")
    genes = genome_view.gene_intervals(result.calls, seqid, lo, hi)
    coding = genome_view.binned_coding(result.coding[seqid], lo, hi, MAX_CHART_POINTS)
    st.altair_chart(charts.genome_track(genes, coding, lo, hi), width="stretch", key="genome_chart")
    binned = "" if hi - lo + 1 <= MAX_CHART_POINTS else (
        f" Probabilities are averaged over {-(-(hi - lo + 1) // MAX_CHART_POINTS):,} bp per point at this "
        "width; narrow the window for single bases.")
    st.caption("Genes on the forward (+) and reverse (-) strand; beneath, the model's probability that each base "
               f"is coding on that strand. Drag or scroll on the chart to zoom.{binned}")

    st.subheader("Genes")
    st.dataframe(table, hide_index=True, width="stretch", key="genome_table",
                 column_config={"left": st.column_config.NumberColumn("left", format="%d"),
                                "right": st.column_config.NumberColumn("right", format="%d"),
                                "score": st.column_config.NumberColumn("score", format="%.1f")})
    st.caption(f"{len(table):,} genes; coordinates 1-based as in GFF3 (left > right: across the origin). Click a "
               "column header to sort.")
    stem = results["name"].split(".")[0].replace(" ", "_")
    left, right = st.columns(2)
    left.download_button("Download the genes (GFF3)", results["gff3"], file_name=f"{stem}.gff3",
                         mime="text/x-gff3", key="genome_download_gff3")
    right.download_button("Download the coding probability (bedGraph)", results["bedgraph"],
                          file_name=f"{stem}.coding.bedgraph", mime="text/plain", key="genome_download_bedgraph")


source_col, model_col = st.columns([3, 2], gap="large")
with model_col:
    entry = common.model_picker("tagging", key="genome_model", accept=_is_gene_caller, none_message=NO_CALLER)
    with st.expander("Add a gene-caller package", expanded=entry is None):
        common.package_uploader(key="genome_package")
    options = _options()
with source_col:
    given = _input_bytes()

if entry is not None and given is not None:
    name, data = given
    key = "|".join([hashlib.sha256(data).hexdigest(), str(entry.path), repr(sorted(options.items()))])
    cached = st.session_state.get("genome_results")
    if cached is None or cached["key"] != key:
        if st.button("Call genes", type="primary", key="genome_go"):
            try:
                st.session_state["genome_results"] = {"key": key, "value": _call(entry, name, data, options)}
            except (InputError, ValueError) as exc:
                common.show_error(exc)
                st.session_state.pop("genome_results", None)
    cached = st.session_state.get("genome_results")
    if cached is not None and cached["key"] == key:
        _show(cached["value"])
