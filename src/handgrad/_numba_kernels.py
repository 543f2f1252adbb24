"""The numba kernels behind :mod:`handgrad._accel` (imported only where numba is).

Module-level functions, so numba caches their machine code on disk. Each kernel is
one pass over its arrays on the calling thread. Loops run over ``range(n)`` from 0, so
LLVM vectorises them; ``error_model="numpy"`` gives IEEE division (no Python
ZeroDivisionError test per element). No ``fastmath``: the operations and their
rounding are the NumPy path's.

No kernel starts threads. numba's ``parallel=True`` versions of these kernels, tried
in training on the 2-core benchmark machine, made steps several times slower: a second
thread pool beside OpenBLAS's, each call waiting for cores that OpenBLAS's threads held.
"""

import numba
import numpy as np

__all__ = ["adam", "sgd_momentum", "bias_relu", "relu_backward", "xent_forward", "xent_backward"]

_OPTS = {"cache": True, "nogil": True, "error_model": "numpy"}
jit = numba.njit(**_OPTS)


# -- Adam / AdamW: m, v and p in one pass --------------------------------------


@jit
def adam(p, g, m, v, b1, c1, b2, c2, scale, eps_hat, wd, shrink):
    """Adam/AdamW of 1-D arrays; every constant is a scalar of the arrays' dtype."""
    for i in range(p.shape[0]):
        p_i = p[i] * shrink  # AdamW: p (1 − lr λ); Adam: shrink = 1
        g_i = g[i] + wd * p_i  # Adam: g + λ p; AdamW: wd = 0
        m_i = b1 * m[i] + c1 * g_i  # m = β1 m + (1 − β1) g
        v_i = b2 * v[i] + c2 * (g_i * g_i)  # v = β2 v + (1 − β2) g²
        m[i] = m_i
        v[i] = v_i
        p[i] = p_i - scale * (m_i / (np.sqrt(v_i) + eps_hat))  # p − s m / (√v + ε̂)


@jit
def sgd_momentum(p, g, buf, lr, mu, damp, wd, nesterov, first):
    """SGD with momentum (heavy-ball or Nesterov) of 1-D arrays in one pass; every
    float constant is a scalar of the arrays' dtype, ``damp`` is ``1 − τ``."""
    for i in range(p.shape[0]):
        d = g[i] + wd * p[i]  # d = g + λ p
        b = d if first else mu * buf[i] + damp * d  # b = μ b + (1 − τ) d; first: b = d
        buf[i] = b
        step = d + mu * b if nesterov else b  # Nesterov: d + μ b; heavy ball: b
        p[i] = p[i] - lr * step  # p = p − lr step


# -- F1's bias and F2's ReLU; B6 ------------------------------------------------


@jit
def bias_relu(Q, b, h):
    """``Q ← Q + b`` and ``h = max(0, Q)`` in one pass over (B, H)."""
    zero = Q.dtype.type(0)
    for n in range(Q.shape[0]):
        for j in range(Q.shape[1]):
            q = Q[n, j] + b[j]  # F1: X Wᵀ + b
            Q[n, j] = q
            h[n, j] = q if q > zero else zero  # F2: max(0, Q)


@jit
def relu_backward(G, Q):
    """B6 in place: ``G ← G ⊙ 1[Q > 0]`` (0 at Q = 0, as PyTorch and scikit-learn)."""
    zero = G.dtype.type(0)
    for n in range(G.shape[0]):
        for j in range(G.shape[1]):
            G[n, j] = G[n, j] if Q[n, j] > zero else zero  # B6: ∂L/∂h ⊙ 1[Q > 0]


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
