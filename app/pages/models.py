"""Models page: every bundled and uploaded package with its task, outputs, training data and metrics."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app import common

st.title("Models")
st.caption("Bundled packages (data/models/ or the folder in SEQMAMBA_MODELS) and any you upload here. "
           "Weights load through safetensors only; nothing uploaded is unpickled.")

with st.expander("Add a model package", expanded=False):
    common.package_uploader(key="models_package")


def _outputs(config: dict) -> str:
    """Classes of a classifier, channels and horizon of a forecaster, as one line."""
    if config.get("class_names"):
        return "classes: " + ", ".join(map(str, config["class_names"]))
    parts = []
    if config.get("input_channels"):
        parts.append("channels: " + ", ".join(map(str, config["input_channels"])))
    for key in ("input_len", "horizon"):
        if key in config:
            parts.append(f"{key.replace('_', ' ')} {config[key]}")
    if config.get("quantiles"):
        parts.append("quantiles " + ", ".join(f"{q:g}" for q in config["quantiles"]))
    return "; ".join(parts) or "-"


def _show(entry: common.ModelEntry) -> dict | None:
    """One package's card; returns its summary row, or None when it does not load."""
    with st.container(border=True):
        st.subheader(entry.label)
        try:
            loaded = common.load_model(entry)
        except Exception as exc:  # a broken package is reported on its card; the page goes on
            common.show_error(exc)
            return None
        config, metrics = loaded.config, loaded.metrics
        left, right = st.columns(2)
        with left:
            st.markdown(f"**Task:** {config.get('task', '?')}  \n**Model:** {config.get('class', '?')}  \n"
                        f"**Outputs:** {_outputs(config)}")
            data = config.get("training_data") or "not stated"
            licence = config.get("licence") or "not stated"
            st.markdown(f"**Training data:** {data}  \n**Licence of the data:** {licence}")
        with right:
            figures = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            if figures:
                st.markdown("**Test metrics** (metrics.json)")
                st.dataframe(pd.DataFrame({"metric": list(figures), "value": list(figures.values())}),
                             hide_index=True, width="content")
            else:
                st.markdown("**Test metrics:** none recorded")
        with st.expander("config.json and metrics.json"):
            st.json({"config": config, "metrics": metrics}, expanded=False)
        st.caption(f"Folder: {entry.path}")
        return {"model": entry.label, "task": config.get("task"), "outputs": _outputs(config)}


entries = common.bundled_models() + common.uploaded_models()
if not entries:
    st.warning("No model packages found. Train and export one (`seqmamba export`), or upload a zip above.")
rows = [row for row in map(_show, entries) if row is not None]
if rows:
    st.sidebar.caption(f"{len(rows)} model(s) available")
