"""The numba kernels behind :mod:`handgrad._accel` (imported only where numba is).

Module-level functions, so numba caches their machine code on disk. Each kernel is
one pass over its arrays, written once as an element function (inlined) and looped
twice: ``*_serial`` on one core, ``*_parallel`` split between the cores (``prange``).
Loops run over ``range(n)`` from 0, so LLVM vectorises them; ``error_model="numpy"``
gives IEEE division (no Python ZeroDivisionError test per element). No ``fastmath``:
the operations and their rounding are the NumPy path's.
"""

import numba
import numpy as np

__all__ = ["adam_serial", "adam_parallel", "bias_relu_serial", "bias_relu_parallel",
           "relu_backward_serial", "relu_backward_parallel", "xent_forward", "xent_backward"]

_OPTS = {"cache": True, "nogil": True, "error_model": "numpy"}
jit = numba.njit(**_OPTS)
pjit = numba.njit(parallel=True, **_OPTS)
inline = numba.njit(inline="always", **_OPTS)


# -- Adam / AdamW: m, v and p in one pass --------------------------------------


@inline
def _adam_element(p, g, m, v, b1, c1, b2, c2, scale, eps_hat, wd, shrink):
    p = p * shrink  # AdamW: p (1 − lr λ); Adam: shrink = 1
    g = g + wd * p  # Adam: g + λ p; AdamW: wd = 0
    m = b1 * m + c1 * g  # m = β1 m + (1 − β1) g
    v = b2 * v + c2 * (g * g)  # v = β2 v + (1 − β2) g²
    return p - scale * (m / (np.sqrt(v) + eps_hat)), m, v  # p − s m / (√v + ε̂)


@jit
def adam_serial(p, g, m, v, b1, c1, b2, c2, scale, eps_hat, wd, shrink):
    """Adam/AdamW of 1-D arrays; every constant is a scalar of the arrays' dtype."""
    for i in range(p.shape[0]):
        p[i], m[i], v[i] = _adam_element(p[i], g[i], m[i], v[i], b1, c1, b2, c2, scale,
                                         eps_hat, wd, shrink)


@pjit
def adam_parallel(p, g, m, v, b1, c1, b2, c2, scale, eps_hat, wd, shrink):
    for i in numba.prange(p.shape[0]):
        p[i], m[i], v[i] = _adam_element(p[i], g[i], m[i], v[i], b1, c1, b2, c2, scale,
                                         eps_hat, wd, shrink)


# -- F1's bias and F2's ReLU; B6 ------------------------------------------------


@inline
def _bias_relu_row(Q, b, h, n):
    zero = Q.dtype.type(0)
    for j in range(Q.shape[1]):
        q = Q[n, j] + b[j]  # F1: X Wᵀ + b
        Q[n, j] = q
        h[n, j] = q if q > zero else zero  # F2: max(0, Q)


@jit
def bias_relu_serial(Q, b, h):
    """``Q ← Q + b`` and ``h = max(0, Q)`` in one pass over (B, H)."""
    for n in range(Q.shape[0]):
        _bias_relu_row(Q, b, h, n)


@pjit
def bias_relu_parallel(Q, b, h):
    for n in numba.prange(Q.shape[0]):
        _bias_relu_row(Q, b, h, n)


@inline
def _relu_backward_row(G, Q, n):
    zero = G.dtype.type(0)
    for j in range(G.shape[1]):
        G[n, j] = G[n, j] if Q[n, j] > zero else zero  # B6: ∂L/∂h ⊙ 1[Q > 0]


@jit
def relu_backward_serial(G, Q):
    """B6 in place: ``G ← G ⊙ 1[Q > 0]`` (0 at Q = 0, as PyTorch and scikit-learn)."""
    for n in range(G.shape[0]):
        _relu_backward_row(G, Q, n)


@pjit
def relu_backward_parallel(G, Q):
    for n in numba.prange(G.shape[0]):
        _relu_backward_row(G, Q, n)


# -- F4–F5 and B2 for integer labels (small (B, M) arrays: one call, not ten) ----


@jit
def xent_forward(O, target, wv, ws, logP, P):
    """F4–F5 through log-sum-exp, row by row; returns ``Σ_n w_n L_n`` with
    ``w_n = wv[n]`` (per-example weights), or ``ws`` for every row when wv is empty."""
    B, M = O.shape
    total = 0.0
    for n in range(B):
        w_n = wv[n] if wv.shape[0] else ws
        top = O[n, 0]
        for i in range(1, M):
            if O[n, i] > top:
                top = O[n, i]
        s = O.dtype.type(0)
        for i in range(M):
            z = O[n, i] - top  # ≤ 0: exp cannot overflow
            logP[n, i] = z
            e = np.exp(z)
            P[n, i] = e
            s += e
        log_s = np.log(s)  # s ≥ 1
        for i in range(M):
            P[n, i] /= s  # F4
            logP[n, i] -= log_s
        total += w_n * logP[n, target[n]]  # F5: L_n = −log P[n, y_n]
    return -total


@jit
def xent_backward(P, target, wv, ws, out):
    """B2: ``out = w ⊙ (P − Y)`` with one-hot Y from integer labels."""
    B, M = P.shape
    for n in range(B):
        w_n = wv[n] if wv.shape[0] else ws
        for i in range(M):
            out[n, i] = P[n, i] * w_n
        out[n, target[n]] = (P[n, target[n]] - 1) * w_n
