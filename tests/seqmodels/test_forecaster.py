"""MambaForecaster's options: patch tokens, the flatten head and the linear path (issue 7).

The shared contract (tests/seqmodels/test_contract.py) covers the default model; these tests
specify what the options add: end-anchored patches, the padding contract each option keeps, a
Mamba branch that starts silent beside the linear path, channel independence and package round trips.
"""

import json

import pytest
import torch

from seqmodels import ForecasterConfig, MambaForecaster, load_package
from seqmodels.forecasting import monotone_quantiles

TINY = {"d_model": 8, "n_layer": 2, "d_state": 4}
LEN, HORIZON = 20, 3

VARIANTS = {
    "patch-last": {"patch_len": 4, "patch_stride": 3},
    "patch-flatten": {"patch_len": 4, "patch_stride": 2, "head": "flatten"},
    "step-linear": {"linear_skip": True},
    "patch-flatten-linear": {"patch_len": 5, "head": "flatten", "linear_skip": True},
    "patch-mixing-linear": {"patch_len": 4, "patch_stride": 2, "channel_mixing": True, "n_channels": 3,
                            "linear_skip": True},
}


def make(seed=0, **options):
    torch.manual_seed(seed)
    model = MambaForecaster(input_len=LEN, horizon=HORIZON, **TINY, **options)
    if model.config.linear_skip:  # a trained-looking Mamba branch, so the tests see both paths
        with torch.no_grad():
            model.head.weight.normal_(0, 0.3)
            model.head.bias.normal_(0, 0.3)
    return model


def series(batch=2, seqlen=LEN, channels=3, seed=1, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, seqlen, channels, generator=g, dtype=torch.float64) * 2 + 3).to(dtype)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_every_option_gives_finite_forecasts_with_increasing_quantiles(name):
    model = make(**VARIANTS[name])
    out = model(series())
    assert out.point.shape == (2, HORIZON, 3) and out.quantiles.shape == (2, HORIZON, 3, 3)
    assert bool(torch.isfinite(out.quantiles).all()) and bool((out.quantiles.diff(dim=-1) > 0).all())


@pytest.mark.parametrize("seqlen,patch_len,stride", [(20, 4, 3), (20, 4, 4), (17, 5, 2), (6, 6, 1)])
def test_patches_end_at_the_last_step_and_step_back_by_the_stride(seqlen, patch_len, stride):
    model = make(patch_len=patch_len, patch_stride=stride)
    x = series(batch=2, seqlen=seqlen, channels=2)  # (rows, seqlen, width=2)
    tokens, _ = model._patches(x, None)
    ends = list(range(seqlen, patch_len - 1, -stride))[::-1]  # each patch's end (exclusive), oldest first
    expected = torch.stack([x[:, e - patch_len:e].transpose(1, 2).reshape(2, -1) for e in ends], 1)
    assert torch.equal(tokens, expected)
    assert tokens.shape[1] == model.config.n_tokens(seqlen)


@pytest.mark.parametrize("options", [{"patch_len": 4, "patch_stride": 3}, {"patch_len": 5}, {}],
                         ids=["p4s3", "p5", "per-step"])
def test_left_padded_history_forecasts_like_the_unpadded_history(options):
    model = make(seed=2, **options).eval()
    x = series(batch=2, seqlen=LEN, channels=2, seed=3)
    pad = torch.tensor([[7, 2], [0, 11]])  # (batch, channels): pads not multiples of the stride cut patches
    mask = torch.arange(LEN)[None, :, None] >= pad[:, None, :]  # (batch, seqlen, channels)
    padded = torch.where(mask, x, torch.tensor(float("nan")))
    with torch.no_grad():
        out = model(padded, mask)
        for b in range(2):
            for c in range(2):
                alone = model(x[b:b + 1, pad[b, c]:, c:c + 1])
                torch.testing.assert_close(out.point[b, :, c], alone.point[0, :, 0], rtol=1e-5, atol=1e-5)
                torch.testing.assert_close(out.quantiles[b, :, c], alone.quantiles[0, :, 0], rtol=1e-5, atol=1e-5)


def test_a_history_shorter_than_one_patch_is_refused():
    model = make(patch_len=8, patch_stride=4)
    with pytest.raises(ValueError, match="patch_len=8"):
        model(series(seqlen=7))
    mask = torch.ones(2, LEN, dtype=torch.bool)
    mask[1, :LEN - 5] = False  # 5 observed steps in the second row
    with pytest.raises(ValueError, match="5 observed steps.*patch_len=8"):
        model(series(), mask)


@pytest.mark.parametrize("options", [{"linear_skip": True}, {"patch_len": 4, "head": "flatten"}],
                         ids=["linear", "flatten"])
def test_whole_window_readers_take_input_len_steps_and_read_padding_as_the_first_value(options):
    model = make(seed=4, **options).eval()
    with pytest.raises(ValueError, match=f"input_len={LEN}"):
        model(series(seqlen=LEN - 4))
    x = series(seed=5)
    mask = torch.arange(LEN)[None, :, None] >= torch.tensor([[6, 0, 3], [0, 0, 0]])[:, None, :]
    filled = torch.where(mask, x, x[:, 6:7].where(torch.arange(3) == 0, x[:, 3:4]))  # first observed values
    junk = torch.where(mask, x, torch.tensor(float("nan")))
    with torch.no_grad():
        got, want = model(junk, mask), model(filled)
    torch.testing.assert_close(got.point, want.point, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(got.quantiles, want.quantiles, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("options", [{"linear_init": "random"},
                                     {"patch_len": 4, "patch_stride": 2, "head": "flatten", "linear_init": "random"},
                                     {"patch_len": 4}], ids=["per-step-random", "patch-flatten-random", "repeat-last"])
def test_at_initialisation_the_linear_path_alone_makes_the_forecast(options):
    torch.manual_seed(6)
    model = MambaForecaster(input_len=LEN, horizon=HORIZON, linear_skip=True, **TINY, **options).double()
    x = series(channels=4, seed=7, dtype=torch.float64)
    mean = x.mean(1, keepdim=True)
    std = torch.sqrt(((x - mean) ** 2).mean(1, keepdim=True) + 1e-5)  # (batch, 1, channels)
    z = ((x - mean) / std).transpose(1, 2)  # (batch, channels, input_len)
    raw = (z @ model.linear.weight.T + model.linear.bias).view(2, 4, HORIZON, 4).transpose(1, 2)
    out = model(x)
    torch.testing.assert_close(out.point, raw[..., 0] * std + mean, rtol=1e-12, atol=1e-12)
    expected_q = monotone_quantiles(raw[..., 1:], model.config.quantiles) * std[..., None] + mean[..., None]
    torch.testing.assert_close(out.quantiles, expected_q, rtol=1e-12, atol=1e-12)


def test_the_linear_path_starts_by_repeating_the_last_value_unless_asked_for_a_random_start():
    x = series(channels=4, seed=17)
    out = make(linear_skip=True, patch_len=4)  # make() gives the Mamba branch random output weights
    with torch.no_grad():
        out.head.weight.zero_()
        out.head.bias.zero_()
        forecast = out(x)
    last = x[:, -1:, :].expand(2, HORIZON, 4)  # (batch, horizon, channels)
    torch.testing.assert_close(forecast.point, last, rtol=1e-6, atol=1e-5)
    anchor = forecast.quantiles[..., 1]  # the level nearest 0.5 of (0.1, 0.5, 0.9)
    torch.testing.assert_close(anchor, last, rtol=1e-6, atol=1e-5)
    assert bool((forecast.quantiles[..., 0] < last).all()) and bool((forecast.quantiles[..., 2] > last).all())
    torch.manual_seed(0)
    random = MambaForecaster(input_len=LEN, horizon=HORIZON, linear_skip=True, linear_init="random", **TINY)
    assert not torch.allclose(random(x).point, last, atol=1e-2)


def test_the_silent_mamba_branch_still_learns():
    torch.manual_seed(8)
    model = MambaForecaster(input_len=LEN, horizon=HORIZON, linear_skip=True, patch_len=4, **TINY)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(2):
        optimiser.zero_grad()
        out = model(series(seed=9 + step))
        (out.point.pow(2).mean() + out.quantiles.pow(2).mean()).backward()
        if step == 0:  # only the zeroed output layer sees a gradient before it moves
            assert model.head.weight.grad.abs().sum() > 0
        optimiser.step()
    for name, p in model.named_parameters():
        assert p.grad is not None and bool(torch.isfinite(p.grad).all()) and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("name", ["patch-last", "patch-flatten", "step-linear", "patch-flatten-linear"])
def test_each_series_is_forecast_alone_whatever_the_number_of_columns(name):
    model = make(seed=10, **VARIANTS[name]).eval()
    x = series(channels=5, seed=11)
    with torch.no_grad():
        out = model(x)
        torch.testing.assert_close(model(x[..., [3]]).point, out.point[..., [3]], rtol=1e-5, atol=1e-6)
        perm = torch.tensor([4, 0, 3, 1, 2])
        torch.testing.assert_close(model(x[..., perm]).quantiles, out.quantiles[:, :, perm], rtol=1e-5, atol=1e-6)
        assert model(series(channels=1, seed=12)).point.shape == (2, HORIZON, 1)


@pytest.mark.parametrize("name", ["patch-flatten-linear", "patch-mixing-linear"])
def test_forecasts_follow_shifts_and_positive_scalings_of_the_input(name):
    model = make(seed=13, **VARIANTS[name]).double()
    x = series(seed=14, dtype=torch.float64)
    base, moved = model(x), model(x * 7.5 - 300.0)
    torch.testing.assert_close(moved.point, base.point * 7.5 - 300.0, rtol=1e-6, atol=1e-4)
    torch.testing.assert_close(moved.quantiles, base.quantiles * 7.5 - 300.0, rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("name", ["patch-flatten-linear", "patch-mixing-linear"])
def test_package_round_trip_keeps_the_options_and_the_forecasts(name, tmp_path):
    model = make(seed=15, **VARIANTS[name]).eval()
    model.save_pretrained(tmp_path / "pkg")
    arch = json.loads((tmp_path / "pkg" / "config.json").read_text())
    written = arch["architecture"]["config"]
    assert all(written[key] == value for key, value in VARIANTS[name].items())
    loaded, _, _ = load_package(tmp_path / "pkg")
    assert loaded.config == model.config
    x = series(seed=16)
    with torch.no_grad():
        assert torch.equal(loaded(x).point, model(x).point) and torch.equal(loaded(x).quantiles, model(x).quantiles)


def test_configs_written_before_the_options_load_as_the_original_model():
    old = {"d_model": 8, "n_layer": 1, "input_len": 12, "horizon": 2, "quantiles": [0.5], "revin": True}
    cfg = ForecasterConfig.from_dict(old)
    assert (cfg.patch_len, cfg.stride, cfg.head, cfg.linear_skip) == (1, 1, "last", False)  # the original model
    shapes = {k: v.shape for k, v in MambaForecaster.from_config(cfg).state_dict().items()}
    assert shapes == {k: v.shape for k, v in MambaForecaster(**old).state_dict().items()}


@pytest.mark.parametrize("options,message", [
    ({"patch_len": 0}, "patch_len must be between 1 and input_len=20, got 0"),
    ({"patch_len": 21}, "patch_len must be between 1 and input_len=20, got 21"),
    ({"patch_len": 4, "patch_stride": 0}, "patch_stride must be between 1 and patch_len=4, got 0"),
    ({"patch_len": 4, "patch_stride": 5}, "patch_stride must be between 1 and patch_len=4, got 5"),
    ({"head": "mean"}, "head must be one of"),
    ({"linear_init": "zeros"}, "linear_init must be 'repeat_last' or 'random', got 'zeros'"),
])
def test_bad_option_values_are_refused_naming_the_option(options, message):
    with pytest.raises(ValueError, match=message):
        MambaForecaster(input_len=LEN, horizon=HORIZON, **TINY, **options)


def test_bad_option_types_in_a_package_config_are_refused_naming_the_field():
    with pytest.raises(ValueError, match=r"config\.linear_skip: expected true or false"):
        ForecasterConfig.from_dict({"linear_skip": "yes"})
    with pytest.raises(ValueError, match=r"config\.head: expected one of"):
        ForecasterConfig.from_dict({"head": "middle"})
    with pytest.raises(ValueError, match=r"config\.patch_stride"):
        ForecasterConfig.from_dict({"patch_len": 4, "patch_stride": 2.5})


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (the Triton kernels)")
def test_patch_and_linear_forecaster_on_cuda_matches_the_cpu_path_and_keeps_the_padding_contract():
    torch.manual_seed(18)
    options = {"input_len": 96, "horizon": 24, "patch_len": 16, "patch_stride": 8, "d_model": 64}
    cpu = MambaForecaster(**options, linear_skip=True)
    with torch.no_grad():
        cpu.head.weight.normal_(0, 0.05)  # a Mamba branch that contributes
    gpu = MambaForecaster(**options, linear_skip=True).cuda()
    gpu.load_state_dict(cpu.state_dict())
    x = series(batch=4, seqlen=96, channels=7, seed=19)
    torch.testing.assert_close(gpu(x.cuda()).point.cpu(), cpu(x).point, rtol=1e-3, atol=1e-3)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = gpu(x.cuda())
    assert bool(torch.isfinite(out.quantiles).all()) and bool((out.quantiles.float().diff(dim=-1) > 0).all())
    last = MambaForecaster(**options).cuda().eval()  # the last-token model: padded == unpadded, on the GPU too
    mask = (torch.arange(96)[None] >= torch.tensor([[0], [21]])).cuda()
    padded = torch.where(mask[..., None], x[:2].cuda(), torch.tensor(float("nan"), device="cuda"))
    with torch.no_grad():
        got, want = last(padded, mask), last(x[1:2, 21:].cuda())
    torch.testing.assert_close(got.point[1:], want.point, rtol=1e-3, atol=1e-3)
