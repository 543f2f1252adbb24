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

__all__ = ["adam", "sgd_momentum", "bias_relu", "relu_backward", "xent_forward", "xent_backward",
           "csr_to_columns", "columns_times_wt", "columns_grad"]

_OPTS = {"cache": True, "nogil": True, "error_model": "numpy"}
jit = numba.njit(**_OPTS)


# -- Adam / AdamW: m, v and p in one pass --------------------------------------


@jit
def _adam_run(p, g, m, v, b1, c1, b2, c2, scale, eps_hat, wd, shrink, pen):
    for i in range(p.shape[0]):  # from 0: LLVM vectorises (no negative-index checks)
        p_0 = p[i]
        p_i = p_0 * shrink  # AdamW: p (1 − lr λ); Adam: shrink = 1
        g_i = (g[i] + pen * p_0) + wd * p_i  # + c p (R1); Adam: + λ p; AdamW: wd = 0
        m_i = b1 * m[i] + c1 * g_i  # m = β1 m + (1 − β1) g
        v_i = b2 * v[i] + c2 * (g_i * g_i)  # v = β2 v + (1 − β2) g²
        m[i] = m_i
        v[i] = v_i
        p[i] = p_i - scale * (m_i / (np.sqrt(v_i) + eps_hat))  # p − s m / (√v + ε̂)


@jit
def adam(p, g, m, v, b1, c1, b2, c2, scale, eps_hat, wd, shrink, bounds, pens):
    """Adam/AdamW of 1-D arrays; every constant is a scalar of the arrays' dtype.
    Segment s, elements ``bounds[s]:bounds[s + 1]``, adds the L2 penalty's gradient
    ``c p`` (R1) with ``c = pens[s]`` to g (0: none; one segment [0, n) for no penalty)."""
    for s in range(pens.shape[0]):
        a, b = bounds[s], bounds[s + 1]
        _adam_run(p[a:b], g[a:b], m[a:b], v[a:b], b1, c1, b2, c2, scale, eps_hat, wd,
                  shrink, pens[s])


@jit
def _sgd_momentum_run(p, g, buf, lr, mu, damp, wd, nesterov, first, pen):
    for i in range(p.shape[0]):  # from 0: LLVM vectorises (no negative-index checks)
        d = (g[i] + pen * p[i]) + wd * p[i]  # d = (g + c p) + λ p
        b = d if first else mu * buf[i] + damp * d  # b = μ b + (1 − τ) d; first: b = d
        buf[i] = b
        step = d + mu * b if nesterov else b  # Nesterov: d + μ b; heavy ball: b
        p[i] = p[i] - lr * step  # p = p − lr step


@jit
def sgd_momentum(p, g, buf, lr, mu, damp, wd, nesterov, first, bounds, pens):
    """SGD with momentum (heavy-ball or Nesterov) of 1-D arrays in one pass; every
    float constant is a scalar of the arrays' dtype, ``damp`` is ``1 − τ``; segments
    and their L2 penalties ``pens`` as in :func:`adam`."""
    for s in range(pens.shape[0]):
        a, b = bounds[s], bounds[s + 1]
        _sgd_momentum_run(p[a:b], g[a:b], buf[a:b], lr, mu, damp, wd, nesterov, first,
                          pens[s])


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


# -- F1 and B7 of a sparse first-layer input, by column: no dense copy, no transpose --


@jit
def csr_to_columns(indptr, indices, data, n_cols, start, rows, vals):
    """A CSR batch's entries regrouped by column (a counting sort): column j's entries
    are ``rows[start[j]:start[j + 1]]`` with values ``vals[...]``. Returns the position
    in ``indices`` of the first column index outside ``[0, n_cols)`` (a negative index
    included), or -1 when every index is in range."""
    for j in range(n_cols + 1):
        start[j] = 0
    for k in range(indptr[0], indptr[indptr.shape[0] - 1]):
        j = indices[k]
        if j < 0 or j >= n_cols:
            return k
        start[j + 1] += 1
    for j in range(n_cols):
        start[j + 1] += start[j]  # start[j + 1]: entries in columns 0..j
    for n in range(indptr.shape[0] - 1):
        for k in range(indptr[n], indptr[n + 1]):
            j = indices[k]
            p = start[j]
            rows[p] = n
            vals[p] = data[k]
            start[j] = p + 1  # the next free place in column j
    for j in range(n_cols, 0, -1):  # each start[j] moved to the end of its column: undo
        start[j] = start[j - 1]
    start[0] = 0
    return -1


@jit
def columns_times_wt(start, rows, vals, W, out, col):
    """F1's product ``out = X Wᵀ`` (B, H) for a sparse X given by columns (W is (H, D)).

    Column j of X meets column j of W: W[:, j] is read once into ``col`` (H,) and added,
    scaled, into the row of every entry of the column. Successive columns read
    neighbouring W entries, so the H cache lines in use stay in L1."""
    H, D = W.shape
    zero = out.dtype.type(0)
    for n in range(out.shape[0]):
        for i in range(H):
            out[n, i] = zero
    for j in range(D):
        k0 = start[j]
        k1 = start[j + 1]
        if k0 == k1:
            continue  # no row of the batch uses input j
        for i in range(H):
            col[i] = W[i, j]
        for k in range(k0, k1):
            v = vals[k]
            n = rows[k]
            for i in range(H):
                out[n, i] += v * col[i]  # out[n] += X[n, j] W[:, j]


@jit
def columns_grad(start, rows, vals, G, dW, col):
    """B7 for a sparse X given by columns: ``dW = Gᵀ X`` (H, D), column by column
    (``dW[:, j] = Σ_n X[n, j] G[n]``). dW is zeroed in one contiguous pass first, so
    the strided writes are only those of the columns the batch uses."""
    H, D = dW.shape
    zero = dW.dtype.type(0)
    for i in range(H):
        for j in range(D):
            dW[i, j] = zero
    for j in range(D):
        if start[j] == start[j + 1]:
            continue  # no row of the batch uses input j: its gradient column stays 0
        for i in range(H):
            col[i] = zero
        for k in range(start[j], start[j + 1]):
            v = vals[k]
            n = rows[k]
            for i in range(H):
                col[i] += v * G[n, i]
        for i in range(H):
            dW[i, j] = col[i]
