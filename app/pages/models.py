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
    """Classes (and a tagger's tracks) of a DNA model, channels and horizon of a forecaster, as one line."""
    if config.get("class_names"):
        line = "classes: " + ", ".join(map(str, config["class_names"]))
        if config.get("track_names"):
            line += "; tracks: " + ", ".join(map(str, config["track_names"]))
        return line
    parts = []
    if config.get("input_channels"):
        parts.append("channels: " + ", ".join(map(str, config["input_channels"])))
    for key in ("input_len", "horizon"):
        if key in config:
            parts.append(f"{key.replace('_', ' ')} {config[key]}")
    if config.get("quantiles"):
        parts.append("quantiles " + ", ".join(f"{q:g}" for q in config["quantiles"]))
    return "; ".join(parts) or "-"


def _training_data(value) -> tuple[str, pd.DataFrame | None]:
    """A headline for config.json's ``training_data`` and, when it is a dict (the data module's
    settings, as ``seqmamba export`` writes them), its set fields as a two-column table."""
    if not isinstance(value, dict):
        return (str(value) if value else "not stated"), None
    module = str(value.get("datamodule") or "").rsplit(".", 1)[-1]
    name = value.get("dataset") or value.get("csv") or module or "see the settings"
    headline = f"{name} ({module})" if module and module != name else str(name)
    rows = [(key, ", ".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)) for key, v in value.items()
            if key not in ("dataset", "datamodule") and v not in (None, "", [], {})]
    return headline, (pd.DataFrame(rows, columns=["setting", "value"]) if rows else None)


def _figures(metrics: dict, prefix: str = "") -> dict[str, float]:
    """The numbers of metrics.json, nested sections flattened to ``section/name`` (e.g. ``test/mcc``)."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            out.update(_figures(value, f"{prefix}{key}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[f"{prefix}{key}"] = value
    return out


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
            architecture = config.get("architecture") or {}
            model_class = config.get("class") or architecture.get("name") or "?"
            st.markdown(f"**Task:** {config.get('task', '?')}  \n**Model:** {model_class}  \n"
                        f"**Outputs:** {_outputs(config)}")
            data, settings = _training_data(config.get("training_data"))
            licence = config.get("licence") or "not stated"
            st.markdown(f"**Training data:** {data}  \n**Licence of the data:** {licence}")
            if settings is not None:
                with st.expander("Training data settings"):
                    st.dataframe(settings, hide_index=True, width="stretch")
        with right:
            figures = _figures(metrics)
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
