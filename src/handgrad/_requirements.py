"""Optional packages: find out before a long run, not after it, that one is missing.

The core (NumPy, safetensors for model files, threadpoolctl for BLAS threads) is always
installed. Other features need an extra; :func:`require` checks for their packages
without importing them (``importlib.util.find_spec``), so a command can refuse at once,
naming the package and the ``pip install`` that brings it, rather than fail after
training when it writes its figures.
"""

from __future__ import annotations

import importlib.util

# feature: (module to import, pip extra that installs it, what needs it)
OPTIONAL = {
    "plots": ("matplotlib", "cli", "figures (plots and reports)"),
    "images": ("PIL", "cli", "reading PNG/JPEG images"),
    "onnx": ("onnx", "onnx", "ONNX export"),
    "onnxruntime": ("onnxruntime", "onnx", "running ONNX graphs"),
    "mpi": ("mpi4py", "mpi", "distributed training"),
    "sklearn": ("sklearn", "sklearn", "the scikit-learn estimator"),
    "serve": ("starlette", "serve", "serving models"),
}
_DISTRIBUTIONS = {"PIL": "pillow", "sklearn": "scikit-learn"}


class MissingPackageError(RuntimeError):
    """A feature that was asked for needs a package that is not installed.

    ``features`` names them (keys of :data:`OPTIONAL`); every optional import in handgrad
    fails with this class, so that a caller (the command line: exit code 5) can tell a
    missing package from any other failure.
    """

    def __init__(self, message, features=()):
        super().__init__(message)
        self.features = tuple(features)


class MissingModuleError(MissingPackageError, ModuleNotFoundError):
    """A :class:`MissingPackageError` where Python expects an import to fail (``from
    handgrad import MLPClassifier``): also a ``ModuleNotFoundError``, ``name`` the module."""

    def __init__(self, message, features=(), name=None):
        MissingPackageError.__init__(self, message, features)
        self.name = name


def _installed(module):
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken parent package, or a bad __spec__
        return False


def missing(*features):
    """The features among ``features`` whose package is not installed."""
    unknown = [f for f in features if f not in OPTIONAL]
    if unknown:
        raise ValueError(f"unknown feature {unknown[0]!r}; known: {', '.join(OPTIONAL)}")
    return [f for f in features if not _installed(OPTIONAL[f][0])]


def require(*features):
    """Raise :class:`MissingPackageError` naming every missing package and how to install it.

    Call it before work that would otherwise fail only at its end.
    """
    absent = missing(*features)
    if not absent:
        return
    needs = "; ".join(f"{OPTIONAL[f][2]} needs {_DISTRIBUTIONS.get(OPTIONAL[f][0], OPTIONAL[f][0])}"
                      for f in absent)
    extras = ",".join(dict.fromkeys(OPTIONAL[f][1] for f in absent))
    raise MissingPackageError(f"{needs}: pip install 'handgrad[{extras}]'", absent)
