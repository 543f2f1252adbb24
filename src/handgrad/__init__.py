"""handgrad: neural-network classifiers with hand-derived, machine-verified gradients."""

from . import optim
from .datasets import DataError
from .model import MLP, MLPConfig, gradcheck
from .serialization import ModelFileError, load, load_checkpoint, save, save_checkpoint
from .train import Callback, History, StopTraining, Trainer, fit

__version__ = "0.1.0"

__all__ = ["MLP", "MLPConfig", "Callback", "DataError", "History", "ModelFileError",
           "StopTraining", "Trainer", "fit", "gradcheck", "load", "load_checkpoint", "optim",
           "save", "save_checkpoint", "system_info", "__version__"]


def __getattr__(name):
    # Optional parts load on first use, so the core needs NumPy alone.
    if name == "MLPClassifier":
        from .sklearn import MLPClassifier

        return MLPClassifier
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
