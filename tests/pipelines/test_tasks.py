"""The LightningModules: losses against float64 references, the weight-decay split, the schedule,
plain-data checkpoints, and that a small model actually learns."""

import math

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from toys import ToyClassifier, ToyDNADataModule, ToyForecaster, ToySineDataModule, ToyTagger

from pipelines.tasks import ClassificationTask, ForecastTask, TaggingTask, build_network, network_spec, pinball_loss
from pipelines.tasks.optim import split_weight_decay, warmup_cosine
from seqmodels.classifier import MambaClassifier
from seqmodels.forecaster import MambaForecaster


def _trainer(tmp_path, **kw):
    defaults = dict(
        default_root_dir=tmp_path, accelerator="cpu", logger=False, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False,
    )
    return pl.Trainer(**{**defaults, **kw})


def test_weight_decay_split_exempts_mamba_params_norms_and_biases():
    net = ToyClassifier()
    decay, no_decay = split_weight_decay(net, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in net.named_parameters()}
    assert {names[id(p)] for p in decay["params"]} == {"embed.weight", "conv.weight", "head.weight"}
    assert {names[id(p)] for p in no_decay["params"]} == {"conv.bias", "A_log", "D", "norm.weight", "norm.bias",
                                                         "head.bias"}


def test_warmup_cosine_schedule_shape():
    f = warmup_cosine(warmup_steps=10, total_steps=110, min_lr_ratio=0.1)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.1 + 0.9 * 0.5)  # half-way through the cosine
    assert f(110) == pytest.approx(0.1) and f(500) == pytest.approx(0.1)
    values = [f(s) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:]))  # monotone decay after warm-up
    assert warmup_cosine(0, math.inf, 0.0)(10**6) == 1.0


def test_pinball_loss_matches_float64_definition():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(3, 4, 2, 3, generator=g)
    y = torch.randn(3, 4, 2, generator=g)
    levels = torch.tensor([0.1, 0.5, 0.9])
    ref = 0.0
    for idx in torch.cartesian_prod(*(torch.arange(s) for s in q.shape)).tolist():
        b, h, c, k = idx
        e = float(y[b, h, c].double() - q[b, h, c, k].double())
        ref += max(levels[k].item() * e, (levels[k].item() - 1) * e)
    assert pinball_loss(q, y, levels).item() == pytest.approx(ref / q.numel(), rel=1e-6)


def test_hyperparameters_are_plain_data_and_network_rebuilds():
    task = ClassificationTask(ToyClassifier(n_classes=3, d_model=8), class_weights=[1.0, 2.0, 1.0])
    spec = task.hparams["network"]
    assert spec == {"class_path": "toys.ToyClassifier", "init_args": {"n_classes": 3, "d_model": 8}}
    assert "network" in task.hparams and not any(isinstance(v, torch.nn.Module) for v in task.hparams.values())
    rebuilt = build_network(network_spec(task.network))
    assert isinstance(rebuilt, ToyClassifier) and rebuilt.config == task.network.config


def test_untrusted_network_class_is_refused():
    with pytest.raises(ValueError, match="refusing to import"):
        build_network({"class_path": "some_plugin_never_imported.Net", "init_args": {}})
    with pytest.raises(ValueError, match="not an nn.Module"):
        build_network({"class_path": "os.system", "init_args": {}})


def test_classification_loss_with_class_weights_matches_reference():
    task = ClassificationTask(ToyClassifier(), class_weights=[0.3, 1.7])
    tokens = torch.randint(2, 6, (6, 12), generator=torch.Generator().manual_seed(1))
    lengths, labels = torch.tensor([12, 5, 7, 12, 1, 9]), torch.tensor([0, 1, 1, 0, 1, 0])
    batch = {"tokens": tokens, "lengths": lengths, "labels": labels}
    task.log = task.log_dict = lambda *a, **k: None  # no trainer attached
    loss = task._step(batch, "val")
    logits = task.network(batch["tokens"], batch["lengths"]).double()
    w = torch.tensor([0.3, 1.7], dtype=torch.float64)
    nll = -logits.log_softmax(-1)[torch.arange(6), batch["labels"]]
    ref = (w[batch["labels"]] * nll).sum() / w[batch["labels"]].sum()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)


def test_bad_class_weights_are_rejected():
    with pytest.raises(ValueError, match="class_weights needs 2"):
        ClassificationTask(ToyClassifier(), class_weights=[1.0])


def test_tagging_loss_ignores_unlabelled_positions():
    task = TaggingTask(ToyTagger(n_tracks=2, n_classes=3), track_names=["fwd", "rev"])
    task.log = task.log_dict = lambda *a, **k: None
    g = torch.Generator().manual_seed(2)
    tokens = torch.randint(2, 6, (2, 10), generator=g)
    labels = torch.randint(0, 3, (2, 10, 2), generator=g)
    labels[1, 6:] = -100  # padding
    labels[0, :3, 1] = -100  # unannotated
    loss = task._step({"tokens": tokens, "lengths": torch.tensor([10, 6]), "labels": labels}, "train")
    logp = task.network(tokens).double().log_softmax(-1)
    keep = labels != -100
    ref = -logp[keep].gather(-1, labels[keep].unsqueeze(-1)).mean()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6)
    all_ignored = torch.full_like(labels, -100)
    assert task._step({"tokens": tokens, "lengths": None, "labels": all_ignored}, "train").item() == 0.0


def test_checkpoint_loads_with_weights_only_and_restores_task(tmp_path):
    dm = ToyDNADataModule(n_train=64, n_val=32, length=20)
    task = ClassificationTask(ToyClassifier())
    trainer = _trainer(tmp_path, max_epochs=1)
    trainer.fit(task, dm)
    path = tmp_path / "a.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=True)  # must not need pickle
    assert ckpt["seqmamba"]["preprocessing"]["class_names"] == ["negative", "positive"]
    restored = ClassificationTask.load_from_checkpoint(path, weights_only=True)
    for (n, a), (_, b) in zip(task.state_dict().items(), restored.state_dict().items()):
        assert torch.equal(a, b), n
    assert restored.preprocessing == task.preprocessing


def _fit_and_test(task, dm, tmp_path, epochs: int) -> dict:
    trainer = _trainer(tmp_path, max_epochs=epochs, num_sanity_val_steps=0)
    trainer.fit(task, dm)
    (result,) = trainer.test(task, dm, verbose=False)
    return result


def test_tiny_mamba_classifier_learns_planted_motif(tmp_path):
    pl.seed_everything(0, verbose=False)
    dm = ToyDNADataModule(n_train=384, n_val=128, length=32, batch_size=32)
    network = MambaClassifier(n_classes=2, d_model=16, n_layer=1, d_state=4, pooling="max")
    result = _fit_and_test(ClassificationTask(network, lr=1e-2, weight_decay=0.0), dm, tmp_path, epochs=4)
    assert result["test/acc"] > 0.85 and result["test/mcc"] > 0.7  # chance: 0.5 and 0.0


def test_tiny_mamba_forecaster_beats_naive_and_reports_original_units(tmp_path):
    pl.seed_everything(0, verbose=False)
    dm = ToySineDataModule()
    network = MambaForecaster(input_len=24, horizon=6, d_model=16, n_layer=1, d_state=4)
    task = ForecastTask(network, lr=1e-2, weight_decay=0.0)
    result = _fit_and_test(task, dm, tmp_path, epochs=5)
    assert result["test/mse"] < 0.5 * result["test/naive_mse"]  # repeat-last-value forecast
    # MAE in original units: each channel's error times its scale, averaged over everything.
    with torch.no_grad():
        errors = torch.cat([(task(b["x"]).point.double() - b["y"].double()).abs() * torch.as_tensor(dm.scaler_scale)
                            for b in dm.test_dataloader()])
    assert result["test/mae_orig"] == pytest.approx(errors.mean().item(), rel=1e-4)
    assert result["test/pinball"] > 0


def test_forecast_loss_choice_and_shape_errors():
    with pytest.raises(ValueError, match="loss must be"):
        ForecastTask(ToyForecaster(), loss="huber")
    task = ForecastTask(ToyForecaster(), loss="mae", quantile_weight=0.0)
    task.log = lambda *a, **k: None
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(4, 24, 2, generator=g), torch.randn(4, 6, 2, generator=g)
    loss = task._step({"x": x, "y": y}, "train")
    assert loss.item() == pytest.approx(F.l1_loss(task(x).point, y).item(), rel=1e-6)
    with pytest.raises(ValueError, match="does not match target"):
        task._step({"x": x, "y": y[:, :3]}, "train")
