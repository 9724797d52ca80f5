"""Home page: what the app does and where to start."""

import streamlit as st

from app import common

st.title("seqmamba")
st.markdown(
    "Mamba selective state-space models for **DNA**, **genomes** and **price series**, on this computer. "
    "Upload a FASTA or CSV file, pick a model, and see and download the predictions. "
    "Nothing leaves this machine: the app listens on 127.0.0.1 only."
)

left, genome, middle, right = st.columns(4)
with left:
    st.subheader("DNA")
    st.write("Classify sequences from FASTA/FASTQ (plain or gzip), see which bases drive each prediction.")
    st.page_link("pages/dna.py", label="Score DNA", icon=":material/genetics:")
with genome:
    st.subheader("Genome")
    st.write("Call the genes of a small genome, see them along the sequence with the coding probability, "
             "download GFF3.")
    st.page_link("pages/genome.py", label="Annotate a genome", icon=":material/biotech:")
with middle:
    st.subheader("Forecast")
    st.write("Forecast series from a CSV (wide or long) with prediction intervals and a back-test.")
    st.page_link("pages/forecast.py", label="Forecast series", icon=":material/show_chart:")
with right:
    st.subheader("Models")
    st.write("The bundled models, their training data, licences and test metrics; add your own package.")
    st.page_link("pages/models.py", label="Browse models", icon=":material/deployed_code:")

st.divider()
st.caption(f"Uploads up to {common.upload_limit_mb()} MB per file. For larger files and whole genomes use "
           "the command line: `seqmamba score MODEL INPUT -o OUTPUT`.")
