"""Altair charts for the app's pages: plain functions from data frames to charts, no Streamlit.

Each chart zooms and pans along its x axis (an interval selection bound to the scales), so a
long sequence or a long price history can be inspected without re-running the page.
"""

from __future__ import annotations

import warnings

import altair as alt
import pandas as pd

# Above this many bases in view the letters would overlap: the track shows bars only.
MAX_LETTERS_SHOWN = 150

_BASE_COLOURS = alt.Scale(domain=["A", "C", "G", "T", "N"],
                          range=["#2ca02c", "#1f77b4", "#ff7f0e", "#d62728", "#7f7f7f"])


def _x_zoom() -> alt.Parameter:
    return alt.selection_interval(bind="scales", encodings=["x"])


def probability_histogram(probabilities: pd.DataFrame) -> alt.Chart:
    """Histogram of each class's predicted probability over all scored sequences.

    ``probabilities`` has one column per class (the column name is the class name) and one row per
    sequence; the bars of the classes are overlaid with some transparency.
    """
    if probabilities.empty or probabilities.shape[1] == 0:
        raise ValueError("probabilities: need at least one row and one class column")
    long = probabilities.melt(var_name="class", value_name="probability")
    return (
        alt.Chart(long, title="Predicted probabilities")
        .mark_bar(opacity=0.6, binSpacing=0)
        .encode(
            x=alt.X("probability:Q", bin=alt.Bin(extent=[0, 1], step=0.05), title="probability"),
            y=alt.Y("count():Q", stack=None, title="sequences"),
            color=alt.Color("class:N", title="class"),
            tooltip=["class:N", alt.Tooltip("count():Q", title="sequences")],
        )
        .properties(height=260)
    )


def attribution_track(track: pd.DataFrame, start: int | None = None, end: int | None = None) -> alt.LayerChart:
    """Per-base attribution bars along a sequence, with the bases as letters when few are in view.

    ``track`` has columns ``position`` (1-based), ``base`` and ``score``; ``start``/``end`` (1-based,
    inclusive) choose the window shown first (default: the whole sequence). Positive scores (bases
    that support the predicted class) are drawn upwards in one colour, negative ones downwards in
    another; drag or scroll on the chart to zoom further.
    """
    missing = {"position", "base", "score"} - set(track.columns)
    if missing:
        raise ValueError(f"track: missing columns {sorted(missing)}")
    lo = int(track["position"].min()) if start is None else start
    hi = int(track["position"].max()) if end is None else end
    if lo > hi:
        raise ValueError(f"start ({lo}) is after end ({hi})")
    view = track[(track["position"] >= lo) & (track["position"] <= hi)].assign(
        effect=lambda d: d["score"].ge(0).map({True: "supports", False: "opposes"}))
    x = alt.X("position:Q", scale=alt.Scale(domain=[lo - 0.5, hi + 0.5], nice=False), title="position (bp)")
    bars = (
        alt.Chart(view)
        .mark_bar()
        .encode(
            x=x,
            y=alt.Y("score:Q", title="attribution"),
            color=alt.Color("effect:N", scale=alt.Scale(domain=["supports", "opposes"],
                                                         range=["#1b9e77", "#d95f02"]), title=None),
            tooltip=["position:Q", "base:N", alt.Tooltip("score:Q", format=".4f")],
        )
        .add_params(_x_zoom())
    )
    layers: list[alt.Chart] = [bars]
    if hi - lo + 1 <= MAX_LETTERS_SHOWN:
        letters = (
            alt.Chart(view)
            .mark_text(fontWeight="bold", baseline="top", dy=4)
            .encode(x=x, y=alt.value(0), text="base:N",
                    color=alt.Color("base:N", scale=_BASE_COLOURS, legend=None))
        )
        layers.append(letters)
    return alt.layer(*layers, title="Per-base attribution").resolve_scale(color="independent").properties(height=240)


def forecast_chart(history: pd.DataFrame, forecast: pd.DataFrame) -> alt.LayerChart:
    """History, point forecast and prediction interval of one series on a shared time axis.

    ``history`` has columns ``ds`` (timestamps) and ``y``; ``forecast`` has ``ds``, ``point`` and,
    for the interval, ``lower`` and ``upper`` (any of the two may be absent for point-only models).
    """
    for name, frame, needed in (("history", history, {"ds", "y"}), ("forecast", forecast, {"ds", "point"})):
        missing = needed - set(frame.columns)
        if missing:
            raise ValueError(f"{name}: missing columns {sorted(missing)}")
    x = alt.X("ds:T", title="date")
    past = (
        alt.Chart(history.assign(kind="history"))
        .mark_line()
        .encode(x=x, y=alt.Y("y:Q", title="value", scale=alt.Scale(zero=False)),
                color=alt.Color("kind:N", title=None), tooltip=["ds:T", "y:Q"])
        .add_params(_x_zoom())
    )
    future = (
        alt.Chart(forecast.assign(kind="forecast"))
        .mark_line(strokeDash=[4, 2])
        .encode(x=x, y="point:Q", color="kind:N", tooltip=["ds:T", "point:Q"])
    )
    layers: list[alt.Chart] = [past, future]
    if {"lower", "upper"} <= set(forecast.columns):
        band = (
            alt.Chart(forecast.assign(kind="prediction interval"))
            .mark_area(opacity=0.25)
            .encode(x=x, y="lower:Q", y2="upper:Q", color="kind:N", tooltip=["ds:T", "lower:Q", "upper:Q"])
        )
        layers.insert(1, band)
    return alt.layer(*layers, title="History and forecast").properties(height=320)


_STRAND_COLOURS = alt.Scale(domain=["+", "-"], range=["#1f77b4", "#ff7f0e"])


def genome_track(genes: pd.DataFrame, coding: pd.DataFrame, start: int, end: int) -> alt.VConcatChart:
    """Called genes per strand above the per-base coding probability, on one zoomable axis.

    ``genes`` has columns ``id``, ``strand`` ("+"/"-"), ``start``, ``end`` (1-based inclusive) and
    ``length_bp``; ``coding`` has ``position``, ``strand`` and ``probability`` (already binned for
    display). ``start``/``end`` set the window shown first; drag or scroll on either panel to zoom
    both, which share the x axis.
    """
    for name, frame, needed in (("genes", genes, {"id", "strand", "start", "end"}),
                                ("coding", coding, {"position", "strand", "probability"})):
        missing = needed - set(frame.columns)
        if missing:
            raise ValueError(f"{name}: missing columns {sorted(missing)}")
    if start > end:
        raise ValueError(f"start ({start}) is after end ({end})")
    zoom = _x_zoom()
    scale = alt.Scale(domain=[start - 0.5, end + 0.5], nice=False)
    colour = alt.Color("strand:N", scale=_STRAND_COLOURS, title="strand")
    # Each gene covers its bases fully: from the left edge of its first base to the right edge of its last.
    lanes = (
        alt.Chart(genes.assign(x0=genes["start"] - 0.5, x1=genes["end"] + 0.5), title="Called genes")
        .mark_bar(height=16, cornerRadius=2)
        .encode(
            x=alt.X("x0:Q", scale=scale, title=None),
            x2="x1:Q",
            y=alt.Y("strand:N", sort=["+", "-"], title="strand"),
            color=colour,
            tooltip=["id:N", "strand:N", alt.Tooltip("start:Q", format=","), alt.Tooltip("end:Q", format=","),
                     alt.Tooltip("length_bp:Q", title="length (bp)", format=",")],
        )
        .add_params(zoom)
        .properties(height=90)
    )
    probability = (
        alt.Chart(coding, title="Coding probability")
        .mark_line(interpolate="step-after", strokeWidth=1)
        .encode(
            x=alt.X("position:Q", scale=scale, title="position (bp)"),
            y=alt.Y("probability:Q", scale=alt.Scale(domain=[0, 1]), title="P(coding)"),
            color=colour,
            tooltip=[alt.Tooltip("position:Q", format=","), "strand:N",
                     alt.Tooltip("probability:Q", format=".3f")],
        )
        .add_params(zoom)
        .properties(height=180)
    )
    # One zoom on both panels is what we want; Altair merges the two copies of the parameter and
    # warns that it did (vega/altair#3891).
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Automatically deduplicated selection parameter")
        return alt.vconcat(lanes, probability).resolve_scale(x="shared")
