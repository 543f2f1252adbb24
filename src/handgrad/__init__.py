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


def save(model, path, *, overwrite=False):
    """Write a model file (safetensors and JSON, never pickle): of an :class:`MLP`, or of
    a fitted ``MLPClassifier``/``MLPRegressor`` (its network, parameters, classes, fitted
    attributes and its solver's state), which :func:`load` gives back as the estimator.

    A previous handgrad model file at ``path`` is replaced; any other file there (a data
    set, an image, a checkpoint) is refused with a ``FileExistsError`` unless
    ``overwrite=True``.
    """
    optimizer = None
    if not isinstance(model, MLP) and hasattr(model, "to_mlp"):
        optimizer = model._saved_optimizer() if hasattr(model, "_saved_optimizer") else None
        model = model.to_mlp()
    if not isinstance(model, MLP):
        raise TypeError(_not_savable(model))
    return serialization.save(model, path, optimizer=optimizer, overwrite=overwrite)


def _not_savable(obj):
    """Why :func:`save` refuses ``obj``, and what it takes instead."""
    kind = type(obj)
    name = kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__name__}"
    message = (f"handgrad.save takes a handgrad.MLP or a fitted {' or '.join(ESTIMATORS)}, "
               f"got {name}")
    if hasattr(obj, "steps") and hasattr(obj, "named_steps"):  # a scikit-learn Pipeline
        message += ("; a model file holds one network: save the pipeline's handgrad "
                    "estimator (pipeline[-1]) and rebuild the steps before it in code")
    return message


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
        try:
            from . import sklearn
        except ModuleNotFoundError as exc:
            top = (exc.name or "").split(".")[0]
            if top not in ("sklearn", "scipy"):
                raise
            from ._requirements import MissingModuleError

            raise MissingModuleError(f"handgrad.{name} needs scikit-learn and SciPy ({top} "
                                     f"is not installed): pip install 'handgrad[sklearn]'",
                                     ["sklearn"], name=top) from exc
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
