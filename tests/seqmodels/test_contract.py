"""The one contract every packaged model passes: shapes, masking, save/load, gradients."""

import dataclasses

import pytest
import torch

from seqmodels import (
    CNNClassifier,
    DLinear,
    ForecastOutput,
    MambaClassifier,
    MambaForecaster,
    MambaTagger,
    PackagedModel,
    load_package,
    vocab,
)

BACKBONE = {"d_model": 8, "n_layer": 2, "d_state": 4}
BATCH, SEQLEN, CHANNELS, HORIZON = 3, 16, 2, 4


@dataclasses.dataclass
class Case:
    make: callable
    kind: str  # "dna" or "series"


CASES = {
    "classifier-causal-cls": Case(lambda: MambaClassifier(n_classes=3, pooling="cls", **BACKBONE), "dna"),
    "classifier-bidirectional-rc": Case(
        lambda: MambaClassifier(n_classes=3, rc_equivariant=True, bidirectional=True, **BACKBONE), "dna"),
    "classifier-stem-bidirectional-rc": Case(
        lambda: MambaClassifier(n_classes=3, rc_equivariant=True, bidirectional=True, stem_kernel=5, **BACKBONE),
        "dna"),
    "classifier-stem-causal-max": Case(lambda: MambaClassifier(n_classes=2, pooling="max", stem_kernel=3, **BACKBONE),
                                       "dna"),
    "tagger-rc": Case(lambda: MambaTagger(n_tracks=2, n_classes=4, rc_equivariant=True, **BACKBONE), "dna"),
    "tagger-bidirectional": Case(lambda: MambaTagger(n_tracks=3, n_classes=2, bidirectional=True,
                                                     weight_sharing="separate", **BACKBONE), "dna"),
    "cnn": Case(lambda: CNNClassifier(n_classes=3, d_model=8, kernel_size=5), "dna"),
    "forecaster": Case(lambda: MambaForecaster(input_len=SEQLEN, horizon=HORIZON, **BACKBONE), "series"),
    "forecaster-mixing": Case(lambda: MambaForecaster(input_len=SEQLEN, horizon=HORIZON, channel_mixing=True,
                                                      n_channels=CHANNELS, **BACKBONE), "series"),
    "dlinear": Case(lambda: DLinear(input_len=SEQLEN, horizon=HORIZON, moving_avg=5, revin=True), "series"),
}


def inputs(kind, seed=0):
    """A padded batch: DNA rows of different lengths with random junk after them; series with NaN
    left padding in the first row. Returns (args, kwargs-with-padding-info, real-position mask)."""
    g = torch.Generator().manual_seed(seed)
    if kind == "dna":
        tokens = torch.randint(vocab.A, vocab.N + 1, (BATCH, SEQLEN), generator=g)
        lengths = torch.tensor([SEQLEN, 11, 4])
        return tokens, lengths
    x = torch.randn(BATCH, SEQLEN, CHANNELS, generator=g) * 3 + 5
    mask = torch.ones(BATCH, SEQLEN, dtype=torch.bool)
    mask[0, :6] = False
    return x, mask


def with_junk_padding(kind, data, seed):
    g = torch.Generator().manual_seed(seed)
    a, b = data
    if kind == "dna":
        junk = a.clone()
        pad = torch.arange(SEQLEN)[None] >= b[:, None]
        junk[pad] = torch.randint(0, vocab.VOCAB_SIZE, (int(pad.sum()),), generator=g)
        return junk, b
    junk = a.clone()
    junk[~b] = torch.randn(int((~b).sum()), CHANNELS, generator=g) * 1e3
    junk[0, 0] = float("nan")
    return junk, b


def outputs(out):
    return list(out) if isinstance(out, ForecastOutput) else [out]


@pytest.fixture(params=sorted(CASES))
def case(request):
    torch.manual_seed(0)
    return CASES[request.param]


def test_shapes(case):
    model = case.make()
    out = model(*inputs(case.kind))
    n_classes = getattr(model.config, "n_classes", None)
    if isinstance(model, MambaTagger):
        assert out.shape == (BATCH, SEQLEN, model.config.n_tracks, n_classes)
    elif case.kind == "dna":
        assert out.shape == (BATCH, n_classes)
    else:
        assert isinstance(out, ForecastOutput)
        q = len(model.config.quantiles)
        assert out.point.shape == (BATCH, HORIZON, CHANNELS)
        assert out.quantiles.shape == (BATCH, HORIZON, CHANNELS, q)
        assert bool((out.quantiles.diff(dim=-1) > 0).all()), "quantiles must increase"
    assert all(bool(torch.isfinite(o).all()) for o in outputs(out))


def test_padding_contents_never_change_outputs(case):
    model = case.make().eval()
    data = inputs(case.kind)
    with torch.no_grad():
        clean = outputs(model(*data))
        for seed in (1, 2):
            noisy = outputs(model(*with_junk_padding(case.kind, data, seed)))
            for a, b in zip(clean, noisy):
                torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)


def test_padded_rows_equal_rows_alone(case):
    if case.kind != "dna":
        pytest.skip("series models take left padding; MambaForecaster's exactness is tested on its own")
    model = case.make().eval()
    tokens, lengths = inputs("dna")
    with torch.no_grad():
        batched = model(tokens, lengths)
        for i, n in enumerate(lengths.tolist()):
            alone = model(tokens[i:i + 1, :n])
            torch.testing.assert_close(batched[i:i + 1, :n] if batched.dim() == 4 else batched[i:i + 1],
                                       alone, rtol=1e-5, atol=1e-5)


def test_save_load_round_trip_is_exact(case, tmp_path):
    model = case.make().eval()
    model.save_pretrained(tmp_path / "pkg", metrics={"score": 0.25}, extra_config={"licence": "CC0-1.0"})
    loaded, config, metrics = load_package(tmp_path / "pkg")
    assert type(loaded) is type(model) and loaded.config == model.config and not loaded.training
    assert config["licence"] == "CC0-1.0" and metrics == {"score": 0.25}
    data = inputs(case.kind)
    with torch.no_grad():
        for a, b in zip(outputs(model(*data)), outputs(loaded(*data))):
            assert torch.equal(a, b)
    assert type(type(model).from_pretrained(tmp_path / "pkg")) is type(model)
    assert type(PackagedModel.from_pretrained(tmp_path / "pkg")) is type(model)


def test_gradients_reach_every_parameter(case):
    model = case.make().train()
    g = torch.Generator().manual_seed(3)
    loss = sum((o * torch.randn(o.shape, generator=g)).sum() for o in outputs(model(*inputs(case.kind))))
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and bool(torch.isfinite(p.grad).all()) and p.grad.abs().sum() > 0, name


def test_config_round_trips_through_plain_json(case):
    import json

    model = case.make()
    data = json.loads(json.dumps(model.config.to_dict()))
    assert type(model).config_class.from_dict(data) == model.config
    assert type(model).from_config(model.config_class.from_dict(data)).config == model.config
