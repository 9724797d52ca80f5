"""Forecasting splits, scaling and windows: the standard protocol, and no target across a split."""

import numpy as np
import pandas as pd
import pytest
import torch

from pipelines.data.datamodules import ForecastDataModule
from pipelines.data.datasets import ForecastWindows
from pipelines.data.errors import InputError
from pipelines.data.splits import SplitSpec, fit_scaler, inverse_transform, plan_splits, split_sizes


def test_split_sizes_follow_the_protocol():
    assert split_sizes(7588, SplitSpec("ratio", 0.7, 0.1, 0.2)) == (5311, 760, 1517)  # exchange rates
    assert split_sizes(17420, SplitSpec("months", 12, 4, 4), pd.Timedelta(hours=1)) == (8640, 2880, 2880)  # ETTh1
    assert split_sizes(100, SplitSpec("rows", 60, 20, 20)) == (60, 20, 20)
    assert SplitSpec.parse("months:12,4,4") == SplitSpec("months", 12, 4, 4)


@pytest.mark.parametrize("n_rows,spec,input_len,horizon", [
    (2000, SplitSpec("ratio", 0.7, 0.1, 0.2), 96, 96),
    (7588, SplitSpec("ratio", 0.7, 0.1, 0.2), 96, 720),  # exchange rates at the longest horizon
    (500, SplitSpec("ratio", 0.6, 0.2, 0.2), 24, 7),
    (1000, SplitSpec("rows", 500, 200, 250), 50, 50),  # rows after the test split are unused
])
def test_no_target_crosses_a_split(n_rows, spec, input_len, horizon):
    rng = np.random.default_rng(0)
    values = rng.normal(size=(n_rows, 3))
    row = np.arange(n_rows, dtype=np.float64)[:, None].repeat(3, axis=1)  # the row number as the series
    sizes, segments = plan_splits(n_rows, spec, input_len, horizon)
    bounds = np.cumsum((0,) + sizes)  # split k owns rows [bounds[k], bounds[k+1])
    for k, split in enumerate(("train", "val", "test")):
        data = ForecastWindows(row, segments[split], input_len, horizon)
        targets = np.stack([data[i]["y"][:, 0].numpy() for i in range(len(data))])
        inputs = np.stack([data[i]["x"][:, 0].numpy() for i in range(len(data))])
        assert targets.min() >= bounds[k] and targets.max() < bounds[k + 1]  # every target inside its split
        assert targets[0, 0] == (bounds[k] if split != "train" else input_len)  # the first target starts the split
        assert len(data) == sizes[k] - horizon + 1 - (input_len if split == "train" else 0)  # and none is lost
        # Inputs are the input_len rows right before the targets (they may look back across a boundary).
        np.testing.assert_array_equal(inputs[:, -1] + 1, targets[:, 0])
    assert values.shape == (n_rows, 3)


def test_windows_hold_the_right_rows():
    rng = np.random.default_rng(1)
    values = rng.normal(size=(50, 2))
    data = ForecastWindows(values, (10, 50), input_len=8, horizon=4)
    item = data[3]
    np.testing.assert_allclose(item["x"].numpy(), values[13:21], rtol=1e-6)
    np.testing.assert_allclose(item["y"].numpy(), values[21:25], rtol=1e-6)
    assert data.target_start(3) == 21 and len(data) == 50 - 10 - 8 - 4 + 1
    with pytest.raises(IndexError):
        data[len(data)]


def test_scaler_sees_only_training_rows():
    rng = np.random.default_rng(2)
    values = rng.normal(loc=3.0, scale=2.0, size=(400, 4))
    scaler = fit_scaler(values, 280)
    np.testing.assert_allclose(scaler.mean_, values[:280].mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(scaler.scale_, values[:280].std(axis=0, ddof=0), rtol=1e-12)
    changed = values.copy()
    changed[280:] *= 100.0  # whatever happens after the training rows ...
    np.testing.assert_array_equal(fit_scaler(changed, 280).mean_, scaler.mean_)  # ... does not leak into the scaler


def test_inverse_transform_undoes_the_scaling():
    rng = np.random.default_rng(3)
    values = rng.normal(size=(100, 3)) * [1.0, 10.0, 0.1] + [5.0, -2.0, 0.0]
    scaler = fit_scaler(values, 70)
    scaled = scaler.transform(values)
    np.testing.assert_allclose(inverse_transform(scaled, scaler.mean_, scaler.scale_), values, rtol=1e-12)
    as_torch = inverse_transform(torch.from_numpy(scaled), torch.from_numpy(scaler.mean_),
                                 torch.from_numpy(scaler.scale_))
    np.testing.assert_allclose(as_torch.numpy(), values, rtol=1e-12)


def test_too_short_series_and_splits_are_refused():
    with pytest.raises(InputError, match=r"the series has 150 rows, too few for input_len \+ horizon = 96 \+ 96"):
        plan_splits(150, SplitSpec(), 96, 96)
    with pytest.raises(InputError, match=r"the validation split has 50 rows, fewer than the horizon 96"):
        plan_splits(500, SplitSpec(), 96, 96)
    with pytest.raises(InputError, match=r"the training split has 140 rows, too few"):
        plan_splits(200, SplitSpec(), 96, 96)
    with pytest.raises(InputError, match=r"needs 14,400 rows, the series has 1,000"):
        split_sizes(1000, SplitSpec("months", 12, 4, 4), pd.Timedelta(hours=1))
    with pytest.raises(InputError, match=r"split 'ratio:0.7' must look like"):
        SplitSpec.parse("ratio:0.7")


def repeat_last_errors(data: ForecastWindows, n: int) -> tuple[float, float]:
    """MSE and MAE (scaled units) of repeating the last input value over the first ``n`` windows."""
    values = data.values.double().numpy()  # (T, C)
    starts = data.start + np.arange(n)
    last = values[starts + data.input_len - 1]  # (n, C)
    targets = values[starts[:, None] + data.input_len + np.arange(data.horizon)]  # (n, H, C)
    err = targets - last[:, None, :]
    return float((err ** 2).mean()), float(np.abs(err).mean())


# shared/data/README.md: repeat-last-value test MSE / MAE, with drop_last (batch 32) and without.
PUBLISHED = {
    ("exchange_rate", True): {96: (0.081, 0.196), 192: (0.167, 0.289), 336: (0.305, 0.396), 720: (0.823, 0.681)},
    ("exchange_rate", False): {96: (0.081, 0.196), 192: (0.167, 0.289), 336: (0.306, 0.398), 720: (0.810, 0.676)},
    ("ETTh1", True): {96: (1.295, 0.713), 192: (1.325, 0.733), 336: (1.323, 0.744), 720: (1.339, 0.756)},
    ("ETTh1", False): {96: (1.294, 0.713), 192: (1.325, 0.733), 336: (1.330, 0.746), 720: (1.335, 0.755)},
}


@pytest.mark.parametrize("dataset", ["exchange_rate", "ETTh1"])
def test_splits_reproduce_the_published_repeat_last_table(shared_data, dataset, monkeypatch):
    import pipelines.data.datamodules as dm

    frame = dm.read_series_csv(f"{shared_data}/{dm.PRESETS[dataset].path}")  # read once, reused per horizon
    monkeypatch.setattr(dm, "read_series_csv", lambda *a, **k: frame)
    for horizon in (96, 192, 336, 720):
        module = ForecastDataModule(dataset=dataset, root=shared_data, input_len=96, horizon=horizon)
        module.setup("test")
        data = module.datasets["test"]
        for drop_last in (True, False):
            n = len(data) // 32 * 32 if drop_last else len(data)
            mse, mae = repeat_last_errors(data, n)
            want_mse, want_mae = PUBLISHED[(dataset, drop_last)][horizon]
            assert abs(mse - want_mse) <= 5e-4 and abs(mae - want_mae) <= 5e-4, (horizon, drop_last, mse, mae)


def test_the_test_loader_yields_the_protocol_windows(shared_data):
    module = ForecastDataModule(dataset="exchange_rate", root=shared_data, input_len=96, horizon=96, batch_size=32,
                                drop_last_eval=True)
    module.setup("test")
    batches = list(module.test_dataloader())
    assert sum(len(b["x"]) for b in batches) == 1408  # 1422 windows, the last partial batch dropped
    assert batches[0]["x"].shape == (32, 96, 8) and batches[0]["y"].dtype == torch.float32
    sq = sum(float(((b["y"].double() - b["x"][:, -1:].double()) ** 2).sum()) for b in batches)
    assert abs(sq / (1408 * 96 * 8) - 0.081) <= 5e-4
