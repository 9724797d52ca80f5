"""Train/val/test splits, scaling and windows for forecasting, following the standard protocol
(Informer / Autoformer / Time-Series-Library, see ``shared/data/README.md``):

* split sizes per dataset: ratios (exchange rates 7:1:2, ``n_train = int(0.7 N)``,
  ``n_test = int(0.2 N)``, val the rest) or calendar lengths (ETTh1 12/4/4 months of 30 days);
* the val and test segments start ``input_len`` rows early, so inputs may look back across the
  boundary but every *target* lies inside its split;
* a z-score scaler fitted on the training rows only, applied to every split;
* windows ``input_len -> horizon`` with stride 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from sklearn.preprocessing import StandardScaler

from pipelines.data.errors import InputError

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class SplitSpec:
    """How to cut a series: ``kind`` ``"ratio"`` (fractions), ``"months"`` (30-day months of rows at
    the file's step) or ``"rows"`` (row counts), with one value each for train, val and test."""

    kind: Literal["ratio", "months", "rows"] = "ratio"
    train: float = 0.7
    val: float = 0.1
    test: float = 0.2

    @classmethod
    def parse(cls, text: str) -> SplitSpec:
        """``"ratio:0.7,0.1,0.2"``, ``"months:12,4,4"`` or ``"rows:8640,2880,2880"``."""
        kind, _, values = text.partition(":")
        try:
            train, val, test = (float(v) for v in values.split(","))
        except ValueError:
            raise InputError(f"split {text!r} must look like 'ratio:0.7,0.1,0.2', 'months:12,4,4' or "
                             f"'rows:8640,2880,2880'") from None
        if kind not in ("ratio", "months", "rows"):
            raise InputError(f"split kind {kind!r} must be ratio, months or rows")
        return cls(kind, train, val, test)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Preset:
    """A benchmark dataset: its file under the data root and its standard split."""

    path: str
    split: SplitSpec


PRESETS = {
    "exchange_rate": Preset("exchange_rate/exchange_rate.csv", SplitSpec("ratio", 0.7, 0.1, 0.2)),
    "ETTh1": Preset("ETTh1/ETTh1.csv", SplitSpec("months", 12, 4, 4)),
}


def split_sizes(n_rows: int, spec: SplitSpec, step: pd.Timedelta | None = None) -> tuple[int, int, int]:
    """Rows in (train, val, test). Ratio splits use the protocol's rounding (val takes the rest);
    month splits need the time ``step`` (30-day months, e.g. 720 rows a month at one hour)."""
    if spec.kind == "ratio":
        if min(spec.train, spec.val, spec.test) < 0 or spec.train + spec.val + spec.test > 1 + 1e-9:
            raise InputError(f"split ratios {spec.train}, {spec.val}, {spec.test} must be >= 0 and sum to at most 1")
        n_train, n_test = int(n_rows * spec.train), int(n_rows * spec.test)
        return n_train, n_rows - n_train - n_test, n_test
    if spec.kind == "months":
        if step is None or step <= pd.Timedelta(0) or pd.Timedelta(days=1) % step:
            raise InputError(f"a split in months needs a step that divides a day evenly, got {step}")
        per_month = 30 * int(pd.Timedelta(days=1) / step)
        sizes = tuple(int(round(v * per_month)) for v in (spec.train, spec.val, spec.test))
    else:
        sizes = tuple(int(v) for v in (spec.train, spec.val, spec.test))
    if sum(sizes) > n_rows:
        raise InputError(f"the {spec.kind} split {spec.train:g}/{spec.val:g}/{spec.test:g} needs {sum(sizes):,} rows, "
                         f"the series has {n_rows:,}")
    return sizes  # type: ignore[return-value]


def split_segments(sizes: tuple[int, int, int], input_len: int, horizon: int) -> dict[str, tuple[int, int]]:
    """Row ranges ``[start, stop)`` each split's windows are cut from: val and test start
    ``input_len`` rows early, so their first target is their first row. Raises :class:`InputError`
    when a split cannot hold one window."""
    if input_len <= 0 or horizon <= 0:
        raise InputError(f"input_len and horizon must be positive, got {input_len} and {horizon}")
    n_train, n_val, n_test = sizes
    if n_train < input_len + horizon:
        raise InputError(f"the training split has {n_train:,} rows, too few for input_len + horizon = "
                         f"{input_len} + {horizon}")
    for split, n in (("validation", n_val), ("test", n_test)):
        if n < horizon:
            raise InputError(f"the {split} split has {n:,} rows, fewer than the horizon {horizon}: "
                             f"it cannot hold one target window")
    return {
        "train": (0, n_train),
        "val": (n_train - input_len, n_train + n_val),
        "test": (n_train + n_val - input_len, n_train + n_val + n_test),
    }


def fit_scaler(values: np.ndarray, n_train: int) -> StandardScaler:
    """z-score scaler fitted on the first ``n_train`` rows of ``values (T, C)`` only."""
    return StandardScaler().fit(values[:n_train])


def inverse_transform(values, mean, scale):
    """Scaled values ``(..., C)`` (numpy or torch) back to data units: ``values * scale + mean``."""
    return values * scale + mean


def n_windows(segment: tuple[int, int], input_len: int, horizon: int) -> int:
    """Number of stride-1 windows in a segment."""
    return max(0, segment[1] - segment[0] - input_len - horizon + 1)


def plan_splits(n_rows: int, spec: SplitSpec, input_len: int, horizon: int, step: pd.Timedelta | None = None
                ) -> tuple[tuple[int, int, int], dict[str, tuple[int, int]]]:
    """Split sizes and window segments for a series of ``n_rows`` rows (see :func:`split_sizes`,
    :func:`split_segments`); first refuses a series shorter than one window."""
    if n_rows < input_len + horizon:
        raise InputError(f"the series has {n_rows:,} rows, too few for input_len + horizon = {input_len} + {horizon}")
    sizes = split_sizes(n_rows, spec, step)
    return sizes, split_segments(sizes, input_len, horizon)
