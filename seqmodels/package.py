"""One model package format for everything: a folder with config.json, model.safetensors, metrics.json.

Packages come from users and the internet, so loading trusts nothing: JSON only (size-capped,
finite numbers), safetensors only (never pickle), the class looked up in our registry, every
config field type-checked, the expected tensor shapes worked out on the meta device (no memory)
and compared with the file's header before any weight is read. Everything that is wrong raises
``PackageError`` naming the file and the problem. Saving writes a temporary folder beside the
target and renames it into place, so a crash never leaves a half-written package.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

# Importing the model modules registers their classes.
from . import baselines, classifier, forecaster, tagger  # noqa: F401
from .registry import MODELS, PackagedModel

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
CONFIG, WEIGHTS, METRICS = "config.json", "model.safetensors", "metrics.json"
PACKAGE_FILES = (CONFIG, WEIGHTS, METRICS)
RESERVED_KEYS = ("format_version", "task", "architecture")
MAX_JSON_BYTES = 4 << 20
MAX_PARAMETERS = 4_000_000_000
_FLOAT_DTYPES = {"F16", "BF16", "F32", "F64"}


class PackageError(ValueError):
    """A model package is missing, corrupt, truncated, mismatched or refused; the message says which."""


# ---------------------------------------------------------------------------------------- save
def save_package(model: PackagedModel, directory, metrics: dict | None = None,
                 extra_config: dict | None = None) -> Path:
    """Write ``model`` as a package folder at ``directory`` (replacing a previous package there).

    extra_config: more top-level config.json entries as plain JSON values, e.g. ``preprocessing``
    (scaler mean/scale), ``training_data``, ``licence``; it may not override format_version, task
    or architecture. metrics: plain JSON numbers and strings, written to metrics.json.
    """
    name = type(model).__name__
    if not isinstance(model, PackagedModel) or MODELS.get(name) is not type(model):
        raise TypeError(f"save_package needs a registered seqmodels model, got {type(model).__qualname__}")
    config: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "task": model.task,
        "architecture": {"name": name, "config": model.config.to_dict()},
        **model.package_fields(),
        "preprocessing": {},
        "training_data": None,
        "licence": None,
    }
    if extra_config is not None:
        if not isinstance(extra_config, dict) or not all(isinstance(k, str) for k in extra_config):
            raise ValueError("extra_config must be a dict with string keys")
        clash = sorted(set(extra_config) & set(RESERVED_KEYS))
        if clash:
            raise ValueError(f"extra_config may not set {', '.join(clash)} (written from the model)")
        config.update(extra_config)
    config_text = _dump("config", config)
    metrics_text = _dump("metrics", {} if metrics is None else metrics)
    tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}

    target = Path(directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        _check_replaceable(target)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        save_file(tensors, str(staging / WEIGHTS), metadata={"format": "pt"})
        for file, text in ((CONFIG, config_text), (METRICS, metrics_text)):
            with open(staging / file, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
        _open_modes(staging)
        if target.exists():
            # rename() cannot replace a non-empty folder: move the old one aside first.
            retired = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
            os.replace(target, retired / "package")
            os.replace(staging, target)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("saved %s package to %s", name, target)
    return target


def _open_modes(folder: Path) -> None:
    """Give the staged package the modes ``mkdir`` and ``open`` would have (mkdtemp makes the folder
    0700, safetensors the weights 0600), so a shared install's users can read it."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(folder, 0o777 & ~mask)
    for file in folder.iterdir():
        os.chmod(file, 0o666 & ~mask)


def _dump(what: str, value: Any) -> str:
    try:
        return json.dumps(value, indent=2, allow_nan=False, sort_keys=False) + "\n"
    except (TypeError, ValueError) as err:
        raise ValueError(f"{what} must hold plain JSON values (finite numbers, strings, lists, dicts): {err}") \
            from None


def _check_replaceable(target: Path) -> None:
    """Only replace an earlier package (or an empty folder), never a folder of someone's files."""
    if target.is_symlink() or not target.is_dir():
        raise ValueError(f"{target} exists and is not a package folder; refusing to replace it")
    others = sorted(p.name for p in target.iterdir() if p.name not in PACKAGE_FILES)
    if others:
        raise ValueError(f"{target} holds files that are not part of a package ({', '.join(others[:5])}); "
                         "refusing to replace it")


# ---------------------------------------------------------------------------------------- load
def load_package(directory) -> tuple[PackagedModel, dict, dict]:
    """Load a package folder -> (model in eval mode, config.json dict, metrics.json dict)."""
    root = Path(directory)
    if not root.is_dir():
        raise PackageError(f"{root}: no such package folder")
    config = _read_json(_regular_file(root, CONFIG, required=True), CONFIG)
    cls, model_config = _model_class_and_config(config, root)

    expected = _expected_tensors(cls, model_config, root)
    tensors = _read_weights(_regular_file(root, WEIGHTS, required=True), expected)
    model = cls.from_config(model_config)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as err:  # shapes were checked; this is a last line of defence
        raise PackageError(f"{root / WEIGHTS}: does not fit {cls.__name__}: {err}") from None

    metrics_path = _regular_file(root, METRICS, required=False)
    metrics = {} if metrics_path is None else _read_json(metrics_path, METRICS)
    if metrics_path is None:
        logger.warning("%s: package has no %s", root, METRICS)
    return model.eval(), config, metrics


def _regular_file(root: Path, name: str, required: bool) -> Path | None:
    path = root / name
    if path.is_symlink():
        raise PackageError(f"{path}: is a symbolic link; a package holds regular files only")
    if not path.exists():
        if required:
            raise PackageError(f"{root}: missing {name} (not a model package, or an incomplete one)")
        return None
    if not path.is_file():
        raise PackageError(f"{path}: is not a regular file")
    return path


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text} is out of range")
    return value


def _reject_constant(text: str):
    raise ValueError(f"{text} is not allowed (only finite numbers)")


def _read_json(path: Path, name: str) -> dict:
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise PackageError(f"{path}: {size} bytes is larger than the {MAX_JSON_BYTES}-byte limit for {name}")
    try:
        value = json.loads(path.read_bytes().decode("utf-8"), parse_float=_finite_float,
                           parse_constant=_reject_constant)
    except UnicodeDecodeError as err:
        raise PackageError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except json.JSONDecodeError as err:
        raise PackageError(f"{path}: not valid JSON ({err.msg} at line {err.lineno}, column {err.colno})") from None
    except (ValueError, RecursionError) as err:
        raise PackageError(f"{path}: not acceptable JSON ({err})") from None
    if not isinstance(value, dict):
        raise PackageError(f"{path}: expected a JSON object at the top level, got {type(value).__name__}")
    return value


def _model_class_and_config(config: dict, root: Path):
    where = root / CONFIG
    version = config.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise PackageError(f"{where}: missing or invalid format_version (expected an integer)")
    if version > FORMAT_VERSION:
        raise PackageError(f"{where}: format_version {version} is newer than this seqmamba reads "
                           f"({FORMAT_VERSION}); upgrade seqmamba")
    if version < 1:
        raise PackageError(f"{where}: invalid format_version {version}")
    arch = config.get("architecture")
    if not isinstance(arch, dict) or not isinstance(arch.get("name"), str) or "config" not in arch:
        raise PackageError(f"{where}: 'architecture' must be an object with 'name' and 'config'")
    cls = MODELS.get(arch["name"])
    if cls is None:
        raise PackageError(f"{where}: unknown architecture {arch['name'][:100]!r}; known: {', '.join(sorted(MODELS))}")
    if config.get("task") != cls.task:
        raise PackageError(f"{where}: task {config.get('task')!r} does not match {cls.__name__} ({cls.task!r})")
    try:
        model_config = cls.config_class.from_dict(arch["config"], where="architecture.config")
    except ValueError as err:
        raise PackageError(f"{where}: {err}") from None
    return cls, model_config


def _expected_tensors(cls, model_config, root: Path) -> dict[str, tuple[tuple[int, ...], bool]]:
    """Parameter names -> (shape, is float), from a model built on the meta device (no memory)."""
    try:
        with torch.device("meta"):
            skeleton = cls.from_config(model_config)
    except ValueError as err:
        raise PackageError(f"{root / CONFIG}: {err}") from None
    expected = {k: (tuple(v.shape), v.is_floating_point()) for k, v in skeleton.state_dict().items()}
    total = sum(math.prod(shape) for shape, _ in expected.values())
    if total > MAX_PARAMETERS:
        raise PackageError(f"{root / CONFIG}: the architecture has {total:,} parameters, more than the "
                           f"{MAX_PARAMETERS:,} this loader accepts")
    return expected


def _read_weights(path: Path, expected: dict) -> dict[str, torch.Tensor]:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            keys = set(fh.keys())
            missing, unexpected = sorted(set(expected) - keys), sorted(keys - set(expected))
            if missing or unexpected:
                parts = ([f"missing {', '.join(missing[:8])}"] if missing else []) + \
                        ([f"unexpected {', '.join(unexpected[:8])}"] if unexpected else [])
                raise PackageError(f"{path}: tensors do not match the architecture: {'; '.join(parts)}")
            for key in sorted(keys):
                piece = fh.get_slice(key)
                shape, is_float = expected[key]
                if tuple(piece.get_shape()) != shape:
                    raise PackageError(f"{path}: tensor {key} has shape {tuple(piece.get_shape())}, "
                                       f"the architecture needs {shape}")
                if is_float and piece.get_dtype() not in _FLOAT_DTYPES:
                    raise PackageError(f"{path}: tensor {key} has dtype {piece.get_dtype()}, expected a float type")
            tensors = {key: fh.get_tensor(key) for key in keys}
    except PackageError:
        raise
    except Exception as err:  # safetensors raises its own error types for corrupt or truncated files
        raise PackageError(f"{path}: not a readable safetensors file (corrupt or truncated?): {err}") from None
    for key, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise PackageError(f"{path}: tensor {key} holds NaN or infinite values")
    return tensors
