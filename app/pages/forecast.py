"""Forecast page: forecast one series of a CSV with its prediction interval, back-test, CSV download."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from app import charts, common
from pipelines.data.errors import InputError
from pipelines.data.timeseries import read_series_csv

SAMPLE_SUFFIXES = (".csv", ".csv.gz", ".tsv")

st.title("Forecast")
st.caption("Forecast a series from a CSV: wide (a date column and one column per series) or long "
           "(`unique_id, ds, y`), plain or gzip.")


def _input_bytes() -> tuple[str, bytes] | None:
    samples = sorted(p for p in common.SAMPLES_DIR.glob("*") if p.name.endswith(SAMPLE_SUFFIXES))
    kinds = ["Upload a file"] + (["Use a sample"] if samples else [])
    kind = st.radio("Input", kinds, horizontal=True, key="fc_input_kind", label_visibility="collapsed")
    if kind == "Upload a file":
        upload = st.file_uploader(f"CSV, wide or long (up to {common.upload_limit_mb()} MB)", key="fc_upload")
        return None if upload is None else (upload.name, upload.getvalue())
    sample = st.selectbox("Sample file", samples, format_func=lambda p: p.name, key="fc_sample")
    return sample.name, Path(sample).read_bytes()


@st.cache_data(max_entries=4, show_spinner="Reading the CSV...")
def _read(name: str, data: bytes) -> pd.DataFrame:
    return read_series_csv(data, name=name, max_bytes=common.MAX_DECOMPRESSED_BYTES)


def _future_dates(index: pd.DatetimeIndex, step: pd.Timedelta, horizon: int) -> pd.DatetimeIndex:
    return pd.DatetimeIndex([index[-1] + step * (i + 1) for i in range(horizon)], name="date")


def _errors(actual: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    diff = np.asarray(predicted, dtype=np.float64) - np.asarray(actual, dtype=np.float64)
    return {"MAE": float(np.abs(diff).mean()), "MSE": float((diff**2).mean())}


def _show_backtest(loaded: common.LoadedModel, history: pd.Series, horizon: int) -> None:
    """The model's error on the last ``horizon`` points of the history beside repeating the last value."""
    from pipelines.scoring import forecast_series

    input_len = int(loaded.config["input_len"])
    if len(history) < input_len + horizon:
        st.info(f"The back-test needs {input_len + horizon} points of history; this series has {len(history)}.")
        return
    past, actual = history.iloc[:-horizon], history.iloc[-horizon:].to_numpy()
    result = forecast_series(loaded.model, loaded.config, past.to_frame(), horizon=horizon)
    model_err = _errors(actual, result["point"].to_numpy())
    naive_err = _errors(actual, np.full(horizon, past.iloc[-1]))
    table = pd.DataFrame([model_err, naive_err], index=["model", "repeat last value"])
    st.subheader("Back-test on the end of the history")
    st.dataframe(table.style.format("{:.4g}"), width="content", key="fc_backtest")
    st.caption(f"Forecasts of the last {horizon} points from the {input_len} before them, in the series' units.")


def _show_forecast(entry: common.ModelEntry, frame: pd.DataFrame, name: str) -> None:
    loaded = common.load_model(entry)
    max_h = int(loaded.config["horizon"])
    c1, c2 = st.columns([3, 2])
    series = c1.selectbox("Series", list(frame.columns), key="fc_series")
    horizon = c2.slider("Horizon (steps)", 1, max_h, max_h, key="fc_horizon",
                        help=f"Up to the model's horizon ({max_h}).")
    history = frame[series]
    input_len = int(loaded.config["input_len"])
    if len(history) < input_len:
        raise InputError(f"series {series!r} has {len(history)} rows; the model needs at least {input_len}", file=name)
    from pipelines.scoring import forecast_series

    result = forecast_series(loaded.model, loaded.config, history.to_frame(), horizon=horizon)
    step = frame.attrs.get("step") or (frame.index[-1] - frame.index[-2])
    dates = _future_dates(frame.index, step, horizon)
    out = result.assign(ds=dates, series=series)
    q_cols = [c for c in out.columns if c.startswith("q")]
    band = {"lower": out[q_cols[0]], "upper": out[q_cols[-1]]} if len(q_cols) >= 2 else {}
    shown = history.iloc[-4 * input_len:]
    chart = charts.forecast_chart(pd.DataFrame({"ds": shown.index, "y": shown.to_numpy()}),
                                  pd.DataFrame({"ds": dates, "point": out["point"], **band}))
    st.altair_chart(chart, width="stretch", key="fc_chart")
    if band:
        st.caption(f"Shaded: between the {q_cols[0]} and {q_cols[-1]} quantiles of the forecast.")
    csv = out[["ds", "series", "point", *q_cols]].rename(columns={"ds": "date"})
    st.download_button("Download the forecast (CSV)", csv.to_csv(index=False).encode(),
                       file_name=f"{series}_forecast.csv", mime="text/csv", key="fc_download")
    _show_backtest(loaded, history, horizon)


source_col, model_col = st.columns([3, 2], gap="large")
with model_col:
    entry = common.model_picker("forecasting", key="fc_model")
    with st.expander("Add a model package"):
        common.package_uploader(key="fc_package")
with source_col:
    given = _input_bytes()

if entry is not None and given is not None:
    try:
        _show_forecast(entry, _read(*given), given[0])
    except (InputError, ValueError) as exc:
        common.show_error(exc)
