"""seqmamba models: the Mamba block, DNA and time-series backbones, classifier and forecaster."""

import kernels as _kernels

if not getattr(_kernels, "SEQMAMBA_KERNELS", False):  # another distribution named "kernels" shadows ours
    raise ImportError(
        f"'import kernels' found {getattr(_kernels, '__file__', _kernels)!r}, not seqmamba's kernels package; "
        "uninstall the other 'kernels' distribution or run from the seqmamba source tree"
    )

from . import vocab  # noqa: E402
from .backbone import BackboneConfig, MambaStack, RMSNorm  # noqa: E402
from .baselines import CNNClassifier, CNNConfig, DLinear, DLinearConfig  # noqa: E402
from .bidirectional import BiMamba, WindowedOutput, windowed_forward  # noqa: E402
from .classifier import ClassifierConfig, MambaClassifier  # noqa: E402
from .dna import DNABackbone, StrandFeatures  # noqa: E402
from .forecaster import ForecasterConfig, ForecastOutput, MambaForecaster  # noqa: E402
from .mamba import InferenceParams, Mamba  # noqa: E402
from .registry import MODELS, PackagedModel  # noqa: E402
from .tagger import MambaTagger, TaggerConfig  # noqa: E402

_PACKAGE_NAMES = ("PackageError", "save_package", "load_package")


def __getattr__(name):
    # Model packages need safetensors; imported on first use so the models alone (e.g. on a GPU
    # machine running the benchmarks) import without it.
    if name in _PACKAGE_NAMES:
        from . import package

        return getattr(package, name)
    raise AttributeError(f"module 'seqmodels' has no attribute {name!r}")


__all__ = [
    "vocab",
    "Mamba",
    "InferenceParams",
    "RMSNorm",
    "BackboneConfig",
    "MambaStack",
    "BiMamba",
    "DNABackbone",
    "StrandFeatures",
    "windowed_forward",
    "WindowedOutput",
    "MambaClassifier",
    "ClassifierConfig",
    "MambaTagger",
    "TaggerConfig",
    "MambaForecaster",
    "ForecasterConfig",
    "ForecastOutput",
    "CNNClassifier",
    "CNNConfig",
    "DLinear",
    "DLinearConfig",
    "MODELS",
    "PackagedModel",
    "PackageError",
    "save_package",
    "load_package",
]
