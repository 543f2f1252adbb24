"""handgrad: neural-network classifiers with hand-derived, machine-verified gradients."""

from . import optim, serialization
from .callbacks import (
    BackupAndRestore,
    Callback,
    LearningRateBackoff,
    ModelCheckpoint,
    StopTraining,
    TerminateOnNaN,
)
from ._requirements import MissingPackageError
from .config import ConfigError, TrainConfig
from .datasets import DataError
from .fitting import fit
from .model import MLP, GradcheckResult, MLPConfig, gradcheck
from .serialization import Checkpoint, ModelFileError, load_checkpoint, save_checkpoint
from .tracing import Trace, trace
from .train import DivergenceError, History, Trainer, TrainingInterrupted

__version__ = "0.1.0"

__all__ = ["MLP", "MLPConfig", "BackupAndRestore", "Callback", "Checkpoint", "ConfigError",
           "DataError", "DivergenceError", "GradcheckResult", "History", "LearningRateBackoff",
           "MissingPackageError", "ModelCheckpoint", "ModelFileError", "StopTraining",
           "TerminateOnNaN", "Trace", "TrainConfig", "Trainer", "TrainingInterrupted", "fit",
           "gradcheck", "load", "load_checkpoint", "optim", "save", "save_checkpoint",
           "system_info", "trace", "__version__"]


ESTIMATORS = ("handgrad.MLPClassifier", "handgrad.MLPRegressor")


def save(model, path):
    """Write a model file (safetensors and JSON, never pickle): of an :class:`MLP`, or of
    a fitted ``MLPClassifier``/``MLPRegressor`` (its network, parameters, classes, fitted
    attributes and its solver's state), which :func:`load` gives back as the estimator."""
    optimizer = None
    if not isinstance(model, MLP) and hasattr(model, "to_mlp"):
        optimizer = model._saved_optimizer() if hasattr(model, "_saved_optimizer") else None
        model = model.to_mlp()
    return serialization.save(model, path, optimizer=optimizer)


def load(path):
    """Read a model file: the :class:`MLP`, or the fitted estimator :func:`save` was given
    (which needs scikit-learn; :func:`handgrad.serialization.load` reads the network alone)."""
    model, optimizer_state = serialization.load_with_optimizer(path)
    kind = model.training.get("estimator")
    if kind not in ESTIMATORS:
        return model
    try:
        from . import sklearn
    except ImportError as exc:
        raise MissingPackageError(f"{path} holds a fitted {kind}, which needs scikit-learn: "
                                  f"pip install 'handgrad[sklearn]' "
                                  f"(handgrad.serialization.load reads its network alone)",
                                  ["sklearn"]) from exc
    return sklearn.from_model(model, path, optimizer_state)


def __getattr__(name):
    # Optional parts load on first use: the core needs NumPy, safetensors and threadpoolctl.
    if name in ("MLPClassifier", "MLPRegressor"):
        from . import sklearn

        return getattr(sklearn, name)
    if name in ("export_onnx", "to_onnx_bytes"):
        from . import onnx

        return getattr(onnx, name)
    if name == "system_info":
        from .sysinfo import system_info

        return system_info
    if name == "to_torch":
        from .torch_bridge import to_torch

        return to_torch
    raise AttributeError(f"module 'handgrad' has no attribute {name!r}")
