import os
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture(scope="session")
def mnist_dir():
    """The real MNIST IDX files, found through $HANDGRAD_DATA (set by .ci/run)."""
    root = os.environ.get("HANDGRAD_DATA")
    if not root:
        pytest.skip("HANDGRAD_DATA is not set: no real MNIST to test against")
    path = Path(root) / "mnist"
    if not (path / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"real MNIST not found under {path}")
    return path


@pytest.fixture(params=["blas", "numpy"])
def blas_mode(request, monkeypatch):
    """Run a test with NumPy's BLAS routines (handgrad._blas) and with its plain-NumPy
    fallbacks, as on a NumPy built against a BLAS the module cannot find."""
    from handgrad import _blas

    if request.param == "numpy":
        monkeypatch.setattr(_blas, "_routines", {})
    elif not _blas.available():
        pytest.skip("NumPy's BLAS routines were not found: only the NumPy fallback runs")
    return request.param


@pytest.fixture(params=["accel", "numpy"])
def accel_mode(request):
    """Run a test with the compiled kernels of handgrad._accel (numba) and with the plain
    NumPy reference path they replace."""
    from handgrad import _accel

    if request.param == "accel" and not _accel.installed():
        pytest.skip("numba is not installed (pip install 'handgrad[accel]'): "
                    "only the NumPy path runs")
    old = _accel.use(request.param == "accel")
    yield request.param
    _accel.use(old)
