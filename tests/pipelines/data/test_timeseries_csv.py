"""Reading time-series CSVs: layouts, dates, gaps, missing values and a message for each bad file."""

import gzip
import logging

import numpy as np
import pandas as pd
import pytest

from pipelines.data.errors import InputError
from pipelines.data.timeseries import read_series_csv


def wide_csv(n=20, freq="D", start="2020-01-01", cols=("a", "b"), seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    dates = pd.date_range(start, periods=n, freq=freq)
    return pd.DataFrame({"date": dates.strftime("%Y-%m-%d %H:%M:%S"),
                         **{c: rng.normal(size=n).round(6) for c in cols}})


def save(tmp_path, frame: pd.DataFrame, name="x.csv", **kw):
    path = tmp_path / name
    frame.to_csv(path, index=False, **kw)
    return path


def test_wide_layout_parsed_sorted_and_float(tmp_path):
    frame = wide_csv()
    shuffled = frame.sample(frac=1.0, random_state=1)
    out = read_series_csv(save(tmp_path, shuffled))
    assert isinstance(out.index, pd.DatetimeIndex) and out.index.is_monotonic_increasing
    assert out.index.name == "date" and list(out.columns) == ["a", "b"]
    assert all(out.dtypes == np.float64)
    np.testing.assert_array_equal(out.to_numpy(), frame[["a", "b"]].to_numpy())
    assert out.attrs["step"] == pd.Timedelta(days=1) and out.attrs["gaps"] == []


def test_long_layout_gives_the_same_wide_frame(tmp_path):
    frame = wide_csv()
    long = frame.melt(id_vars="date", var_name="unique_id", value_name="y").rename(columns={"date": "ds"})
    out = read_series_csv(save(tmp_path, long.sample(frac=1.0, random_state=2)))
    expected = read_series_csv(save(tmp_path, frame, "wide.csv"))
    pd.testing.assert_frame_equal(out, expected, check_freq=False)


def test_gzip_tab_separated_and_a_chosen_column(tmp_path):
    frame = wide_csv(cols=("a", "b", "c"))
    path = tmp_path / "x.tsv.gz"
    path.write_bytes(gzip.compress(frame.to_csv(index=False, sep="\t").encode()))
    out = read_series_csv(path, columns=["c", "a"])
    assert list(out.columns) == ["c", "a"]
    np.testing.assert_array_equal(out["c"].to_numpy(), frame["c"].to_numpy())


def test_date_column_found_by_content_when_not_named(tmp_path):
    frame = wide_csv().rename(columns={"date": "when"})
    assert len(read_series_csv(save(tmp_path, frame))) == 20


def test_short_gaps_are_forward_filled(tmp_path):
    frame = wide_csv()
    frame.loc[5:7, "a"] = np.nan  # 3 missing in a row: within the default limit
    out = read_series_csv(save(tmp_path, frame))
    assert np.all(out["a"].iloc[5:8] == frame["a"].iloc[4])


def test_gaps_in_time_are_reported(tmp_path, caplog):
    frame = wide_csv(n=30).drop(index=[10, 11, 12, 20])
    with caplog.at_level(logging.WARNING, logger="pipelines.data.timeseries"):
        out = read_series_csv(save(tmp_path, frame))
    assert [(str(t.date()), k) for t, k in out.attrs["gaps"]] == [("2020-01-10", 3), ("2020-01-20", 1)]
    assert any("2 gaps" in r.getMessage() and "4 missing steps" in r.getMessage() for r in caplog.records)


def test_monthly_data_is_regular(tmp_path):
    out = read_series_csv(save(tmp_path, wide_csv(n=24, freq="MS")))
    assert out.attrs["gaps"] == [] and len(out) == 24


def bad(frame_or_text, tmp_path):
    path = tmp_path / "bad.csv"
    if isinstance(frame_or_text, str):
        path.write_text(frame_or_text)
    else:
        frame_or_text.to_csv(path, index=False)
    return path


def with_nan(rows, col="a", n=20):
    frame = wide_csv(n=n)
    frame.loc[rows, col] = np.nan
    return frame


BAD = {
    "empty": ("", r"file is empty"),
    "header only": ("date,a\n", r"needs a header, a date column and at least one value column"),
    "no date column": ("x,y\n1.0,2.0\n3.0,4.0\n", r"no date column: no column is named date/ds"),
    "unreadable date": (wide_csv().replace({"date": {"2020-01-04 00:00:00": "someday"}}),
                        r"column 'date': cannot read 'someday' as a date \(lines 5\)"),
    "non-numeric cells": (wide_csv().astype({"b": object}).replace({"b": {wide_csv()["b"][2]: "n/a?"}}),
                          r"column 'b': non-numeric values at lines 4 \(e.g. 'n/a\?'\)"),
    "all-NaN column": (wide_csv().assign(c=np.nan), r"column 'c': column has no values"),
    "duplicate timestamps": (pd.concat([wide_csv(), wide_csv().iloc[[3]]]),
                             r"column 'date': duplicate timestamp 2020-01-04 00:00:00 at lines 5, 22"),
    "mixed frequencies": (pd.concat([wide_csv(n=10), wide_csv(n=10, freq="h", start="2020-02-01")]),
                          r"mixed sampling frequencies: most steps are 0 days 01:00:00, but from line 2 on the rows "
                          r"are 1 days 00:00:00 apart"),
    "steps that are no multiple": ("date,a\n2020-01-01 00:00,1\n2020-01-01 01:00,2\n2020-01-01 02:00,3\n"
                                   "2020-01-01 02:30,4\n2020-01-01 03:30,5\n",
                                   r"mixed sampling frequencies: most steps are 0 days 01:00:00, but the step to "
                                   r"line 5 is 0 days 00:30:00"),
    "long missing run": (with_nan([5, 6, 7, 8, 9]), r"column 'a': missing values at lines 7-11 \(5 in a row, more "
                                                    r"than the forward-fill limit of 3\)"),
    "leading missing": (with_nan([0, 1]), r"column 'a': missing values at lines 2-3 \(at the start"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_every_bad_csv_has_its_own_message(tmp_path, case):
    content, message = BAD[case]
    with pytest.raises(InputError, match=r"bad\.csv.*" + message):
        read_series_csv(bad(content, tmp_path))


def test_unknown_column_and_long_duplicates(tmp_path):
    with pytest.raises(InputError, match=r"no column 'zz'"):
        read_series_csv(save(tmp_path, wide_csv()), columns=["zz"])
    long = pd.DataFrame({"unique_id": ["s", "s", "t"], "ds": ["2020-01-01", "2020-01-01", "2020-01-01"],
                         "y": [1.0, 2.0, 3.0]})
    with pytest.raises(InputError, match=r"duplicate \(unique_id, ds\) at lines 2, 3"):
        read_series_csv(save(tmp_path, long))


def test_bundled_exchange_sample():
    from pipelines.data.paths import SAMPLES

    out = read_series_csv(SAMPLES / "exchange_rate_last1000.csv")
    assert out.shape == (1000, 8) and list(out.columns) == ["0", "1", "2", "3", "4", "5", "6", "OT"]
    assert out.index[-1] == pd.Timestamp("2010-10-10")
