"""Two BLAS operations NumPy cannot express, called in the BLAS NumPy itself links.

``np.matmul`` always overwrites its output (``C = A B``), and NumPy has no scaled
update of one array by another, so a training step written in NumPy alone makes
extra passes over memory:

- ``W ← W − lr ∂L/∂W`` writes the weight gradient out and reads it back; the BLAS
  ``gemm`` with β = 1 accumulates ``α A B`` straight into ``W`` (:func:`gemm`).
- Adam's moving averages ``m ← β1 m + (1 − β1) g`` take three NumPy passes; the
  BLAS ``axpby`` takes one (:func:`axpby`, and :func:`axpy` for ``y ← y + αx``).

The routines are looked up with ctypes in the OpenBLAS that NumPy's wheels ship
and load anyway: no extra dependency, and no second BLAS whose thread pool would
compete with NumPy's for the cores (SciPy bundles its own). Only symbols whose
integer width is known are used, and a self-test against NumPy must pass before
:func:`available` says yes. Where they cannot be found (NumPy built against
another BLAS), every function here falls back to plain NumPy with the same
values up to rounding, and callers that only win with BLAS ask :func:`available`.
"""

from __future__ import annotations

import ctypes
import os
import threading

import numpy as np

# (symbol pattern, C type of the BLAS integer): ILP64 OpenBLAS as in NumPy's own
# wheels ("scipy_cblas_sgemm64_"), ILP64 with the plain suffix, LP64 scipy-openblas.
_CANDIDATES = (("scipy_cblas_{}64_", ctypes.c_int64), ("cblas_{}64_", ctypes.c_int64),
               ("scipy_cblas_{}", ctypes.c_int32))
_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112
# Set HANDGRAD_NO_BLAS=1 to force the plain-NumPy paths (for comparison).
_DISABLE_ENV = "HANDGRAD_NO_BLAS"

_routines = None  # {(name, dtype char): ctypes function}, filled on first use
_LOCK = threading.Lock()


def _numpy_library():
    try:
        from numpy._core import _multiarray_umath as module  # NumPy ≥ 2
    except ImportError:  # pragma: no cover - NumPy 1.x
        from numpy.core import _multiarray_umath as module
    return ctypes.CDLL(module.__file__)


def _bind(lib):
    """The routines of ``lib`` (its BLAS dependency included), or {} if absent."""
    for pattern, blasint in _CANDIDATES:
        found = {}
        for prefix, dt in (("s", np.float32), ("d", np.float64)):
            try:
                gemm = getattr(lib, pattern.format(prefix + "gemm"))
                axpby = getattr(lib, pattern.format(prefix + "axpby"))
                axpy = getattr(lib, pattern.format(prefix + "axpy"))
            except AttributeError:
                break
            real = ctypes.c_float if dt == np.float32 else ctypes.c_double
            ptr, enum = ctypes.c_void_p, ctypes.c_int
            # cblas_?gemm(order, transA, transB, M, N, K, α, A, lda, B, ldb, β, C, ldc)
            gemm.argtypes = [enum, enum, enum, blasint, blasint, blasint, real, ptr, blasint,
                             ptr, blasint, real, ptr, blasint]
            # cblas_?axpby(n, α, x, incx, β, y, incy); cblas_?axpy(n, α, x, incx, y, incy)
            axpby.argtypes = [blasint, real, ptr, blasint, real, ptr, blasint]
            axpy.argtypes = [blasint, real, ptr, blasint, ptr, blasint]
            for f in (gemm, axpby, axpy):
                f.restype = None
            code = np.dtype(dt).char
            found.update({("gemm", code): gemm, ("axpby", code): axpby, ("axpy", code): axpy})
        else:
            return found
    return {}


def _self_test(found):
    """Every routine of ``found`` once on small arrays, called directly, against NumPy.

    A wrong binding (such as a mistaken integer width) shows up here as wrong numbers,
    before anything else uses it.
    """
    rng = np.random.default_rng(0)
    for dt in (np.float32, np.float64):
        code, tol = np.dtype(dt).char, (1e-5 if dt == np.float32 else 1e-12)
        a = rng.standard_normal((5, 3)).astype(dt)  # (M, K)
        b = rng.standard_normal((7, 3)).astype(dt)  # (N, K): used transposed
        c = rng.standard_normal((5, 7)).astype(dt)  # (M, N)
        want_c = 2 * c - 0.5 * (a @ b.T)
        found[("gemm", code)](_ROW_MAJOR, _NO_TRANS, _TRANS, 5, 7, 3, -0.5, a.ctypes.data, 3,
                              b.ctypes.data, 3, 2.0, c.ctypes.data, 7)
        x, y = rng.standard_normal(9).astype(dt), rng.standard_normal(9).astype(dt)
        want_y = 0.25 * x + 3 * y
        found[("axpby", code)](9, 0.25, x.ctypes.data, 1, 3.0, y.ctypes.data, 1)
        axpby_ok = np.allclose(y, want_y, rtol=tol, atol=tol)
        want_y = y - 2 * x
        found[("axpy", code)](9, -2.0, x.ctypes.data, 1, y.ctypes.data, 1)
        axpy_ok = np.allclose(y, want_y, rtol=tol, atol=tol)
        if not (np.allclose(c, want_c, rtol=tol, atol=tol) and axpby_ok and axpy_ok):
            return False
    return True


def _load():
    """The bound routines ({} when unavailable), found and tested once per process."""
    global _routines
    if _routines is None:
        with _LOCK:
            if _routines is None:
                found = {}
                if os.environ.get(_DISABLE_ENV, "") in ("", "0"):
                    try:
                        found = _bind(_numpy_library())
                    except OSError:
                        found = {}
                _routines = found if found and _self_test(found) else {}
    return _routines


def available(dtype=np.float32):
    """True when the BLAS routines for ``dtype`` were found and passed the self-test."""
    return ("gemm", np.dtype(dtype).char) in _load()


def _address(a):
    """The address of ``a``'s first element."""
    return a.ctypes.data


def _operand(a):
    """``(transpose flag, leading dimension)`` of a 2-D row- or column-major array."""
    if a.flags.c_contiguous:
        return _NO_TRANS, max(a.shape[1], 1)
    if a.flags.f_contiguous:  # a transposed view of a row-major array
        return _TRANS, max(a.shape[0], 1)
    raise ValueError("BLAS operands must be C- or F-contiguous")


def gemm(alpha, a, b, beta, c):
    """``c ← α a b + β c`` in place; ``c`` C-contiguous, ``a`` and ``b`` either order.

    With β = 1 this accumulates into ``c``, which ``np.matmul`` cannot do. The
    NumPy fallback allocates a temporary for ``a b``.
    """
    (M, K), (K2, N) = a.shape, b.shape
    assert K == K2 and c.shape == (M, N) and c.flags.c_contiguous, "gemm: shapes or layout"
    assert a.dtype == b.dtype == c.dtype, "gemm: mixed dtypes"
    f = _load().get(("gemm", c.dtype.char))
    if f is None:
        if beta == 0:
            np.multiply(a @ b, alpha, out=c)  # β = 0: c's old values are never read
        else:
            c *= beta
            c += alpha * (a @ b)
        return c
    if M and N:
        ta, lda = _operand(a)
        tb, ldb = _operand(b)
        f(_ROW_MAJOR, ta, tb, M, N, K, alpha, _address(a), lda, _address(b), ldb, beta,
          _address(c), max(N, 1))
    return c


def axpby(alpha, x, beta, y, scratch=None):
    """``y ← α x + β y`` in place for contiguous 1-D arrays of one dtype.

    The NumPy fallback needs ``scratch`` (shaped like ``x``; may be ``x`` itself
    when ``x`` may be overwritten).
    """
    assert x.shape == y.shape and x.dtype == y.dtype, "axpby: shapes or dtypes"
    f = _load().get(("axpby", y.dtype.char))
    if f is None or not (x.flags.c_contiguous and y.flags.c_contiguous):
        y *= beta
        np.multiply(x, alpha, out=scratch)
        y += scratch
        return y
    if y.size:
        f(y.size, alpha, _address(x), 1, beta, _address(y), 1)
    return y


def axpy(alpha, x, y, scratch=None):
    """``y ← y + α x`` in place (the fallback, like :func:`axpby`'s, needs ``scratch``)."""
    assert x.shape == y.shape and x.dtype == y.dtype, "axpy: shapes or dtypes"
    f = _load().get(("axpy", y.dtype.char))
    if f is None or not (x.flags.c_contiguous and y.flags.c_contiguous):
        np.multiply(x, alpha, out=scratch)
        y += scratch
        return y
    if y.size:
        f(y.size, alpha, _address(x), 1, _address(y), 1)
    return y
