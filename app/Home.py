"""Entry script of the seqmamba app (``seqmamba app`` runs ``streamlit run`` on this file).

It only sets up the page and the navigation; each page lives in ``app/pages/``. Settings (local
address, headless, no usage statistics, upload limit) are in ``app/.streamlit/config.toml``.
"""

import streamlit as st

st.set_page_config(page_title="seqmamba", page_icon=":dna:", layout="wide")

PAGES = [
    st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("pages/dna.py", title="DNA", icon=":material/genetics:"),
    st.Page("pages/genome.py", title="Genome", icon=":material/biotech:"),
    st.Page("pages/forecast.py", title="Forecast", icon=":material/show_chart:"),
    st.Page("pages/models.py", title="Models", icon=":material/deployed_code:"),
]

st.navigation(PAGES).run()
