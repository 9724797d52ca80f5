"""Bundled model packages: where they are, how a name becomes a folder, and ``seqmamba models``.

Bundled packages live in ``data/models/<name>/`` of the source tree, or in the folders named by
``SEQMAMBA_MODELS`` (``os.pathsep``-separated; it replaces the default). A package is a folder with
``config.json`` (see ``seqmodels.package``); only its JSON is read here, never its weights.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_DIR = Path(__file__).resolve().parents[1] / "data" / "models"
_MAX_JSON = 4 << 20  # a config.json larger than this is not one of ours


def model_dirs() -> list[Path]:
    """The folders searched for bundled packages, in order."""
    env = os.environ.get("SEQMAMBA_MODELS")
    if env:
        return [Path(p) for p in env.split(os.pathsep) if p]
    return [DEFAULT_DIR]


def list_models() -> list[tuple[str, Path]]:
    """``(name, folder)`` of every bundled package, sorted by name (the first folder wins a clash)."""
    found: dict[str, Path] = {}
    for root in model_dirs():
        if not root.is_dir():
            continue
        for entry in sorted(root.iterdir()):
            if entry.name.startswith(".") or not (entry / "config.json").is_file():
                continue  # staging folders of an interrupted save start with "."
            found.setdefault(entry.name, entry)
    return sorted(found.items())


def resolve_model(name_or_path: str | os.PathLike) -> Path:
    """A package folder from a path or a bundled name; ``ValueError`` listing the names otherwise."""
    path = Path(name_or_path)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ValueError(f"{path} is not a model package (no config.json)")
        return path
    bundled = dict(list_models())
    if str(name_or_path) in bundled:
        return bundled[str(name_or_path)]
    names = ", ".join(bundled) or "none installed"
    raise ValueError(f"no model package {str(name_or_path)!r}: not a folder, and not a bundled model ({names})")


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    if path.stat().st_size > _MAX_JSON:
        raise ValueError(f"{path} is larger than {_MAX_JSON} bytes")
    with open(path, encoding="utf-8") as fh:
        value = json.load(fh)
    return value if isinstance(value, dict) else {}


def describe(folder: Path) -> dict[str, Any]:
    """Summary of a package for listings: task, classes or channels, horizon, headline metrics."""
    config, metrics = _read_json(folder / "config.json"), _read_json(folder / "metrics.json")
    arch = config.get("architecture") or {}
    out: dict[str, Any] = {"name": folder.name, "task": config.get("task", "?"), "model": arch.get("name", "?")}
    if config.get("class_names"):
        out["classes"] = list(config["class_names"])
    channels = config.get("input_channels") or (config.get("preprocessing") or {}).get("channels")
    if channels:
        out["channels"] = list(channels)
    for key in ("input_len", "horizon", "quantiles", "track_names"):
        if config.get(key) is not None:
            out[key] = config[key]
    test = metrics.get("test", metrics)
    out["metrics"] = {k: v for k, v in test.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return out


# The figures each task is judged by (README, "Results") lead the listing's four metrics.
HEADLINE_METRICS = {
    "classification": ("mcc", "acc", "auroc"),
    "forecasting": ("mse", "mae"),
    "tagging": ("sensitivity", "precision", "exact_start", "coding_f1"),
}


def _fmt_row(info: dict[str, Any]) -> str:
    what = info.get("classes") or info.get("track_names") or info.get("channels")
    what_text = ",".join(map(str, what))[:40] if what else ""
    if info.get("horizon"):
        what_text = (what_text + " " if what_text else "") + f"in {info.get('input_len')} -> {info['horizon']}"
    metrics_ = info["metrics"]
    first = [k for k in HEADLINE_METRICS.get(info["task"], ()) if k in metrics_]
    shown = [(k, metrics_[k]) for k in first] + sorted((k, v) for k, v in metrics_.items() if k not in first)
    shown = shown[:4]
    metrics = " ".join(f"{k}={v:.4g}" for k, v in shown)
    return f"{info['name']:<28} {info['task']:<15} {info['model']:<16} {what_text:<42} {metrics}"


def main(argv: list[str]) -> int:
    """``seqmamba models``: list the bundled packages."""
    parser = argparse.ArgumentParser(prog="seqmamba models", description="List the bundled model packages.")
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    args = parser.parse_args(argv)
    rows = []
    for _, folder in list_models():
        try:
            rows.append(describe(folder))
        except (OSError, ValueError) as err:
            log.warning("skipping %s: %s", folder, err)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no bundled models in {os.pathsep.join(map(str, model_dirs()))}", file=sys.stderr)
        return 0
    print(f"{'name':<28} {'task':<15} {'model':<16} {'classes / channels':<42} test metrics")
    for info in rows:
        print(_fmt_row(info))
    return 0
