"""handgrad._blas: NumPy's own BLAS called directly, and its plain-NumPy fallbacks."""

import os
import subprocess
import sys

import numpy as np
import pytest

from handgrad import _blas


def test_numpy_wheels_blas_is_found():
    # NumPy's wheels ship OpenBLAS; the fast paths are meant to run wherever they do.
    if os.environ.get("HANDGRAD_NO_BLAS", "") not in ("", "0"):
        pytest.skip("HANDGRAD_NO_BLAS is set: the BLAS paths are turned off on purpose")
    info = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    if info.get("name") != "scipy-openblas":
        pytest.skip(f"NumPy is built against {info.get('name')!r}, not its wheels' OpenBLAS")
    assert _blas.available(np.float32) and _blas.available(np.float64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("a_order", ["C", "F"])
@pytest.mark.parametrize("b_order", ["C", "F"])
@pytest.mark.parametrize("beta", [0.0, 1.0, -0.5])
def test_gemm_matches_numpy_for_every_layout(blas_mode, dtype, a_order, b_order, beta, rng):
    a = np.asarray(rng.normal(size=(7, 5)), dtype=dtype, order=a_order)  # (M, K)
    b = np.asarray(rng.normal(size=(5, 9)), dtype=dtype, order=b_order)  # (K, N)
    c = rng.normal(size=(7, 9)).astype(dtype)  # (M, N)
    expected = beta * c.astype(np.float64) + 0.3 * (a.astype(np.float64) @ b)
    out = _blas.gemm(0.3, a, b, beta, c)
    assert out is c
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(c, expected, rtol=tol, atol=tol)


def test_gemm_accumulates_into_a_view_of_a_larger_buffer(blas_mode, rng):
    """The fused SGD step writes into weight views of the flat parameter buffer."""
    buf = rng.normal(size=30).astype(np.float32)
    before = buf.copy()
    W = buf[4:4 + 12].reshape(3, 4)  # (H, D) view
    G, X = rng.normal(size=(5, 3)).astype(np.float32), rng.normal(size=(5, 4)).astype(np.float32)
    _blas.gemm(-0.1, G.T, X, 1.0, W)  # W ← W − 0.1 Gᵀ X
    np.testing.assert_allclose(W, before[4:16].reshape(3, 4) - 0.1 * (G.T @ X), rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_array_equal(buf[:4], before[:4])  # nothing outside the view
    np.testing.assert_array_equal(buf[16:], before[16:])


def test_gemm_with_an_empty_dimension(blas_mode):
    c = np.ones((3, 0), np.float32)
    _blas.gemm(1.0, np.ones((3, 2), np.float32), np.ones((2, 0), np.float32), 1.0, c)
    c = np.full((2, 2), 5.0, np.float32)  # K = 0: the product is zero, C is only scaled
    _blas.gemm(1.0, np.ones((2, 0), np.float32), np.ones((0, 2), np.float32), 1.0, c)
    np.testing.assert_array_equal(c, 5.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_axpby_and_axpy_match_numpy(blas_mode, dtype, rng):
    x, y = rng.normal(size=1000).astype(dtype), rng.normal(size=1000).astype(dtype)
    want = 0.25 * x.astype(np.float64) - 1.5 * y
    _blas.axpby(0.25, x, -1.5, y, scratch=np.empty_like(x))
    tol = 1e-5 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(y, want, rtol=tol, atol=tol)
    want = y.astype(np.float64) + 3.0 * x
    _blas.axpy(3.0, x, y, scratch=np.empty_like(x))
    np.testing.assert_allclose(y, want, rtol=tol, atol=tol)


def test_axpby_on_a_strided_view_uses_numpy(rng):
    base = rng.normal(size=20)
    y = base[::2]  # not contiguous: the BLAS call is not used, the view still updates
    x = np.ones(10)
    expected = 2.0 * y + 1.0
    _blas.axpby(1.0, x, 2.0, y, scratch=np.empty(10))
    np.testing.assert_allclose(base[::2], expected)


def test_environment_variable_turns_the_blas_paths_off():
    code = "from handgrad import _blas; print(_blas.available())"
    env = dict(os.environ, HANDGRAD_NO_BLAS="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_self_test_rejects_a_wrong_binding():
    """A routine that computes the wrong thing (as a mistaken integer width would) is
    refused, and every function falls back to NumPy."""
    found = _blas._bind(_blas._numpy_library())
    if not found:
        pytest.skip("NumPy's BLAS routines were not found")
    assert _blas._self_test(found)
    broken = dict(found)
    broken[("axpy", "d")] = lambda n, alpha, x, incx, y, incy: None  # does nothing
    assert not _blas._self_test(broken)
