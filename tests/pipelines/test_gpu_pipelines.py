"""GPU runs of the tasks and of scoring (bf16-mixed training, Triton kernels). Imports nothing
that needs Biopython or Streamlit, which the GPU machine lacks:

    pytest -m gpu tests/pipelines/test_gpu_pipelines.py
"""

from collections import namedtuple

import lightning.pytorch as pl
import pytest
import torch
from toys import ToyDNADataModule, ToySineDataModule

from pipelines import scoring
from pipelines.tasks import ClassificationTask, ForecastTask
from seqmodels.classifier import MambaClassifier
from seqmodels.forecaster import MambaForecaster

pytestmark = pytest.mark.gpu
Record = namedtuple("Record", ["id", "seq"])  # what the FASTA reader yields, without importing it


def _trainer(tmp_path, epochs):
    return pl.Trainer(default_root_dir=tmp_path, accelerator="cuda", devices=1, precision="bf16-mixed",
                      gradient_clip_val=1.0, max_epochs=epochs, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, num_sanity_val_steps=0)


def test_bf16_mixed_classifier_learns_on_gpu_and_checkpoints_are_plain(tmp_path):
    pl.seed_everything(0, verbose=False)
    dm = ToyDNADataModule(n_train=1024, n_val=256, length=64, batch_size=64)
    task = ClassificationTask(MambaClassifier(n_classes=2, d_model=64, n_layer=2, pooling="max",
                                              bidirectional=True), lr=3e-3, weight_decay=0.0)
    trainer = _trainer(tmp_path, 5)
    trainer.fit(task, dm)
    (result,) = trainer.test(task, dm, verbose=False)
    assert result["test/acc"] > 0.9 and result["test/mcc"] > 0.8, result  # the figures, when it fails
    path = tmp_path / "a.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=True, map_location="cpu")
    assert ckpt["state_dict"]["network.head.weight"].dtype == torch.float32  # master weights stay fp32


def test_bf16_mixed_forecaster_beats_naive_on_gpu(tmp_path):
    pl.seed_everything(0, verbose=False)
    dm = ToySineDataModule()
    task = ForecastTask(MambaForecaster(input_len=24, horizon=6, d_model=32, n_layer=2), lr=3e-3, weight_decay=0.0)
    trainer = _trainer(tmp_path, 10)
    trainer.fit(task, dm)
    (result,) = trainer.test(task, dm, verbose=False)
    assert result["test/mse"] < 0.5 * result["test/naive_mse"], result


def test_gpu_scores_match_cpu_scores():
    torch.manual_seed(0)
    model = MambaClassifier(n_classes=3, class_names=("a", "b", "c"), d_model=32, n_layer=2).eval()
    config = {"class_names": ["a", "b", "c"]}
    gen = torch.Generator().manual_seed(1)
    records = [Record(f"r{i}", "".join("ACGT"[j] for j in torch.randint(0, 4, (int(n),), generator=gen)))
               for i, n in enumerate(torch.randint(10, 400, (50,), generator=gen))]
    cpu = [row for _, rows in scoring.score_records(model, config, records) for row in rows]
    gpu = [row for _, rows in scoring.score_records(model.cuda(), config, records) for row in rows]
    for a, b in zip(cpu, gpu):
        assert a["id"] == b["id"]
        for key in ("p_a", "p_b", "p_c"):
            assert a[key] == pytest.approx(b[key], abs=1e-3)
