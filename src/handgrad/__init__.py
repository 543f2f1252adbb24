"""handgrad: neural-network classifiers with hand-derived, machine-verified gradients."""

from . import optim
from .datasets import DataError
from .model import MLP, MLPConfig, gradcheck
from .serialization import ModelFileError, load, load_checkpoint, save, save_checkpoint
from .train import Callback, History, StopTraining, Trainer, fit

__version__ = "0.1.0"

__all__ = ["MLP", "MLPConfig", "Callback", "DataError", "History", "ModelFileError",
           "StopTraining", "Trainer", "fit", "gradcheck", "load", "load_checkpoint", "optim",
           "save", "save_checkpoint", "__version__"]
