"""``seqmamba fit|validate|test|predict``: Lightning's own command line (LightningCLI), with the
run-folder conventions that make runs reproducible and resumable.

Model (a task from :mod:`pipelines.tasks` holding a seqmodels network) and data module are chosen
in the YAML config (subclass mode); every setting can be overridden on the command line, and
``--print_config`` shows the resolved config. The run folder is ``--trainer.default_root_dir``:

    seqmamba fit --config pipelines/configs/gue_prom_core_notata.yaml
    seqmamba fit --config pipelines/configs/gue_prom_core_notata.yaml --ckpt_path last   # resume
    seqmamba test --config pipelines/configs/gue_prom_core_notata.yaml --ckpt_path best

Checkpoints go to ``<run>/checkpoints/`` (always with ``last.ckpt``), are written atomically and
load with ``torch.load(weights_only=True)``; resuming uses ``weights_only=True`` by default.
"""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from jsonargparse import ActionYesNo
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.plugins.io import CheckpointIO

from pipelines.data.errors import InputError
from pipelines.runs import AtomicCheckpointIO, RunMetadata, find_checkpoint

log = logging.getLogger(__name__)

DEFAULT_RUN_DIR = "runs/seqmamba"


class SeqMambaCLI(LightningCLI):
    """LightningCLI with our run-folder layout, ``--deterministic`` and weights-only loading."""

    def __init__(self, *args: Any, command: list[str] | None = None, **kwargs: Any) -> None:
        self.command = command  # recorded in run.json; set before LightningCLI runs everything
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument(
            "--deterministic", action=ActionYesNo, default=False,
            help="bit-reproducible run: deterministic torch algorithms (also --trainer.deterministic) "
                 "and per-epoch reseeding (always on when a seed is set)",
        )
        for key in ("input_len", "horizon"):
            parser.add_argument(
                f"--{key}", type=int | None, default=None,
                help=f"forecasting: set {key} of both the data module and the network",
            )

    def before_instantiate_classes(self) -> None:
        cfg = self.config[self.subcommand]
        if cfg.get("deterministic"):
            cfg.trainer.deterministic = True
        for key in ("input_len", "horizon"):
            value = cfg.get(key)
            if value is not None:
                for section in (cfg.data.init_args, cfg.model.init_args.network.init_args):
                    section[key] = value
        if cfg.get("weights_only") is None:
            cfg.weights_only = True  # our checkpoints are plain data; never unpickle one
        root = Path(cfg.trainer.default_root_dir or DEFAULT_RUN_DIR)
        cfg.trainer.default_root_dir = str(root)
        if self.subcommand != "fit" and cfg.get("ckpt_path") in ("best", "last"):
            # Lightning resolves "best" only within the process that trained; read it from the run folder.
            try:
                cfg.ckpt_path = str(find_checkpoint(root, cfg.ckpt_path))
            except FileNotFoundError as err:
                raise InputError(str(err)) from None
        if self.subcommand == "fit" and not cfg.trainer.fast_dev_run and cfg.get("ckpt_path") is None:
            existing = sorted((root / "checkpoints").glob("*.ckpt")) if (root / "checkpoints").is_dir() else []
            if existing:
                raise InputError(
                    f"run folder {root} already holds checkpoints ({existing[0].name}, ...): resume it with "
                    "--ckpt_path last, or start a new run with another --trainer.default_root_dir",
                )

    def instantiate_trainer(self, **kwargs: Any):
        cfg = self.config_init[self.subcommand]["trainer"]
        root = Path(cfg["default_root_dir"])
        if cfg.get("logger") in (None, True):
            # One fixed folder per run (no version_N), so --ckpt_path last finds the same checkpoints.
            # validate/test/predict log beside it (<run>/test/metrics.csv): the training log stays whole.
            name = "" if self.subcommand == "fit" else self.subcommand
            kwargs["logger"] = CSVLogger(save_dir=str(root), name=name, version="")
        plugins = list(cfg.get("plugins") or [])
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            kwargs["plugins"] = [*plugins, AtomicCheckpointIO()]
        callbacks = list(cfg.get("callbacks") or [])
        if cfg.get("enable_checkpointing", True) is not False and not cfg.get("fast_dev_run"):
            callbacks.append(last_checkpoint(root))
        kwargs["callbacks"] = [*callbacks, RunMetadata(self.command)]
        trainer = super().instantiate_trainer(**kwargs)
        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.dirpath is None:
                callback.dirpath = str(root / "checkpoints")  # known before fit, so "last" resolves
        return trainer


def last_checkpoint(root: Path) -> ModelCheckpoint:
    """``<root>/checkpoints/last.ckpt``, rewritten at the end of every training epoch whatever the
    metrics do (Lightning's ``save_last`` only follows the top-k saves). Epoch ends are where a
    resumed run continues exactly: the tasks reseed per epoch, so the next epoch's data order,
    dropout and augmentation are those of an uninterrupted run."""
    return ModelCheckpoint(
        dirpath=str(root / "checkpoints"), filename=ModelCheckpoint.CHECKPOINT_NAME_LAST, monitor=None,
        save_top_k=1, save_last=False, enable_version_counter=False, save_on_train_epoch_end=True,
    )


def _oom_advice() -> str:
    return (
        "out of memory. Lower one of: the batch size (--data.init_args.batch_size), the sequence or window "
        "length (--data.init_args.max_len / input_len), or the model size "
        "(--model.init_args.network.init_args.d_model / n_layer); or trade compute for memory with "
        "--model.init_args.network.init_args.checkpointing true, or accumulate gradients "
        "(--trainer.accumulate_grad_batches)."
    )


def _is_oom(err: BaseException) -> bool:
    if isinstance(err, torch.OutOfMemoryError):
        return True
    text = str(err)
    return isinstance(err, (RuntimeError, MemoryError)) and (
        "out of memory" in text or "can't allocate memory" in text or isinstance(err, MemoryError)
    )


def run(subcommand: str, argv: list[str]) -> int:
    """Run ``subcommand`` with LightningCLI; bad input and out-of-memory end with a short message."""
    # Resuming reuses the run folder on purpose: the CSV logger appends to metrics.csv and the
    # checkpoint folder is ours, so these two warnings only mislead.
    warnings.filterwarnings("ignore", message=r"Experiment logs directory .* exists and is not empty")
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    # We hand LightningCLI the arguments after 'seqmamba <subcommand>' ourselves; it warns whenever
    # sys.argv is not empty as well, which is every run from the command line.
    warnings.filterwarnings("ignore", message=r"LightningCLI's args parameter is intended to run from within Python")
    try:
        SeqMambaCLI(
            LightningModule,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            trainer_defaults={"default_root_dir": DEFAULT_RUN_DIR},
            save_config_kwargs={"overwrite": True},  # a resumed run rewrites it with its --ckpt_path
            auto_configure_optimizers=False,  # the tasks own their optimiser and schedule
            parser_kwargs={"prog": "seqmamba"},
            args=[subcommand, *argv],
            command=["seqmamba", subcommand, *argv],
        )
    except InputError as err:
        print(f"seqmamba {subcommand}: {err}", file=sys.stderr)
        return 2
    except Exception as err:
        if _is_oom(err):
            print(f"seqmamba {subcommand}: {_oom_advice()}", file=sys.stderr)
            return 1
        raise
    return 0


def fit(argv: list[str]) -> int:
    """``seqmamba fit``: train (``--ckpt_path last`` resumes)."""
    return run("fit", argv)


def validate(argv: list[str]) -> int:
    """``seqmamba validate``: evaluate on the validation split."""
    return run("validate", argv)


def test(argv: list[str]) -> int:
    """``seqmamba test``: evaluate on the test split; writes ``<run>/test_metrics.json``."""
    return run("test", argv)


def predict(argv: list[str]) -> int:
    """``seqmamba predict``: run the model over the data module's predict split."""
    return run("predict", argv)
