"""``seqmamba export RUN_OR_CKPT DIR``: a model package (``seqmodels.package``) from a training run.

The package holds everything needed to score new data without the run folder: the network
(rebuilt from the checkpoint's plain-data spec, weights in safetensors), the preprocessing numbers
the data module recorded (class names, scaler mean/scale, channels, input length, horizon), the
training data settings and licence, and metrics.json with the test metrics, seed and commands.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import torch

from pipelines.runs import RUN_JSON, TEST_METRICS, find_checkpoint
from pipelines.tasks.base import CKPT_KEY
from pipelines.tasks.network_spec import build_network

log = logging.getLogger(__name__)

# Licences of the shared benchmark sets, as their README states them (see ../shared/data/README.md).
KNOWN_LICENCES = {
    "gue_prom_core_notata": "Apache-2.0 (vendoring repository wds-seu/DeepGene; GUE states no separate data licence)",
    "gue_tf_0": "Apache-2.0 (vendoring repository wds-seu/DeepGene; GUE states no separate data licence)",
    "exchange_rate": "none stated by the source repositories",
    "ETTh1": "CC BY-ND 4.0",
}


def _load_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def resolve_checkpoint(run_or_ckpt: str | Path, which: str = "best") -> tuple[Path, Path | None]:
    """(checkpoint file, run folder or None) from a run folder or a checkpoint path."""
    path = Path(run_or_ckpt)
    if path.is_dir():
        return find_checkpoint(path, which), path
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such run folder or checkpoint")
    run = path.parent.parent if path.parent.name == "checkpoints" else None
    return path, run if run is not None and (run / RUN_JSON).is_file() else run


def network_from_checkpoint(ckpt: dict[str, Any]) -> torch.nn.Module:
    """Rebuild a task checkpoint's network and load its weights (strictly)."""
    hparams = ckpt.get("hyper_parameters") or {}
    spec = hparams.get("network")
    if not isinstance(spec, dict):
        raise ValueError("checkpoint has no network spec in its hyperparameters (not a seqmamba task checkpoint?)")
    network = build_network(spec)
    prefix = "network."
    state = {k[len(prefix):]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    network.load_state_dict(state, strict=True)
    return network.eval()


def training_data(ckpt: dict[str, Any]) -> dict[str, Any] | None:
    """The data module's settings as recorded in the checkpoint (plain data), or None."""
    hparams = dict(ckpt.get("datamodule_hyper_parameters") or {})
    if not hparams:
        return None
    hparams.pop("_instantiator", None)
    class_path = hparams.pop("_class_path", None)
    return {"datamodule": class_path, **{k: v for k, v in hparams.items() if not k.startswith("_")}}


def package_config(ckpt: dict[str, Any], licence: str | None) -> dict[str, Any]:
    """``extra_config`` for ``save_package``: preprocessing numbers, class names / channels,
    training data and its licence."""
    pre = dict((ckpt.get(CKPT_KEY) or {}).get("preprocessing") or {})
    extra: dict[str, Any] = {"preprocessing": pre}
    if pre.get("class_names"):
        extra["class_names"] = [str(c) for c in pre["class_names"]]
    if pre.get("channels"):
        extra["input_channels"] = [str(c) for c in pre["channels"]]
    data = training_data(ckpt)
    extra["training_data"] = data
    dataset = (data or {}).get("dataset")
    extra["licence"] = licence if licence is not None else KNOWN_LICENCES.get(dataset)
    return extra


def package_metrics(ckpt: dict[str, Any], run: Path | None, ckpt_path: Path) -> dict[str, Any]:
    """metrics.json: test metrics of this checkpoint (from ``seqmamba test``), seed, commands."""
    info = _load_json(run / RUN_JSON) if run else {}
    tested = _load_json(run / TEST_METRICS) if run else {}
    same_ckpt = tested.get("checkpoint") and Path(tested["checkpoint"]).resolve() == ckpt_path.resolve()
    if tested and not same_ckpt:
        log.warning("%s holds test metrics of %s, not of %s; they are not copied", TEST_METRICS,
                    tested.get("checkpoint"), ckpt_path)
    fits = [inv for inv in info.get("invocations", []) if inv.get("stage") == "fit"]
    metrics: dict[str, Any] = {
        "test": {k.removeprefix("test/"): v for k, v in tested.get("metrics", {}).items()} if same_ckpt else {},
        "seed": info.get("seed"),
        "epoch": ckpt.get("epoch"),
        "global_step": ckpt.get("global_step"),
        "checkpoint": ckpt_path.name,
        "fit_command": " ".join(fits[0]["command"]) if fits else None,
        "test_command": " ".join(tested["command"]) if same_ckpt and tested.get("command") else None,
        "git_commit": (info.get("git") or {}).get("commit"),
    }
    return metrics


def export(run_or_ckpt: str | Path, out_dir: str | Path, *, which: str = "best", licence: str | None = None) -> Path:
    """Write the package of a run's ``which`` checkpoint (or of a checkpoint file) to ``out_dir``."""
    from seqmodels.package import save_package

    ckpt_path, run = resolve_checkpoint(run_or_ckpt, which)
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    network = network_from_checkpoint(ckpt)
    target = save_package(network, out_dir, metrics=package_metrics(ckpt, run, ckpt_path),
                          extra_config=package_config(ckpt, licence))
    log.info("exported %s to %s", ckpt_path, target)
    return Path(target)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="seqmamba export", description=__doc__.splitlines()[0])
    parser.add_argument("run_or_ckpt", help="a run folder (its best checkpoint, see --which) or a .ckpt file")
    parser.add_argument("out_dir", help="package folder to write (an earlier package there is replaced)")
    parser.add_argument("--which", choices=("best", "last"), default="best", help="checkpoint of a run folder")
    parser.add_argument("--licence", help="licence of the training data (default: known for the shared sets)")
    args = parser.parse_args(argv)
    try:
        target = export(args.run_or_ckpt, args.out_dir, which=args.which, licence=args.licence)
    except (FileNotFoundError, ValueError) as err:
        print(f"seqmamba export: {err}", file=sys.stderr)
        return 2
    print(target)
    return 0
