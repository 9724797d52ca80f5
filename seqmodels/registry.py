"""Model classes by name, and the save/load methods every packaged model shares.

Packages name their class; loading looks the name up here and nowhere else (never an import by
name), so a package can only build the classes this registry lists.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import nn

from .config import ModelConfig

MODELS: dict[str, type[PackagedModel]] = {}


def register(cls: type[PackagedModel]) -> type[PackagedModel]:
    """Class decorator: make ``cls`` loadable from packages under its class name."""
    if cls.__name__ in MODELS and MODELS[cls.__name__] is not cls:
        raise ValueError(f"a different model class is already registered as {cls.__name__!r}")
    MODELS[cls.__name__] = cls
    return cls


class PackagedModel(nn.Module):
    """Base of every task model: ``config`` dataclass, ``task`` name, package fields, save/load."""

    task: ClassVar[str]
    config_class: ClassVar[type[ModelConfig]]
    config: ModelConfig

    def package_fields(self) -> dict[str, Any]:
        """Task fields for config.json (class names, vocabulary or channels, horizon, quantiles)."""
        return {}

    def save_pretrained(self, directory, metrics: dict | None = None, extra_config: dict | None = None) -> None:
        """Write this model as a package folder (see ``seqmodels.package.save_package``)."""
        from .package import save_package

        save_package(self, directory, metrics=metrics, extra_config=extra_config)

    @classmethod
    def from_pretrained(cls, directory):
        """Load a package folder; the package must hold this class (or, on the base, any class)."""
        from .package import PackageError, load_package

        model, _, _ = load_package(directory)
        if cls is not PackagedModel and not isinstance(model, cls):
            raise PackageError(f"{directory}: package holds a {type(model).__name__}, not a {cls.__name__}")
        return model
