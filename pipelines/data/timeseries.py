"""Reading time-series CSV files the way a quant expects, refusing what cannot be used.

:func:`read_series_csv` takes the wide layout (a date column plus one column per series, as the
Informer/Autoformer files) or the long layout (``unique_id, ds, y`` as neuralforecast and darts use)
and returns one wide frame: a sorted ``DatetimeIndex`` and one float column per series. Splits,
scaling and windows live in :mod:`pipelines.data.splits` and are re-exported here.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from pipelines.data.errors import InputError
from pipelines.data.sources import GiB, Source, open_text, source_name
from pipelines.data.splits import (  # noqa: F401  (re-exported: the documented home of these names)
    PRESETS,
    SplitSpec,
    fit_scaler,
    inverse_transform,
    plan_splits,
    split_segments,
    split_sizes,
)

log = logging.getLogger(__name__)

DATE_NAMES = ("date", "ds", "datetime", "timestamp", "time")
LONG_COLUMNS = ("unique_id", "ds", "y")
DEFAULT_MAX_FFILL = 3  # consecutive missing values filled from the last one; longer runs are errors
# Calendar steps that vary in length but are regular (days per month, quarter, year).
_CALENDAR_STEPS_DAYS = ((28, 31), (89, 92), (365, 366))


def _lines(rows: np.ndarray, limit: int = 5) -> str:
    """'4, 9, 12 and 3 more' for 1-based file line numbers."""
    shown = ", ".join(str(int(r)) for r in rows[:limit])
    return shown + (f" and {len(rows) - limit} more" if len(rows) > limit else "")


def _read_table(text, head: str, name: str) -> pd.DataFrame:
    first = head.split("\n", 1)[0]
    sep = "\t" if "\t" in first and "," not in first else ","
    try:
        frame = pd.read_csv(text, sep=sep, dtype=str, skip_blank_lines=False)
    except pd.errors.ParserError as exc:
        raise InputError(f"not a well-formed CSV table ({exc})".replace("\n", " "), file=name) from exc
    except pd.errors.EmptyDataError as exc:
        raise InputError("file is empty", file=name) from exc
    frame.columns = [str(c).strip() for c in frame.columns]
    # File line of each row (header is line 1), kept through sorting for messages.
    frame.index = pd.RangeIndex(2, len(frame) + 2, name="line")
    return frame.dropna(how="all")


def _find_date_column(frame: pd.DataFrame, date_column: str | None, name: str) -> str:
    if date_column is not None:
        if date_column not in frame.columns:
            raise InputError(f"no column {date_column!r} (columns: {', '.join(frame.columns[:10])})", file=name)
        return date_column
    by_name = {c.lower(): c for c in frame.columns}
    for candidate in DATE_NAMES:
        if candidate in by_name:
            return by_name[candidate]
    first = frame.columns[0]
    sample = frame[first].dropna().head(20)
    if len(sample) and pd.to_datetime(sample, errors="coerce", format="mixed").notna().all() \
            and pd.to_numeric(sample, errors="coerce").isna().all():
        return first
    raise InputError(f"no date column: no column is named {'/'.join(DATE_NAMES)} and the first column {first!r} "
                     f"does not hold dates", file=name)


def _parse_dates(values: pd.Series, column: str, name: str) -> pd.Series:
    if values.isna().any():
        raise InputError(f"missing dates at lines {_lines(values.index[values.isna()].to_numpy())}",
                         file=name, column=column)
    dates = pd.to_datetime(values, errors="coerce")
    if dates.isna().any():  # formats differ between rows: parse each on its own
        dates = pd.to_datetime(values, errors="coerce", format="mixed")
    bad = dates.isna().to_numpy()
    if bad.any():
        lines = _lines(values.index[bad].to_numpy())
        raise InputError(f"cannot read {values[bad].iloc[0]!r} as a date (lines {lines})", file=name, column=column)
    return dates


def _to_numeric(frame: pd.DataFrame, columns: list[str], name: str) -> pd.DataFrame:
    out = {}
    for col in columns:
        raw = frame[col]
        num = pd.to_numeric(raw.str.strip(), errors="coerce")
        bad = (num.isna() & raw.notna() & (raw.str.strip() != "")).to_numpy()
        if bad.any():
            raise InputError(f"non-numeric values at lines {_lines(frame.index[bad].to_numpy())} "
                             f"(e.g. {raw[bad].iloc[0]!r})", file=name, column=col)
        if num.isna().all():
            raise InputError("column has no values (all missing)", file=name, column=col)
        out[col] = num.astype(np.float64)
    return pd.DataFrame(out, index=frame.index)


def _check_steps(dates: pd.Series, lines: np.ndarray | None, name: str) -> tuple[pd.Timedelta, list]:
    """The modal step; raises for mixed frequencies, returns gaps (whole missing steps) for reporting."""
    at = (lambda i: f"line {int(lines[i])}") if lines is not None else (lambda i: str(dates.iloc[i]))
    diffs = dates.diff().iloc[1:]
    if diffs.empty:
        return pd.Timedelta(0), []
    step = diffs.mode().iloc[0]
    days = diffs.dt.total_seconds().to_numpy() / 86400
    for low, high in _CALENDAR_STEPS_DAYS:
        if low <= step / pd.Timedelta(days=1) <= high and ((days >= low) & (days <= high)).all():
            return step, []
    ratio = (diffs / step).to_numpy()
    odd = np.flatnonzero(np.abs(ratio - np.round(ratio)) > 1e-9)
    if len(odd):
        other = diffs.iloc[odd[0]]
        raise InputError(f"mixed sampling frequencies: most steps are {step}, but the step to {at(odd[0] + 1)} "
                         f"is {other}; resample to one frequency first", file=name)
    # A gap is an occasional long step; several equal long steps in a row are another sampling rate.
    same_next = np.zeros(len(ratio), dtype=bool)
    same_next[:-1] = ratio[:-1] == ratio[1:]
    runs = np.flatnonzero((ratio[:-2] > 1.5) & same_next[:-2] & same_next[1:-1])  # 3 equal long steps from here
    if len(runs):
        first = int(runs[0])
        raise InputError(f"mixed sampling frequencies: most steps are {step}, but from {at(first)} on the rows are "
                         f"{diffs.iloc[first]} apart; resample to one frequency first", file=name)
    gap_at = np.flatnonzero(ratio > 1.5)
    gaps = [(dates.iloc[i], int(round(ratio[i])) - 1) for i in gap_at]
    if gaps:
        biggest = max(range(len(gaps)), key=lambda k: gaps[k][1])
        log.warning("%s: %d gaps in the %s steps (%d missing steps; the largest, %d steps, before %s); rows are "
                    "used as consecutive steps", name, len(gaps), step, sum(g[1] for g in gaps), gaps[biggest][1],
                    at(gap_at[biggest] + 1))
    return step, gaps


def _fill_missing(values: pd.DataFrame, lines: np.ndarray | None, max_ffill: int, name: str) -> pd.DataFrame:
    """Forward-fill runs of at most ``max_ffill`` missing values; longer runs (or leading ones) are errors."""
    for col in values.columns:
        missing = values[col].isna().to_numpy()
        if not missing.any():
            continue
        edges = np.diff(np.concatenate([[0], missing.astype(np.int8), [0]]))
        starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)  # run = [start, stop)
        for start, stop in zip(starts, stops):
            if start == 0 or stop - start > max_ffill:
                where = (f"lines {lines[start]}-{lines[stop - 1]}" if lines is not None
                         else f"{values.index[start]} to {values.index[stop - 1]}")
                why = ("at the start, with no earlier value to carry forward" if start == 0 else
                       f"{stop - start} in a row, more than the forward-fill limit of {max_ffill}")
                raise InputError(f"missing values at {where} ({why})", file=name, column=col)
    return values.ffill(limit=max_ffill)


def _long_to_wide(frame: pd.DataFrame, name: str) -> tuple[pd.DataFrame, None]:
    dates = _parse_dates(frame["ds"], "ds", name)
    y = _to_numeric(frame, ["y"], name)["y"]
    ids = frame["unique_id"].astype(str)
    dup = pd.DataFrame({"id": ids, "ds": dates}).duplicated(keep=False).to_numpy()
    if dup.any():
        raise InputError(f"duplicate (unique_id, ds) at lines {_lines(frame.index[dup].to_numpy())}", file=name)
    wide = pd.DataFrame({"id": ids, "ds": dates, "y": y}).pivot(index="ds", columns="id", values="y")
    for col in wide.columns:  # a series with no values at all cannot be scaled
        if wide[col].isna().all():
            raise InputError("series has no values", file=name, column=col)
    wide.columns = [str(c) for c in wide.columns]
    return wide.sort_index(), None


def read_series_csv(source: Source, *, name: str | None = None, date_column: str | None = None,
                    columns: list[str] | None = None, max_ffill: int = DEFAULT_MAX_FFILL,
                    max_bytes: int = GiB) -> pd.DataFrame:
    """Read a wide or long time-series CSV/TSV (plain or gzip) into a wide float frame.

    Returns a frame indexed by a sorted ``DatetimeIndex`` named ``date``, one ``float64`` column per
    series (``columns`` picks some; default all but the date). ``frame.attrs`` holds ``step`` (the
    most common time step) and ``gaps`` (``(timestamp, missing steps)`` pairs, also logged).
    Missing values are forward-filled up to ``max_ffill`` in a row. Raises :class:`InputError` for an
    empty file, no date column, unreadable dates, duplicate timestamps, non-numeric cells, an all-NaN
    column, mixed frequencies, or longer runs of missing values, naming the column and lines.
    """
    label = source_name(source, name)
    with open_text(source, max_bytes=max_bytes, name=label) as (text, head):
        frame = _read_table(text, head, label)
    if frame.empty or len(frame.columns) < 2:
        raise InputError("needs a header, a date column and at least one value column", file=label)
    if set(LONG_COLUMNS) <= set(frame.columns):
        wide, lines = _long_to_wide(frame, label)
        dates = wide.index.to_series()
    else:
        date_col = _find_date_column(frame, date_column, label)
        wanted = columns if columns is not None else [c for c in frame.columns if c != date_col]
        missing = [c for c in wanted if c not in frame.columns]
        if missing:
            raise InputError(f"no column {missing[0]!r} (columns: {', '.join(frame.columns[:10])})", file=label)
        dates = _parse_dates(frame[date_col], date_col, label)
        wide = _to_numeric(frame, list(wanted), label)
        order = np.argsort(dates.to_numpy(), kind="stable")
        dates, wide = dates.iloc[order], wide.iloc[order]
        lines = wide.index.to_numpy()
        dup = dates.duplicated(keep=False).to_numpy()
        if dup.any():
            raise InputError(f"duplicate timestamp {dates[dup].iloc[0]} at lines {_lines(np.sort(lines[dup]))}",
                             file=label, column=date_col)
        wide.index = pd.DatetimeIndex(dates.to_numpy())
    if columns is not None and lines is None:
        absent = [c for c in columns if c not in wide.columns]
        if absent:
            raise InputError(f"no series {absent[0]!r} (series: {', '.join(wide.columns[:10])})", file=label)
        wide = wide[columns]
    step, gaps = _check_steps(dates.reset_index(drop=True), lines, label)
    wide = _fill_missing(wide, lines, max_ffill, label)
    wide.index.name = "date"
    wide.attrs.update(step=step, gaps=gaps, source=label)
    return wide
