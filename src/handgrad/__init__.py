"""handgrad: neural-network classifiers with hand-derived, machine-verified gradients."""

from . import optim
from .datasets import DataError
from .model import MLP, MLPConfig, gradcheck
from .train import Callback, History, fit

__version__ = "0.1.0"

__all__ = ["MLP", "MLPConfig", "Callback", "DataError", "History", "fit", "gradcheck",
           "optim", "__version__"]
