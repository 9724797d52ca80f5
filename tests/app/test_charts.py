"""The app's Altair charts: valid Vega-Lite, the right data in view, zoomable along x."""

import numpy as np
import pandas as pd
import pytest

from app import charts


def _layers(spec: dict) -> list[dict]:
    return spec.get("layer", [spec])


def _datasets(spec: dict) -> list[list[dict]]:
    return list(spec["datasets"].values())


def _has_x_zoom(spec: dict) -> bool:
    params = [p for layer in _layers(spec) for p in layer.get("params", [])] + spec.get("params", [])
    return any(p.get("bind") == "scales" and p["select"].get("encodings") == ["x"] for p in params)


@pytest.fixture
def rng():
    return np.random.default_rng(8)


def test_histogram_has_one_row_per_sequence_and_class(rng):
    probs = rng.dirichlet([1, 1, 1], size=37)
    frame = pd.DataFrame(probs, columns=["acceptor", "donor", "non_splice"])
    spec = charts.probability_histogram(frame).to_dict()  # to_dict validates against the schema
    (rows,) = _datasets(spec)
    assert len(rows) == 37 * 3
    assert {r["class"] for r in rows} == {"acceptor", "donor", "non_splice"}
    assert sorted(r["probability"] for r in rows) == pytest.approx(sorted(probs.ravel()))
    assert spec["encoding"]["x"]["bin"] == {"extent": [0, 1], "step": 0.05}


def test_histogram_refuses_empty_input():
    with pytest.raises(ValueError, match="probabilities"):
        charts.probability_histogram(pd.DataFrame())


def _track(rng, length):
    bases = rng.choice(list("ACGT"), size=length)
    return pd.DataFrame({"position": np.arange(1, length + 1), "base": bases, "score": rng.normal(size=length)})


def test_attribution_window_shows_only_its_bases_with_letters(rng):
    track = _track(rng, 400)
    spec = charts.attribution_track(track, start=101, end=180).to_dict()
    bars, letters = _layers(spec)
    assert letters["mark"]["type"] == "text"
    positions = sorted({r["position"] for rows in _datasets(spec) for r in rows})
    assert positions == list(range(101, 181))
    effects = {r["position"]: r["effect"] for rows in _datasets(spec) for r in rows}
    expected = track.set_index("position")["score"]
    assert all((effects[p] == "supports") == (expected[p] >= 0) for p in positions)
    assert bars["encoding"]["x"]["scale"]["domain"] == [100.5, 180.5]
    assert _has_x_zoom(spec)


def test_attribution_over_a_long_window_draws_bars_only(rng):
    spec = charts.attribution_track(_track(rng, 400)).to_dict()
    assert [layer["mark"]["type"] for layer in _layers(spec)] == ["bar"]


def test_attribution_rejects_bad_arguments(rng):
    with pytest.raises(ValueError, match="after end"):
        charts.attribution_track(_track(rng, 20), start=15, end=5)
    with pytest.raises(ValueError, match="score"):
        charts.attribution_track(pd.DataFrame({"position": [1], "base": ["A"]}))


def test_forecast_chart_draws_interval_only_when_given(rng):
    ds = pd.date_range("2020-01-01", periods=50, freq="D")
    history = pd.DataFrame({"ds": ds[:40], "y": rng.normal(size=40).cumsum()})
    point = rng.normal(size=10)
    forecast = pd.DataFrame({"ds": ds[40:], "point": point, "lower": point - 1, "upper": point + 1})
    with_band = charts.forecast_chart(history, forecast).to_dict()
    assert [layer["mark"]["type"] for layer in _layers(with_band)] == ["line", "area", "line"]
    assert _has_x_zoom(with_band)
    without = charts.forecast_chart(history, forecast[["ds", "point"]]).to_dict()
    assert [layer["mark"]["type"] for layer in _layers(without)] == ["line", "line"]
    with pytest.raises(ValueError, match="history"):
        charts.forecast_chart(history.rename(columns={"y": "value"}), forecast)
