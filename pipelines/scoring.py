"""Scoring with a loaded model package: one function per input kind, used by ``seqmamba score``
and by the app alike.

- DNA records (classifier): :func:`score_records` -> rows ``id, length, predicted, p_<class>...``.
- DNA records (per-base tagger): :func:`tag_records` -> a summary row per record and a track
  table (one row per base, ``p_<track>_<class>``).
- A table of series: :func:`forecast_series` -> ``series, step, point, q<level>...`` in data units.

``model`` and ``config`` are what ``seqmodels.package.load_package`` returns; the model is used on
whatever device it is on. Everything runs under ``torch.inference_mode`` in float32.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch

from pipelines.data.alphabet import tokenize
from pipelines.data.errors import InputError

log = logging.getLogger(__name__)

# Tokens per forward pass (batch x padded length): bounds memory whatever the record lengths.
DEFAULT_MAX_TOKENS = 1 << 20
# Records sorted by length together, to keep padding low; output order is the input order.
SORT_WINDOW = 1024
# Per-base models read long records in windows this long (overlapping, centres kept).
TAGGER_WINDOW, TAGGER_CONTEXT = 100_000, 2_000


class Skipped(NamedTuple):
    """A record left out with ``on_error="skip"``: its id and why."""

    id: str
    reason: str


def class_names(config: dict[str, Any]) -> list[str]:
    """The class names of a classifier package (``"0", "1", ...`` if it has none)."""
    names = config.get("class_names")
    if names:
        return [str(n) for n in names]
    n = (config.get("architecture") or {}).get("config", {}).get("n_classes", 2)
    return [str(i) for i in range(int(n))]


def probability_columns(config: dict[str, Any]) -> list[str]:
    """Column names of the per-class probabilities in :func:`score_records`' rows."""
    return [f"p_{name}" for name in class_names(config)]


def _device(model: torch.nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _tokenized(records: Iterable, on_error: str, skipped: list[Skipped]) -> Iterator[tuple[Any, np.ndarray | None]]:
    """(record, tokens) for every record; tokens is None for a record skipped with on_error="skip"
    (appended to ``skipped``); with "fail" the first bad record raises."""
    if on_error not in ("fail", "skip"):
        raise ValueError(f"on_error must be 'fail' or 'skip', got {on_error!r}")
    for record in records:
        try:
            tokens = tokenize(record.seq)
            if len(tokens) == 0:
                raise InputError("empty sequence")
        except InputError as err:
            if on_error == "fail":
                raise InputError(err.reason, file=err.file, record=repr(record.id)) from None
            skipped.append(Skipped(record.id, err.reason))
            yield record, None
            continue
        yield record, tokens


def _batches(lengths: list[int], max_tokens: int, max_batch: int) -> Iterator[list[int]]:
    """Index lists into ``lengths`` (sorted by length) so that batch x longest <= max_tokens."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batch: list[int] = []
    for i in order:
        longest = lengths[i]  # ascending order: the newcomer is the longest
        if batch and ((len(batch) + 1) * longest > max_tokens or len(batch) == max_batch):
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch


def _pad(arrays: list[np.ndarray], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(a) for a in arrays], dtype=torch.long)
    tokens = torch.zeros(len(arrays), int(lengths.max()), dtype=torch.long)  # PAD = 0
    for row, a in enumerate(arrays):
        tokens[row, : len(a)] = torch.from_numpy(a.astype(np.int64))
    return tokens.to(device), lengths.to(device)


def score_records(
    model: torch.nn.Module,
    config: dict[str, Any],
    records: Iterable,
    *,
    batch_size: int = 64,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    on_error: str = "fail",
    skipped: list[Skipped] | None = None,
) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    """Classify DNA records (anything with ``.id`` and ``.seq``, e.g. ``read_sequences`` output).

    Yields ``(records_done, rows)`` as it goes, rows in input order: ``{"id", "length",
    "predicted", "p_<class>": probability, ...}``. ``records_done`` counts skipped records too.
    With ``on_error="skip"`` records that cannot be tokenised are left out and appended to
    ``skipped``; with ``"fail"`` the first raises :class:`InputError`.
    """
    names, columns = class_names(config), probability_columns(config)
    device = _device(model)
    skipped = [] if skipped is None else skipped
    done = 0
    window: list[tuple[Any, np.ndarray]] = []

    def flush() -> list[dict[str, Any]]:
        probs: list[np.ndarray | None] = [None] * len(window)
        for idx in _batches([len(t) for _, t in window], max_tokens, batch_size):
            tokens, lengths = _pad([window[i][1] for i in idx], device)
            with torch.inference_mode():
                p = model(tokens, lengths).float().softmax(-1).cpu().numpy()  # (b, n_classes)
            for j, i in enumerate(idx):
                probs[i] = p[j]
        rows = []
        for (record, tokens), p in zip(window, probs):
            row = {"id": record.id, "length": int(len(tokens)), "predicted": names[int(np.argmax(p))]}
            row.update({c: float(v) for c, v in zip(columns, p)})
            rows.append(row)
        window.clear()
        return rows

    for record, tokens in _tokenized(records, on_error, skipped):
        done += 1
        if tokens is not None:
            window.append((record, tokens))
        if len(window) == SORT_WINDOW:
            yield done, flush()
    if window or done:
        yield done, flush()


def _tag_one(model: torch.nn.Module, tokens: np.ndarray, device: torch.device) -> np.ndarray:
    """Per-base probabilities (L, n_tracks, n_classes) of one record, in overlapping windows."""
    length = len(tokens)
    if length <= TAGGER_WINDOW:
        t, lengths = _pad([tokens], device)
        with torch.inference_mode():
            return model(t, lengths).float().softmax(-1)[0].cpu().numpy()
    out = None
    step = TAGGER_WINDOW - 2 * TAGGER_CONTEXT
    for start in range(0, length, step):
        lo, hi = max(0, start - TAGGER_CONTEXT), min(length, start + step + TAGGER_CONTEXT)
        t, lengths = _pad([tokens[lo:hi]], device)
        with torch.inference_mode():
            p = model(t, lengths).float().softmax(-1)[0].cpu().numpy()  # (hi - lo, T, K)
        if out is None:
            out = np.empty((length, *p.shape[1:]), dtype=np.float32)
        keep_hi = min(length, start + step)
        out[start:keep_hi] = p[start - lo : keep_hi - lo]  # the window's centre: context on both sides
    return out


def tag_records(
    model: torch.nn.Module,
    config: dict[str, Any],
    records: Iterable,
    *,
    on_error: str = "fail",
    skipped: list[Skipped] | None = None,
) -> Iterator[tuple[int, list[dict[str, Any]], pd.DataFrame]]:
    """Per-base labelling of DNA records, one record at a time.

    Yields ``(records_done, [summary row], tracks)``: the summary row has ``id, length`` and per
    track the fraction of bases whose most likely class is not the first (e.g. "coding");
    ``tracks`` has one row per base: ``id, position`` (0-based), ``p_<track>_<class>``.
    Records longer than the model's window are read in overlapping windows.
    """
    tracks = [str(t) for t in config.get("track_names") or ["0"]]
    names = class_names(config)
    device = _device(model)
    skipped = [] if skipped is None else skipped
    for done, (record, tokens) in enumerate(_tokenized(records, on_error, skipped), start=1):
        if tokens is None:
            yield done, [], pd.DataFrame()
            continue
        p = _tag_one(model, tokens, device)  # (L, T, K)
        row: dict[str, Any] = {"id": record.id, "length": int(len(tokens))}
        table = {"id": np.full(len(tokens), record.id, dtype=object), "position": np.arange(len(tokens))}
        for t, track in enumerate(tracks):
            row[f"frac_{track}"] = float((p[:, t].argmax(-1) != 0).mean())
            for k, name in enumerate(names):
                table[f"p_{track}_{name}"] = p[:, t, k]
        yield done, [row], pd.DataFrame(table)


def quantile_columns(levels: Iterable[float]) -> list[str]:
    """``q0.1``-style column names for quantile levels."""
    return [f"q{float(q):g}" for q in levels]


def _series_scaling(config: dict[str, Any], frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Mean and scale per column: the training scaler for columns the model was trained on, else
    the column's own history (a new series has no training statistics)."""
    pre = config.get("preprocessing") or {}
    known = dict(zip(pre.get("channels") or [], zip(pre.get("scaler_mean") or [], pre.get("scaler_scale") or [])))
    mean, scale = [], []
    for column in frame.columns:
        if column in known:
            m, s = known[column]
        else:
            values = frame[column].to_numpy(dtype=np.float64)
            m, s = float(np.mean(values)), float(np.std(values))
        mean.append(m)
        scale.append(s if s > 0 else 1.0)
    return np.asarray(mean), np.asarray(scale)


def forecast_series(
    model: torch.nn.Module, config: dict[str, Any], frame: pd.DataFrame, *, horizon: int | None = None
) -> pd.DataFrame:
    """Forecast the next ``horizon`` steps (default: the model's) of every column of ``frame``
    (rows in time order, e.g. ``read_series_csv`` output) from its last ``input_len`` rows.

    Returns one row per (series, step): ``series, step`` (1-based), ``point`` and one ``q<level>``
    column per quantile, all in the data's units.
    """
    arch = (config.get("architecture") or {}).get("config", {})
    input_len = int(config.get("input_len") or arch.get("input_len"))
    model_horizon = int(config.get("horizon") or arch.get("horizon"))
    horizon = model_horizon if horizon is None else int(horizon)
    if not 1 <= horizon <= model_horizon:
        raise InputError(f"horizon must be between 1 and the model's horizon {model_horizon}, got {horizon}")
    if frame.shape[1] == 0:
        raise InputError("no series (columns) to forecast")
    if len(frame) < input_len:
        raise InputError(f"{len(frame)} rows of history; the model reads the last {input_len}")
    if arch.get("channel_mixing"):
        wanted = arch.get("channel_names") or config.get("input_channels")
        if wanted and set(wanted) <= set(frame.columns):
            frame = frame[list(wanted)]
        elif frame.shape[1] != arch.get("n_channels"):
            raise InputError(f"this model reads {arch.get('n_channels')} series together "
                             f"({', '.join(wanted or [])}); the input has {frame.shape[1]}")
    window = frame.iloc[-input_len:].to_numpy(dtype=np.float64)  # (L, C)
    if not np.isfinite(window).all():
        raise InputError(f"the last {input_len} rows contain missing or infinite values")
    mean, scale = _series_scaling(config, frame)
    x = torch.as_tensor((window - mean) / scale, dtype=torch.float32, device=_device(model))[None]  # (1, L, C)
    with torch.inference_mode():
        out = model(x)
    point = out.point[0, :horizon].float().cpu().numpy() * scale + mean  # (H, C)
    levels = list(config.get("quantiles") or arch.get("quantiles") or [])
    result: dict[str, Any] = {
        "series": np.repeat(np.asarray(frame.columns, dtype=object), horizon),
        "step": np.tile(np.arange(1, horizon + 1), frame.shape[1]),
        "point": point.T.reshape(-1),
    }
    if levels and getattr(out, "quantiles", None) is not None:
        q = out.quantiles[0, :horizon].float().cpu().numpy() * scale[:, None] + mean[:, None]  # (H, C, Q)
        for k, name in enumerate(quantile_columns(levels)):
            result[name] = q[:, :, k].T.reshape(-1)
    return pd.DataFrame(result)
