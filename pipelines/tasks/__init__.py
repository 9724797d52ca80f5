"""LightningModules that train and evaluate a seqmodels network: they own losses, metrics and
optimisers; the network is handed to them (see docs/ARCHITECTURE.md)."""

from .base import SeqTask, describe_datamodule
from .classification import ClassificationTask
from .forecast import ForecastTask, pinball_loss
from .network_spec import build_network, network_spec
from .tagging import TaggingTask

__all__ = [
    "SeqTask",
    "ClassificationTask",
    "TaggingTask",
    "ForecastTask",
    "pinball_loss",
    "describe_datamodule",
    "network_spec",
    "build_network",
]
