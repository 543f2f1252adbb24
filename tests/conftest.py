import os
from pathlib import Path

import numpy as np
import pytest


def pytest_configure(config):
    """Make a relative $HANDGRAD_DATA (the README's ``../shared/datasets``) absolute once,
    so tests that change folder, and the subprocesses they start, still find the data."""
    root = os.environ.get("HANDGRAD_DATA")
    if root:
        os.environ["HANDGRAD_DATA"] = str(Path(root).resolve())


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


@pytest.fixture
def torch():
    """PyTorch, the test oracle (pip install torch==2.13.0). A test that needs it skips,
    saying so, where it is absent; the others in its file still run."""
    return pytest.importorskip("torch", reason="PyTorch, the test oracle, is not installed")


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


@pytest.fixture
def broken_sparse():
    """``broken_sparse(fmt, how)``: a 6 × 5 CSR/CSC matrix whose structure SciPy's
    constructor lets through but which does not fit its shape: an index out of range
    (``how`` = "negative index", "large negative index", "index too large") or an index
    pointer that runs past the stored entries ("indptr past the entries") or goes
    backwards ("indptr going backwards")."""
    sparse = pytest.importorskip("scipy.sparse")

    def make(fmt, how):
        X = sparse.csr_matrix(np.arange(1.0, 31.0).reshape(6, 5)).asformat(fmt)
        X.indices, X.indptr = X.indices.copy(), X.indptr.copy()
        if how == "negative index":
            X.indices[3] = -1
        elif how == "large negative index":
            X.indices[3] = -4
        elif how == "index too large":
            X.indices[3] = 99
        elif how == "indptr past the entries":
            X.indptr[-1] = X.indices.shape[0] + 100
        elif how == "indptr going backwards":
            X.indptr[2] = X.indptr[1] - 1
        else:
            raise AssertionError(f"unknown damage {how!r}")
        return X

    return make
