"""handgrad: neural-network classifiers with hand-derived, machine-verified gradients."""

from . import optim
from .callbacks import (
    BackupAndRestore,
    Callback,
    LearningRateBackoff,
    ModelCheckpoint,
    StopTraining,
    TerminateOnNaN,
)
from .config import ConfigError, TrainConfig
from .datasets import DataError
from .fitting import fit
from .model import MLP, MLPConfig, gradcheck
from .serialization import Checkpoint, ModelFileError, load, load_checkpoint, save, save_checkpoint
from .train import DivergenceError, History, Trainer, TrainingInterrupted

__version__ = "0.1.0"

__all__ = ["MLP", "MLPConfig", "BackupAndRestore", "Callback", "Checkpoint", "ConfigError",
           "DataError", "DivergenceError", "History", "LearningRateBackoff", "ModelCheckpoint",
           "ModelFileError", "StopTraining", "TerminateOnNaN", "TrainConfig", "Trainer",
           "TrainingInterrupted", "fit", "gradcheck", "load", "load_checkpoint", "optim",
           "save", "save_checkpoint", "__version__"]


def __getattr__(name):
    # Optional parts load on first use, so the core needs NumPy alone.
    if name in ("MLPClassifier", "MLPRegressor"):
        from . import sklearn

        return getattr(sklearn, name)
    if name in ("export_onnx", "to_onnx_bytes"):
        from . import onnx

        return getattr(onnx, name)
    if name == "to_torch":
        from .torch_bridge import to_torch

        return to_torch
    raise AttributeError(f"module 'handgrad' has no attribute {name!r}")
