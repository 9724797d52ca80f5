"""A network as plain data (class path + constructor arguments) and back.

Lightning checkpoints must load with ``torch.load(weights_only=True)``, so a task never stores its
network object in its hyperparameters: it stores this spec, built from the network's ``config``
dataclass (the seqmodels contract), and ``load_from_checkpoint`` / export rebuild the network from it.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import sys
from typing import Any

from torch import nn

# Only these packages may be imported to rebuild a network named in a checkpoint; anything else must
# already be imported by the caller (a checkpoint must never make us import arbitrary code).
TRUSTED_PREFIXES = ("seqmodels.",)


def _plain(value: Any) -> Any:
    """JSON round trip: tuples become lists, anything that is not plain data fails here, not at save."""
    try:
        return json.loads(json.dumps(value))
    except TypeError as err:
        raise TypeError(f"network config is not plain data (JSON-serialisable): {err}") from None


def network_config(network: nn.Module) -> dict[str, Any]:
    """The network's ``config`` dataclass (or mapping) as a plain dict."""
    cfg = getattr(network, "config", None)
    if cfg is None:
        raise TypeError(
            f"{type(network).__qualname__} has no `config` attribute; tasks need a network whose "
            "constructor arguments are recorded in `config` (a dataclass), as seqmodels' models have"
        )
    if dataclasses.is_dataclass(cfg):
        return _plain(dataclasses.asdict(cfg))
    return _plain(dict(cfg))


def network_spec(network: nn.Module) -> dict[str, Any]:
    """``{"class_path": ..., "init_args": ...}`` such that :func:`build_network` rebuilds ``network``
    (same architecture, fresh weights). Handles both constructor styles: ``Cls(config)`` taking the
    dataclass, and ``Cls(**fields)``."""
    cls = type(network)
    fields = network_config(network)
    params = [p for p in inspect.signature(cls.__init__).parameters.values() if p.name != "self"]
    named = [p for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    cfg = network.config
    if len(named) == 1 and dataclasses.is_dataclass(cfg) and named[0].name not in fields:
        init_args = {named[0].name: fields}  # Cls(config: SomeConfig)
    else:
        accepts_any = any(p.kind == p.VAR_KEYWORD for p in params)
        init_args = {k: v for k, v in fields.items() if accepts_any or k in {p.name for p in named}}
    return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": init_args}


def resolve_class(class_path: str) -> type[nn.Module]:
    """Import ``class_path`` if it is trusted (seqmodels, or a module already imported)."""
    if not isinstance(class_path, str) or "." not in class_path:
        raise ValueError(f"network class_path must be 'module.Class', got {class_path!r}")
    module_name, _, name = class_path.rpartition(".")
    if module_name not in sys.modules and not class_path.startswith(TRUSTED_PREFIXES):
        raise ValueError(
            f"refusing to import {module_name!r} named by a checkpoint: only {TRUSTED_PREFIXES} "
            "or modules already imported are allowed"
        )
    cls = getattr(importlib.import_module(module_name), name, None)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ValueError(f"{class_path!r} is not an nn.Module class")
    return cls


def build_network(spec: dict[str, Any]) -> nn.Module:
    """Instantiate a network from :func:`network_spec`'s output (nested dataclass arguments are
    converted by jsonargparse, the same way the command line builds them)."""
    from jsonargparse import ArgumentParser

    if not isinstance(spec, dict) or "class_path" not in spec:
        raise ValueError(f"a network spec is {{'class_path': ..., 'init_args': {{...}}}}, got {spec!r}")
    resolve_class(spec["class_path"])  # the trust check, before jsonargparse imports anything
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(nn.Module, "network", fail_untyped=False)
    cfg = parser.parse_object({"network": {"class_path": spec["class_path"], "init_args": spec.get("init_args", {})}})
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes  # renamed in 4.49
    return instantiate(cfg).network
