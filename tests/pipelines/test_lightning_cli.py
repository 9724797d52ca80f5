"""``seqmamba fit|validate|test|predict``: every shipped config runs, run folders hold what they
promise, checkpoints are plain data, a killed run resumes to the same weights, errors are short."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from pipelines.cli import main as seqmamba
from pipelines.lightning_cli import run

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "pipelines" / "configs").glob("*.yaml"))
TOYS = str(Path(__file__).parent)
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def write_fasta(path: Path, n: int, length: int, seed: int) -> Path:
    """Random DNA, half of it carrying TATAAT, labelled positive/negative in the header."""
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(n):
        seq = "".join(rng.choice(list("ACGT"), length))
        label = "positive" if i % 2 else "negative"
        if label == "positive":
            at = int(rng.integers(0, length - 6))
            seq = seq[:at] + "TATAAT" + seq[at + 6 :]
        lines += [f">r{i} label={label}", seq]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_series(path: Path, n: int = 1200, channels: int = 3, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    data = {f"s{c}": 10 * (c + 1) + np.sin(2 * np.pi * t / (12 + 5 * c)) + 0.1 * rng.standard_normal(n)
            for c in range(channels)}
    frame = {"date": [str(np.datetime64("2020-01-01T00") + np.timedelta64(int(i), "h")) for i in t], **data}
    import pandas as pd

    pd.DataFrame(frame).to_csv(path, index=False)
    return path


def _data_overrides(config: Path, tmp_path: Path) -> list[str]:
    data = yaml.safe_load(config.read_text())["data"]["class_path"]
    if data.endswith("DNAClassificationDataModule"):
        fa = str(write_fasta(tmp_path / "tiny.fa", 24, 70, 0))
        return ["--data.init_args.dataset", "null", "--data.init_args.train", fa, "--data.init_args.val", fa,
                "--data.init_args.test", fa, "--data.init_args.batch_size", "8", "--data.init_args.num_workers", "0"]
    if data.endswith("ForecastDataModule"):
        csv = str(write_series(tmp_path / "tiny.csv"))
        return ["--data.init_args.dataset", "null", "--data.init_args.csv", csv, "--data.init_args.split",
                "ratio:0.7,0.1,0.2", "--data.init_args.batch_size", "8"]
    if data.endswith("GenomeDataModule"):  # reads the shared genomes: CPU-sized windows, the small genomes
        args = ["--data.init_args.window", "2000", "--data.init_args.samples_per_epoch", "2",
                "--data.init_args.batch_size", "2", "--trainer.callbacks", "[]", "--trainer.devices", "1"]
        if yaml.safe_load(config.read_text())["data"]["init_args"].get("mode", "genome") == "genome":
            args += ["--data.init_args.train", "[genomes/phage_lambda/NC_001416.gbk.gz]",
                     "--data.init_args.val", "[genomes/athaliana_chloroplast/NC_000932.gb.gz]",
                     "--data.init_args.test", "[genomes/mgenitalium_g37/Mgen_referencegenome.gb.gz]"]
        return args
    return []


@pytest.fixture(autouse=True)
def _argv(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["seqmamba"])  # LightningCLI warns when pytest's argv is also present


def _fast_dev_run(config: Path, tmp_path: Path, shrink: bool) -> list[str]:
    args = ["--config", str(config), "--trainer.fast_dev_run", "true", "--trainer.accelerator", "cpu",
            "--trainer.precision", "32-true", "--trainer.default_root_dir", str(tmp_path / "run"),
            *_data_overrides(config, tmp_path), *QUIET]
    network = yaml.safe_load(config.read_text())["model"]["init_args"]["network"]["class_path"]
    if shrink and "Mamba" in network:  # same classes and wiring, a CPU-sized network
        args += ["--model.init_args.network.init_args.d_model", "16", "--model.init_args.network.init_args.n_layer",
                 "1"]
    return args


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_every_shipped_config_fits_one_batch(config, tmp_path, request):
    if "genome" in config.read_text():
        request.getfixturevalue("shared_data")  # skips without the shared data
    assert run("fit", _fast_dev_run(config, tmp_path, shrink=True)) == 0


@pytest.mark.slow
@pytest.mark.parametrize("config", [c for c in CONFIGS if not c.stem.startswith("tiny")],
                         ids=[c.stem for c in CONFIGS if not c.stem.startswith("tiny")])
def test_every_shipped_config_fits_one_batch_at_full_size(config, tmp_path):
    assert run("fit", _fast_dev_run(config, tmp_path, shrink=False)) == 0


def test_print_config_shows_the_resolved_network(capsys):
    with pytest.raises(SystemExit) as exit_info:
        run("fit", ["--config", str(REPO / "pipelines/configs/gue_tf_0.yaml"), "--print_config"])
    assert exit_info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    network = printed["model"]["init_args"]["network"]
    assert network["class_path"] == "seqmodels.classifier.MambaClassifier"
    shipped = yaml.safe_load((REPO / "pipelines/configs/gue_tf_0.yaml").read_text())
    assert network["init_args"]["d_model"] == shipped["model"]["init_args"]["network"]["init_args"]["d_model"]
    assert network["init_args"]["d_state"] == 16  # not in the file: the class default, resolved
    assert printed["seed_everything"] == 1


def test_a_command_line_run_does_not_warn_about_its_own_arguments(monkeypatch, recwarn):
    argv = ["--config", str(REPO / "pipelines/configs/gue_tf_0.yaml"), "--print_config"]
    monkeypatch.setattr(sys, "argv", ["seqmamba", "fit", *argv])  # as `seqmamba fit ...` leaves it
    with pytest.raises(SystemExit):
        run("fit", argv)
    assert not [w for w in recwarn if "args parameter" in str(w.message)]


def _toy_config(tmp_path: Path, root: Path, epochs: int, extra_callbacks: str = "") -> Path:
    text = f"""
seed_everything: 7
trainer:
  default_root_dir: {root}
  max_epochs: {epochs}
  accelerator: cpu
  logger: true
  enable_progress_bar: false
  enable_model_summary: false
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {{monitor: val/mcc, mode: max, filename: "best-{{epoch}}"}}
{extra_callbacks}
model:
  class_path: pipelines.tasks.ClassificationTask
  init_args:
    network:
      class_path: toys.ToyClassifier
      init_args: {{d_model: 8}}
    lr: 0.01
data:
  class_path: toys.ToyDNADataModule
  init_args: {{n_train: 64, n_val: 32, length: 20}}
"""
    path = tmp_path / f"{root.name}.yaml"
    path.write_text(text)
    return path


def _cli(args: list[str], env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), TOYS]), "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture
def toys_on_path(monkeypatch):
    monkeypatch.syspath_prepend(TOYS)


def test_killed_run_resumes_to_identical_weights(tmp_path, toys_on_path):
    full = _toy_config(tmp_path, tmp_path / "full", 3)
    assert run("fit", ["--config", str(full)]) == 0
    killed_root = tmp_path / "killed"
    killer = "    - class_path: toys.KillAt\n      init_args: {step: 5}"  # in epoch 3 (2 batches an epoch)
    killed = _toy_config(tmp_path, killed_root, 3, killer)
    out = _cli(["fit", "--config", str(killed)])
    assert out.returncode == -9, out.stderr[-2000:]  # SIGKILL: no cleanup ran
    before = torch.load(killed_root / "checkpoints" / "last.ckpt", weights_only=True)
    assert before["global_step"] == 4  # the last epoch end before the kill
    assert run("fit", ["--config", str(full), "--trainer.default_root_dir", str(killed_root), "--ckpt_path",
                       "last"]) == 0
    a = torch.load(tmp_path / "full" / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(killed_root / "checkpoints" / "last.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"] == 6
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    # The run folder records the seed, the commit, the versions and both invocations.
    record = json.loads((killed_root / "run.json").read_text())
    assert record["seed"] == 7 and record["versions"]["torch"] and "commit" in record["git"]
    assert [inv["stage"] for inv in record["invocations"]] == ["fit", "fit"]
    assert (killed_root / "config.yaml").is_file() and (killed_root / "metrics.csv").is_file()


def test_checkpoints_are_plain_data_and_test_writes_metrics(tmp_path, toys_on_path):
    config = _toy_config(tmp_path, tmp_path / "r", 1)
    assert run("fit", ["--config", str(config)]) == 0
    for ckpt in (tmp_path / "r" / "checkpoints").glob("*.ckpt"):
        loaded = torch.load(ckpt, weights_only=True)  # raises on any pickled object
        assert loaded["hyper_parameters"]["network"]["class_path"] == "toys.ToyClassifier"
    assert run("test", ["--config", str(config), "--ckpt_path", "best"]) == 0
    tested = json.loads((tmp_path / "r" / "test_metrics.json").read_text())
    assert set(tested["metrics"]) >= {"test/acc", "test/mcc", "test/f1", "test/auroc"}
    assert Path(tested["checkpoint"]).name.startswith("best-")
    # Testing logs beside the run: the training log keeps its training rows.
    training_log = (tmp_path / "r" / "metrics.csv").read_text()
    assert "val/mcc" in training_log.splitlines()[0] and "test/mcc" not in training_log
    assert "test/mcc" in (tmp_path / "r" / "test" / "metrics.csv").read_text()


def test_fit_refuses_to_overwrite_a_run(tmp_path, toys_on_path, capsys):
    config = _toy_config(tmp_path, tmp_path / "r", 1)
    assert run("fit", ["--config", str(config)]) == 0
    assert run("fit", ["--config", str(config)]) == 2
    assert "--ckpt_path last" in capsys.readouterr().err


def test_bad_input_is_a_short_message_and_exit_code_2(tmp_path, capsys):
    missing = str(tmp_path / "nope.fa")
    rc = seqmamba(["fit", "--config", str(REPO / "pipelines/configs/tiny_classifier.yaml"),
                   "--data.init_args.train", missing, "--trainer.default_root_dir", str(tmp_path / "r"), *QUIET])
    err = capsys.readouterr().err
    assert rc == 2 and "nope.fa" in err and "Traceback" not in err


def test_out_of_memory_suggests_what_to_lower(tmp_path, toys_on_path, monkeypatch, capsys):
    import toys

    def boom(self, tokens, lengths=None):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(toys.ToyClassifier, "forward", boom)
    config = _toy_config(tmp_path, tmp_path / "r", 1)
    assert run("fit", ["--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert "out of memory" in err and "batch_size" in err and "d_model" in err


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_needs_no_code_change(tmp_path):
    config = _toy_config(tmp_path, tmp_path / "ddp", 2)
    out = _cli(["fit", "--config", str(config), "--trainer.devices", "2", "--trainer.strategy", "ddp",
                "--trainer.accelerator", "cpu"])
    assert out.returncode == 0, out.stderr[-3000:]
    ckpt = torch.load(tmp_path / "ddp" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 2  # 64 samples / 32 per batch / 2 ranks, 2 epochs


def test_run_record_names_a_commit_only_for_a_checkout_of_its_own(tmp_path):
    """A copy of the source inside another repository (a snapshot in an ignored folder) must not
    report that repository's commit as the code that ran."""
    from pipelines.runs import git_state

    outer = tmp_path / "outer"
    (outer / "snapshot").mkdir(parents=True)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(outer)]
    subprocess.run([*git, "init", "-q"], check=True)
    (outer / "a.txt").write_text("a\n")
    subprocess.run([*git, "add", "a.txt"], check=True)
    subprocess.run([*git, "commit", "-qm", "a"], check=True)

    assert git_state(outer)["commit"] is not None and git_state(outer)["dirty"] is False
    assert git_state(outer / "snapshot") == {"commit": None, "dirty": None}
    assert git_state(tmp_path / "not_a_repo") == {"commit": None, "dirty": None}
