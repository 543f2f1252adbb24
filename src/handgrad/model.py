"""The network of the specification and its hand-derived gradients.

Every equation number (F1–F5, B1–B7) refers to ``docs/derivation.md``.

Shape key for this module:
    B  batch size (rows of X)
    D  width of a layer's input (the data's features for the first layer)
    H  width of a layer's output (a hidden layer's units)
    M  number of outputs (classes for softmax, labels for logistic, targets for regression)

The output layer is one of four output-function/loss pairs (:data:`OUTPUTS`), each a
canonical link, so every one of them has ``∂L/∂O = P − Y`` (B2 and its analogues
B2ℓ, B2s, B2p in docs/derivation.md) and B3–B7 are the same for all.

Weights are stored (out, in) as in the specification and in ``torch.nn.Linear``.
Each ``*_backward`` sits directly under its ``*_forward``; the forward writes into
buffers the backward reads (the layer input, Q, h, P), so nothing is recomputed.

All parameters of a model live in one contiguous buffer (``model.param_buffer``);
``model.params`` holds named views into it, and the gradients likewise
(``model.grad_buffer`` / ``model.grads``). An optimizer step therefore touches a
single array, and a training step allocates no large arrays: the activations live
in a :class:`Workspace` that is built once per batch size and reused.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from numbers import Integral

import numpy as np

from . import _accel, _blas

ACTIVATIONS = ("relu", "tanh", "logistic", "identity")
DTYPES = ("float32", "float64")
# Output function -> the loss it is paired with (its canonical link: ∂L/∂O = P − Y).
OUTPUTS = {
    "softmax": "cross_entropy",  # F4–F5, B1–B2: classes (M ≥ 2)
    "logistic": "binary_cross_entropy",  # F4ℓ–F5ℓ, B2ℓ: binary and multilabel
    "identity": "squared_error",  # F4s–F5s, B2s: regression, ½ (O − Y)²
    "exp": "poisson",  # F4p–F5p, B2p: counts and rates, half Poisson deviance
}

# Rows evaluated at once by predict_proba: bounds memory to PREDICT_CHUNK × H.
PREDICT_CHUNK = 4096
# A fused update (MLP.accumulate_grads) adds the weight-gradient GEMM of a weight
# matrix with at least this many entries straight into its destination; the biases and
# smaller matrices get their gradient formed and added by one BLAS pass per contiguous
# run of them, since for them a BLAS call's fixed cost exceeds the pass fusing saves.
FUSE_MIN_ENTRIES = 1 << 14
# Soft targets must sum to 1 (B2 uses Σ_i y_i = 1) up to this tolerance.
TARGET_SUM_TOL = 1e-4


# --------------------------------------------------------------------------- #
# Layer functions: forward, then its backward directly beneath.
# --------------------------------------------------------------------------- #


def linear_forward(X, W, b, out, columns=None):
    """F1 / F3: ``out = X Wᵀ + b`` for a batch of rows.

    ``X`` may be a SciPy sparse matrix (the first layer's input, CSR): F1 is then a
    sparse-times-dense product, O(nnz · H), and X is never made dense. ``columns``,
    the accelerator's regrouping of that X (:func:`handgrad._accel.sparse_columns`),
    computes the same product without SciPy's transposed copy of W.
    """
    if columns is not None:
        _accel.sparse_times_wt(columns, W, out)  # (B, H) = (B, D) sparse @ (D, H)   F1
    elif is_sparse(X):
        np.copyto(out, X @ W.T)  # (B, H) = (B, D) sparse @ (D, H)   F1
    else:
        np.matmul(X, W.T, out=out)  # (B, H) = (B, D) @ (D, H); W.T is a view, not a copy
    out += b  # (B, H) + (H,)
    return out


def is_sparse(X):
    """True for a SciPy sparse matrix or array (recognised without importing SciPy)."""
    return hasattr(X, "tocsr") and hasattr(X, "nnz")


def check_sparse_structure(X):
    """Refuse a CSR/CSC ``X`` whose index arrays do not fit its shape: SciPy checks them
    only on request (``X.check_format(full_check=True)``), and both its products and the
    compiled F1/B7 would read and write outside the arrays (a crash, or wrong numbers).
    One pass over the indices (their minimum and maximum); other formats pass as they
    are (SciPy's conversion to CSR is theirs)."""
    fmt = getattr(X, "format", None)
    if fmt not in ("csr", "csc"):
        return
    n_major, n_minor = X.shape if fmt == "csr" else X.shape[::-1]
    line, index = ("row", "column") if fmt == "csr" else ("column", "row")
    indptr, indices = np.asarray(X.indptr), np.asarray(X.indices)
    nnz = min(indices.shape[0], np.asarray(X.data).shape[0])
    fix = "(scipy's X.check_format(full_check=True) finds such entries)"
    if indptr.ndim != 1 or indptr.shape[0] != n_major + 1:
        raise ValueError(f"sparse X ({fmt}, shape {X.shape}) has an indptr of "
                         f"{indptr.shape[0]} entries; its {n_major} {line}s need "
                         f"{n_major + 1} {fix}")
    if n_major:
        steps = np.diff(indptr)  # (n_major,) entries per row/column
        if indptr[0] < 0 or indptr[-1] > nnz or (steps.size and steps.min() < 0):
            where = (f"decreases after {line} {int(np.argmax(steps < 0))}"
                     if steps.size and steps.min() < 0
                     else f"runs from {int(indptr[0])} to {int(indptr[-1])}")
            raise ValueError(f"sparse X ({fmt}, shape {X.shape}) has an indptr that does not "
                             f"fit its {nnz} stored entries: it {where} {fix}")
        used = indices[indptr[0]:indptr[-1]]
        if used.size and (used.min() < 0 or used.max() >= n_minor):
            k = int(np.argmax((used < 0) | (used >= n_minor)))
            raise ValueError(f"sparse X ({fmt}, shape {X.shape}) has {index} index "
                             f"{int(used[k])} (stored entry {int(indptr[0]) + k}), outside "
                             f"[0, {n_minor}): its indices do not fit its shape {fix}")


def linear_backward(G, X, W, dW, db, dX=None, ones=None, columns=None):
    """Gradients of a linear layer given ``G = ∂L/∂out`` (B, H).

    B4 (and B7 one layer down): ``∂L/∂W = Gᵀ X``; B3 (and B7): ``∂L/∂b = Σ_n G[n]``;
    B5: ``∂L/∂X = G W``, only needed below the first layer (the gradient with respect
    to the data itself is never used, so ``dX`` is None there). ``dW`` and ``db``
    None skip B3/B4, so the backward pass can first carry ``∂L/∂Q`` down through
    every layer and then form the weight gradients, or accumulate ``∂L/∂W`` straight
    into an update (:func:`linear_backward_accumulate`) and form only ``db``. B3's
    sum over the batch is a BLAS matrix-vector product with a vector of ones, faster
    than NumPy's reduction over the batch axis; a training loop passes ``ones`` (B,)
    to reuse one. ``columns``: as in :func:`linear_forward`, for a sparse X.
    """
    if dW is not None:
        if columns is not None:
            _accel.sparse_weight_grad(columns, G, dW)  # (H, D) = (H, B) @ (B, D) sparse   B7
        elif is_sparse(X):  # the first layer's sparse input: B7 as a sparse product, O(nnz · H)
            np.copyto(dW, (X.T @ G).T)  # (H, D) = ((D, B) sparse @ (B, H))ᵀ   B7
        else:
            np.matmul(G.T, X, out=dW)  # (H, D) = (H, B) @ (B, D)   B4 / B7
    if db is not None:
        if ones is None:
            ones = np.ones(G.shape[0], G.dtype)  # (B,)
        np.matmul(ones, G, out=db)  # (H,) = (B,) @ (B, H)      B3 / B7
    if dX is not None:
        if G.shape[1] == 1:  # one output unit: G W is an outer product, every entry a
            # single product, so broadcasting gives matmul's values at a fraction of its cost
            np.multiply(G, W, out=dX)  # (B, D) = (B, 1) ⊙ (1, D)  B5
        else:
            np.matmul(G, W, out=dX)  # (B, D) = (B, H) @ (H, D)  B5
    return dX


def linear_backward_accumulate(G, X, dW, alpha, beta):
    """B4 accumulated: ``dW ← β dW + α GᵀX``.

    ``np.matmul`` can only overwrite its output; the BLAS GEMM's β lets the weight
    gradient's product land straight in another buffer: with ``dW`` the weights
    themselves and ``α = −lr, β = 1`` this is a plain-SGD step of W, and ∂L/∂W is
    never written out and read back by a separate update pass.
    """
    _blas.gemm(alpha, G.T, X, beta, dW)  # (H, D) = β (H, D) + α (H, B) @ (B, D)   B4 / B7


def activation_forward(name, Q, out):
    """F2 (ReLU, the specification) and the other activations scikit-learn offers."""
    if name == "relu":
        np.maximum(Q, 0, out=out)  # (B, H)  F2: h = max(0, Q)
    elif name == "tanh":
        np.tanh(Q, out=out)  # (B, H)
    elif name == "logistic":
        # σ(Q) = (1 + tanh(Q/2)) / 2: the same function as 1/(1+e^{-Q}), but it
        # never evaluates an exponential, so it cannot overflow for large |Q|.
        np.multiply(Q, 0.5, out=out)  # (B, H)
        np.tanh(out, out=out)
        out += 1.0
        out *= 0.5
    elif name == "identity":
        np.copyto(out, Q)  # (B, H)
    else:  # names are validated when the model is built
        raise AssertionError(f"unknown activation {name!r}")
    return out


def hidden_forward(name, X, W, b, Q, h, columns=None):
    """F1 and F2 of a hidden layer: ``Q = X Wᵀ + b`` (B, H) and ``h = act(Q)``; returns h.

    With the accelerator (:mod:`handgrad._accel`), ReLU's layer adds ``b`` and takes
    ``max(0, ·)`` in one compiled pass over Q instead of two NumPy passes; ``columns``
    as in :func:`linear_forward`.
    """
    if name == "relu" and (columns is not None or _accel.takes(X, Q, b, h)):
        if columns is not None:
            _accel.sparse_times_wt(columns, W, Q)  # (B, H) = (B, D) sparse @ (D, H)  F1
        else:
            np.matmul(X, W.T, out=Q)  # (B, H) = (B, D) @ (D, H)  F1's product
        return _accel.bias_relu_forward(Q, b, h)  # (B, H)  F1's + b, F2
    linear_forward(X, W, b, Q, columns)  # (B, H)  F1 (a sparse X: sparse product)
    return activation_forward(name, Q, h)  # (B, H)  F2


def hidden_backward(name, G, Q, h, scratch):
    """B6 of a hidden layer: ``G = ∂L/∂h`` becomes ``∂L/∂Q`` in place; returns G.

    :func:`activation_backward` (the reference); with the accelerator, ReLU's B6 is
    one compiled pass that needs no mask array (``scratch`` is then left as it was).
    """
    if name == "relu" and _accel.takes(G, Q):
        return _accel.relu_backward(G, Q)  # (B, H)  B6: ∂L/∂h ⊙ 1[Q > 0]
    return activation_backward(name, G, Q, h, scratch)  # (B, H)  B6


def activation_backward(name, G, Q, h, scratch):
    """Turn ``G = ∂L/∂h`` into ``∂L/∂Q`` in place (B6 for ReLU).

    ``scratch`` is a (B, H) buffer: bool for ReLU's mask, float otherwise.
    """
    if name == "relu":
        # B6: ∂h_j/∂Q_j = a_j = 1[Q_j > 0] (the convention of PyTorch and scikit-learn
        # at Q_j = 0), so ∂L/∂Q = ∂L/∂h ⊙ a.
        np.greater(Q, 0, out=scratch)  # (B, H) bool mask a
        np.multiply(G, scratch, out=G)  # (B, H)
    elif name == "tanh":
        # tanh'(Q) = 1 − h²
        np.multiply(h, h, out=scratch)  # (B, H)
        np.subtract(1.0, scratch, out=scratch)
        G *= scratch
    elif name == "logistic":
        # σ'(Q) = h (1 − h)
        np.subtract(1.0, h, out=scratch)  # (B, H)
        scratch *= h
        G *= scratch
    elif name == "identity":
        pass  # derivative 1
    else:
        raise AssertionError(f"unknown activation {name!r}")
    return G


def dropout_forward(x, keep, rng, mask, out):
    """Inverted dropout: ``out = x ⊙ m``, ``m_j = 1[u_j < keep] / keep``, ``u ~ U[0, 1)``.

    Dividing by ``keep`` at training time makes the expected output equal ``x``, so
    prediction uses the network unchanged. ``mask`` (B, H) keeps ``m`` for the backward.
    """
    rng.random(out=mask, dtype=mask.dtype)  # (B, H)  u
    mask += keep  # u + keep ≥ 1 exactly when u ≥ 1 − keep: probability keep
    np.floor(mask, out=mask)  # 1 with probability keep, else 0
    mask *= 1.0 / keep  # m
    np.multiply(x, mask, out=out)  # (B, H)
    return out


def dropout_backward(G, mask):
    """``∂L/∂x = ∂L/∂out ⊙ m`` in place: out = x ⊙ m is linear in x with the mask fixed."""
    G *= mask  # (B, H)
    return G


def _is_array(w):
    """Per-example weights (B,) rather than one scalar weight for the batch."""
    return isinstance(w, np.ndarray) and w.ndim > 0


def softmax_cross_entropy_forward(O, target, w, logP, P, row):
    """F4–F5: ``P = softmax(O)`` and the weighted loss ``Σ_n w_n L_n``.

    ``target`` is either integer labels (B,) or class probabilities (B, M); ``w`` is
    the per-example weight (B,) already normalised to sum to 1, or a scalar.
    Softmax goes through log-sum-exp: ``log P = O − max − log Σ exp(O − max)``, so
    only exponentials of non-positive numbers are taken and nothing overflows.
    """
    # ufunc reductions called directly: np.max / np.sum add a Python layer per call
    np.maximum.reduce(O, axis=1, keepdims=True, out=row)  # (B, 1)
    np.subtract(O, row, out=logP)  # (B, M)  O − max ≤ 0
    np.exp(logP, out=P)  # (B, M)  in (0, 1]
    np.add.reduce(P, axis=1, keepdims=True, out=row)  # (B, 1)  ≥ 1
    P /= row  # (B, M)  F4
    np.log(row, out=row)  # (B, 1)
    logP -= row  # (B, M)  log P, finite for finite O
    if target.ndim == 1:
        # F5 with one-hot y: L_n = −log P[n, y_n]
        picked = logP[np.arange(len(target)), target]  # (B,)
        return -_weighted_sum(picked, w)
    # F5 with soft targets: L_n = −Σ_i Y_ni log P_ni
    per_row = np.einsum("bm,bm->b", target, logP)  # (B,)
    return -_weighted_sum(per_row, w)


def softmax_cross_entropy_backward(P, target, w, out):
    """B2, fused softmax + cross-entropy: ``∂L/∂O = w ⊙ (P − Y)``.

    Valid because the targets of each row sum to 1: B1 and the chain rule give
    ``Σ_i −(y_i/P_i) P_i (δ_ij − P_j) = P_j Σ_i y_i − y_j = P_j − y_j``. Fusing them
    never forms the (M, M) Jacobian of B1 nor divides by a P that may underflow. (The
    softmax is the canonical link of the categorical likelihood: with Σ y = 1,
    ``L = log Σ_k e^{O_k} − y·O``, whose gradient is ``softmax(O) − y``.)
    """
    np.copyto(out, P)  # (B, M)
    if target.ndim == 1:
        out[np.arange(len(target)), target] -= 1.0  # P − Y with one-hot Y
    else:
        out -= target  # (B, M)
    return _row_weighted(out, w)  # (B, M)  diag(w) (P − Y)


def _row_weighted(out, w):
    """``out ← diag(w) out``: each row times its example's weight (or one scalar)."""
    if _is_array(w):
        out *= w[:, None]  # (B, M)
    else:
        out *= w
    return out


def _weighted_sum(per_row, w):
    """``Σ_n w_n L_n`` for per-example losses (B,) and weights (B,) or a scalar."""
    return float(np.dot(per_row, w)) if _is_array(w) else float(per_row.sum()) * w


def logistic_binary_cross_entropy_forward(O, target, w, logP, P, row):
    """F4ℓ–F5ℓ: ``P = σ(O)`` per output and ``Σ_n w_n L_n`` with
    ``L_n = −Σ_k [Y_nk log P_nk + (1 − Y_nk) log(1 − P_nk)]``.

    Binary classification (M = 1, scikit-learn's single logistic output) and
    multilabel (M labels, each its own Bernoulli). ``target`` is (B, M) in [0, 1].
    With ``softplus(O) = log(1 + e^O)``, ``log P = −softplus(−O)`` and
    ``log(1 − P) = −softplus(O)``, so ``L_n = Σ_k softplus(O_k) − Y_k O_k`` (F5ℓ):
    no log of a P that rounds to 0 or 1, and softplus as
    ``max(O, 0) + log1p(e^{−|O|})`` exponentiates only non-positive numbers.
    ``logP`` (B, M) receives ``log1p(e^{−|O|})``; ``row`` (B, 1) is scratch.
    """
    np.maximum(O, 0, out=P)  # (B, M)  max(O, 0)
    np.add.reduce(P, axis=1, keepdims=True, out=row)  # (B, 1)  Σ_k max(O_k, 0)
    logistic_output(O, P, logP)  # (B, M)  F4ℓ: P = σ(O); logP = log1p(e^{−|O|})
    # F5ℓ: L_n = Σ_k softplus(O_nk) − Σ_k Y_nk O_nk, softplus = max(O, 0) + log1p(e^{−|O|})
    per_row = (row[:, 0] + np.add.reduce(logP, axis=1)
               - np.einsum("bm,bm->b", target, O))  # (B,)
    return _weighted_sum(per_row, w)


def logistic_output(O, P, t):
    """F4ℓ: ``P = σ(O) = exp(min(O, 0) − log1p(e^{−|O|}))``; ``t`` (B, M) receives
    ``log1p(e^{−|O|})``.

    ``log σ(O) = −softplus(−O) = min(O, 0) − log1p(e^{−|O|})`` exponentiates only
    non-positive numbers and subtracts nothing that cancels: P is accurate to the
    last bits for either sign of O (a large negative O gives ``P ≈ e^O``, tiny but not
    0 until e^O underflows; a large positive one ``1 − P ≈ e^{−O}``, kept in σ(−O)).
    """
    np.abs(O, out=t)  # (B, M)  |O|
    np.negative(t, out=t)  # −|O| ≤ 0
    np.exp(t, out=t)  # e^{−|O|} in (0, 1]
    np.log1p(t, out=t)  # log(1 + e^{−|O|})
    np.minimum(O, 0, out=P)  # (B, M)
    P -= t  # log σ(O) ≤ 0
    np.exp(P, out=P)  # (B, M)  P = σ(O)
    return P


def logistic_binary_cross_entropy_backward(P, target, w, out):
    """B2ℓ: ``∂L/∂O = w ⊙ (P − Y)``.

    Per output, ``L = softplus(O) − Y O`` (F5ℓ) and ``softplus′(O) = σ(O) = P``, so
    ``∂L/∂O = P − Y``: the logistic function is the canonical link of the Bernoulli
    likelihood. Written the long way, ``∂L/∂P = −Y/P + (1 − Y)/(1 − P)`` and
    ``∂P/∂O = P (1 − P)`` multiply to ``−Y (1 − P) + (1 − Y) P = P − Y``; fused, no
    division by a P that may round to 0 or 1.
    """
    np.subtract(P, target, out=out)  # (B, M)  P − Y
    return _row_weighted(out, w)  # (B, M)  diag(w) (P − Y)


def identity_squared_error_forward(O, target, w, logP, P, row):
    """F4s–F5s: ``P = O`` and ``Σ_n w_n L_n`` with ``L_n = ½ Σ_k (P_nk − Y_nk)²``.

    scikit-learn's squared error for ``MLPRegressor``: half the squared error, its
    mean over the examples (``w_n = 1/B``, or the normalised sample weights), summed
    over the M outputs (scikit-learn's gradient is this sum's; see
    docs/derivation.md). ``logP`` (B, M) receives the residual ``P − Y``.
    """
    np.copyto(P, O)  # (B, M)  F4s: identity output
    np.subtract(P, target, out=logP)  # (B, M)  P − Y
    per_row = 0.5 * np.einsum("bm,bm->b", logP, logP)  # (B,)  F5s
    return _weighted_sum(per_row, w)


def identity_squared_error_backward(P, target, w, out):
    """B2s: ``∂L/∂O = w ⊙ (P − Y)``.

    ``L = ½ (O − Y)²`` with ``P = O``: ``∂L/∂O = O − Y = P − Y``. The identity is the
    canonical link of the Gaussian likelihood, and the ½ is what makes the factor 1.
    """
    np.subtract(P, target, out=out)  # (B, M)  P − Y
    return _row_weighted(out, w)  # (B, M)  diag(w) (P − Y)


def exp_poisson_forward(O, target, w, logP, P, row):
    """F4p–F5p: ``P = e^O`` (a positive rate) and ``Σ_n w_n L_n`` with the half
    Poisson deviance ``L_n = Σ_k [P_nk − Y_nk O_nk + Y_nk log Y_nk − Y_nk]``.

    That is ``Σ_k Y log(Y/P) − Y + P`` (scikit-learn's ``poisson_loss``), with
    ``0 log 0 = 0``; the ``Y log Y − Y`` part does not depend on the weights and only
    makes a perfect fit score 0. ``target`` is (B, M), non-negative. ``logP``
    (B, M) receives ``Y log Y − Y``.
    """
    np.exp(O, out=P)  # (B, M)  F4p: P = e^O (an overflow to inf is caught as divergence)
    logP.fill(0.0)
    np.log(target, out=logP, where=target > 0)  # (B, M)  log Y where Y > 0, else 0
    logP *= target  # Y log Y, 0 where Y = 0
    logP -= target  # Y log Y − Y
    per_row = (np.add.reduce(P, axis=1) - np.einsum("bm,bm->b", target, O)
               + np.add.reduce(logP, axis=1))  # (B,)  F5p
    return _weighted_sum(per_row, w)


def exp_poisson_backward(P, target, w, out):
    """B2p: ``∂L/∂O = w ⊙ (P − Y)``.

    Per output ``L = e^O − Y O + const`` (F5p), so ``∂L/∂O = e^O − Y = P − Y``: the
    log is the canonical link of the Poisson likelihood (its natural parameter is
    ``O = log P``). The long way, ``∂L/∂P = 1 − Y/P`` times ``∂P/∂O = P`` gives the same.
    """
    np.subtract(P, target, out=out)  # (B, M)  P − Y
    return _row_weighted(out, w)  # (B, M)  diag(w) (P − Y)


# Each output's (forward, backward) pair, called alike by the model.
OUTPUT_LAYERS = {
    "softmax": (softmax_cross_entropy_forward, softmax_cross_entropy_backward),
    "logistic": (logistic_binary_cross_entropy_forward, logistic_binary_cross_entropy_backward),
    "identity": (identity_squared_error_forward, identity_squared_error_backward),
    "exp": (exp_poisson_forward, exp_poisson_backward),
}


# --------------------------------------------------------------------------- #
# The model
# --------------------------------------------------------------------------- #


@dataclass
class Dropout:
    """Training-time dropout rates: of the inputs, and of every hidden layer's units.

    ``rng`` draws the masks; the trainer gives each batch its own, seeded from the
    run's seed, epoch and batch, so runs (and resumed runs) are reproducible.
    """

    input_rate: float = 0.0
    hidden_rate: float = 0.5
    rng: object = None

    def __post_init__(self):
        for name in ("input_rate", "hidden_rate"):
            rate = getattr(self, name)
            if not (isinstance(rate, (int, float)) and 0 <= rate < 1):
                raise ValueError(f"dropout {name} must lie in [0, 1), got {rate!r}")

    @property
    def active(self):
        return self.input_rate > 0 or self.hidden_rate > 0


@dataclass(frozen=True)
class MLPConfig:
    """Everything needed to rebuild an :class:`MLP` (saved with its weights)."""

    n_inputs: int
    hidden: tuple = (256,)
    n_classes: int = 10  # M: the output layer's width (classes, labels or targets)
    activation: str = "relu"
    dtype: str = "float32"
    output: str = "softmax"  # the output function, paired with its loss (OUTPUTS)

    def __post_init__(self):
        _check_positive_int("n_inputs", self.n_inputs)
        hidden = (self.hidden,) if isinstance(self.hidden, Integral) else self.hidden
        try:
            hidden = tuple(hidden)
        except TypeError:
            raise ValueError(
                f"hidden must be an int or a tuple of ints, got {self.hidden!r}"
            ) from None
        for i, h in enumerate(hidden):
            _check_positive_int(f"hidden[{i}]", h)
        object.__setattr__(self, "hidden", tuple(int(h) for h in hidden))
        object.__setattr__(self, "n_inputs", int(self.n_inputs))
        if self.output not in OUTPUTS:
            raise ValueError(f"unknown output {self.output!r}; choose one of "
                             f"{', '.join(OUTPUTS)}")
        _check_positive_int("n_classes", self.n_classes)
        if self.output == "softmax" and int(self.n_classes) < 2:
            raise ValueError(f"n_classes must be at least 2 for a softmax output, got "
                             f"{self.n_classes} (one binary output is output='logistic')")
        object.__setattr__(self, "n_classes", int(self.n_classes))
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown activation {self.activation!r}; choose one of {', '.join(ACTIVATIONS)}"
            )
        dtype = np.dtype(self.dtype).name if _is_dtype_like(self.dtype) else self.dtype
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype!r}")
        object.__setattr__(self, "dtype", dtype)

    @property
    def layer_sizes(self):
        return (self.n_inputs, *self.hidden, self.n_classes)

    @property
    def loss(self):
        """The loss paired with the output function (``OUTPUTS``)."""
        return OUTPUTS[self.output]

    @property
    def classifies(self):
        """True for the classification outputs (softmax, logistic)."""
        return self.output in ("softmax", "logistic")

    def to_dict(self):
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_dict(cls, d):
        return cls(
            n_inputs=d["n_inputs"],
            hidden=tuple(d["hidden"]),
            n_classes=d["n_classes"],
            activation=d["activation"],
            dtype=d["dtype"],
            output=d.get("output", "softmax"),  # files written before outputs existed
        )


def _is_dtype_like(x):
    try:
        np.dtype(x)
    except TypeError:
        return False
    return True


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, Integral) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


@dataclass
class Workspace:
    """Activation and gradient buffers of one batch size, reused step after step.

    Layer ℓ (1-based as in the equations) owns ``Q[ℓ-1]`` (pre-activation, F1/F3),
    ``h[ℓ-1]`` (its activation, F2; the output layer has none), ``G[ℓ-1]``
    (∂L/∂Q for that layer) and ``scratch[ℓ-1]`` (ReLU mask or derivative).
    """

    batch_size: int
    Q: list = field(default_factory=list)
    h: list = field(default_factory=list)
    G: list = field(default_factory=list)
    scratch: list = field(default_factory=list)
    P: np.ndarray = None
    logP: np.ndarray = None
    row: np.ndarray = None
    ones: np.ndarray = None  # (B,) of 1: the batch sums of B3 as a matrix-vector product
    inputs: list = field(default_factory=list)  # what each layer received (after dropout)
    mask: list = field(default_factory=list)  # dropout masks: [0] inputs, [l] hidden layer l
    dropped: list = field(default_factory=list)  # dropout outputs, same indexing
    weight_norm2: list = None  # ‖W_l‖² per layer, measured by MLP.l2_penalty
    columns: object = None  # a sparse input regrouped by column (handgrad._accel), or None

    def dropout_buffers(self, config):
        if not self.mask:
            dt = np.dtype(config.dtype)
            for width in config.layer_sizes[:-1]:
                self.mask.append(np.empty((self.batch_size, width), dt))  # (B, H)
                self.dropped.append(np.empty((self.batch_size, width), dt))  # (B, H)
        return self.mask, self.dropped

    @classmethod
    def build(cls, config, batch_size):
        dt = np.dtype(config.dtype)
        sizes = config.layer_sizes
        ws = cls(batch_size)
        for i, width in enumerate(sizes[1:]):
            hidden_layer = i < len(sizes) - 2
            if hidden_layer:
                ws.Q.append(np.empty((batch_size, width), dt))  # (B, H)
                ws.G.append(np.empty((batch_size, width), dt))  # (B, H)
                ws.h.append(np.empty((batch_size, width), dt))  # (B, H)
                scratch_dt = bool if config.activation == "relu" else dt
                ws.scratch.append(np.empty((batch_size, width), scratch_dt))  # (B, H)
            else:
                ws.Q.append(_by_column(batch_size, width, dt))  # (B, M)  O
                ws.G.append(_by_column(batch_size, width, dt))  # (B, M)  ∂L/∂O
        ws.P = _by_column(batch_size, config.n_classes, dt)  # (B, M)
        ws.logP = _by_column(batch_size, config.n_classes, dt)  # (B, M)
        ws.row = np.empty((batch_size, 1), dt)  # (B, 1)
        ws.ones = np.ones(batch_size, dt)  # (B,)
        return ws


def _by_column(rows, cols, dtype):
    """An uninitialised (rows, cols) array stored column by column (Fortran order).

    For the (B, M) arrays of the output layer: the softmax reduces each row over
    M ≈ 10 classes, and NumPy reduces a short axis much faster when its elements
    are B apart in memory (one vector operation per class) than when they are
    adjacent (one short loop per row).
    """
    return np.empty((cols, rows), dtype).T


class MLP:
    """A multilayer perceptron classifier with hand-derived gradients.

    ``MLP(784, 800, 10)`` is the specification's network: F1–F5 forward, B1–B7
    backward. ``hidden`` may be an int, a tuple of ints for deeper networks, or
    ``()`` for multinomial logistic regression.
    """

    def __init__(self, n_inputs, hidden=256, n_classes=10, *, activation="relu",
                 dtype="float32", seed=None, output="softmax"):
        self.config = MLPConfig(n_inputs, hidden, n_classes, activation, dtype, output)
        self.dtype = np.dtype(self.config.dtype)
        sizes = self.config.layer_sizes
        self.shapes = {}
        for l, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
            self.shapes[f"W{l}"] = (n_out, n_in)  # (H, D)
            self.shapes[f"b{l}"] = (n_out,)  # (H,)
        n = sum(math.prod(s) for s in self.shapes.values())
        self.param_buffer = np.zeros(n, self.dtype)  # every parameter, contiguous
        self.grad_buffer = np.zeros(n, self.dtype)  # every gradient, same layout
        self.params = self._views(self.param_buffer)
        self.grads = self._views(self.grad_buffer)
        self._workspaces = {}
        # What travels with the weights in a model file (see handgrad.save):
        self.classes = None  # class names, index i names output i
        self.preprocessor = None  # a fitted datasets.Preprocessor for raw inputs
        self.training = {}  # a JSON-able summary of how the model was trained
        self.init_params(seed)

    # -- construction --------------------------------------------------------

    @classmethod
    def from_config(cls, config, seed=None):
        if isinstance(config, dict):
            config = MLPConfig.from_dict(config)
        return cls(config.n_inputs, config.hidden, config.n_classes,
                   activation=config.activation, dtype=config.dtype, seed=seed,
                   output=config.output)

    def _views(self, buffer):
        views, offset = {}, 0
        for name, shape in self.shapes.items():
            size = math.prod(shape)
            views[name] = buffer[offset:offset + size].reshape(shape)
            offset += size
        return views

    def init_params(self, seed=None):
        """He-normal weights for ReLU, Glorot-uniform otherwise; zero biases."""
        rng = np.random.default_rng(seed)
        for l in range(1, self.n_layers + 1):
            W = self.params[f"W{l}"]
            fan_out, fan_in = W.shape
            if self.config.activation == "relu":
                W[...] = rng.standard_normal(W.shape) * math.sqrt(2.0 / fan_in)
            else:
                limit = math.sqrt(6.0 / (fan_in + fan_out))
                W[...] = rng.uniform(-limit, limit, W.shape)
            self.params[f"b{l}"][...] = 0
        return self

    @property
    def n_layers(self):
        """Number of linear layers (K in the specification)."""
        return len(self.config.hidden) + 1

    @property
    def n_inputs(self):
        return self.config.n_inputs

    @property
    def n_classes(self):
        return self.config.n_classes

    @property
    def n_params(self):
        return self.param_buffer.size

    def set_params(self, params):
        """Copy arrays from a ``{name: array}`` mapping into this model's buffer."""
        missing = set(self.shapes) - set(params)
        extra = set(params) - set(self.shapes)
        if missing or extra:
            raise ValueError(
                f"parameter names do not match the architecture: missing {sorted(missing)}, "
                f"unexpected {sorted(extra)}"
            )
        for name, shape in self.shapes.items():
            value = np.asarray(params[name])
            if value.shape != shape:
                raise ValueError(f"{name} has shape {value.shape}, expected {shape}")
            if not np.all(np.isfinite(value)):
                raise ValueError(f"{name} contains NaN or infinite values")
            self.params[name][...] = value
        return self

    def copy(self, dtype=None):
        """An independent copy, optionally converted to another dtype."""
        config = self.config
        if dtype is not None:
            config = MLPConfig(config.n_inputs, config.hidden, config.n_classes,
                               config.activation, dtype, config.output)
        clone = MLP.from_config(config)
        clone.param_buffer[...] = self.param_buffer
        clone.classes = None if self.classes is None else list(self.classes)
        clone.preprocessor = self.preprocessor
        clone.training = dict(self.training)
        return clone

    def __getstate__(self):
        # Workspaces are scratch space: rebuilt on demand, never pickled.
        state = self.__dict__.copy()
        state["_workspaces"] = {}
        del state["params"], state["grads"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        # Buffers may come back read-only (e.g. joblib memory maps): own writable copies.
        self.param_buffer = np.array(self.param_buffer, copy=True)
        self.grad_buffer = np.array(self.grad_buffer, copy=True)
        self.params = self._views(self.param_buffer)
        self.grads = self._views(self.grad_buffer)

    def __repr__(self):
        hidden = ", ".join(str(h) for h in self.config.hidden)
        output = "" if self.config.output == "softmax" else f", output={self.config.output!r}"
        return (f"MLP({self.n_inputs}, ({hidden}), {self.n_classes}, "
                f"activation={self.config.activation!r}, dtype={self.config.dtype!r}{output})")

    def workspace(self, batch_size):
        """The reusable buffers for ``batch_size`` rows (built on first use)."""
        ws = self._workspaces.get(batch_size)
        if ws is None:
            if len(self._workspaces) >= 4:  # a training run needs two: full and last batch
                self._workspaces.clear()
            ws = self._workspaces[batch_size] = Workspace.build(self.config, batch_size)
        return ws

    # -- forward and backward over the whole network --------------------------

    def forward(self, X, ws, dropout=None):
        """F1–F4 for every layer; returns the logits O (a view into ``ws``).

        With ``dropout`` (training only), inputs and hidden units are dropped and
        the masks kept in ``ws`` for :meth:`backward`.
        """
        act = self.config.activation
        K = self.n_layers
        drop = dropout is not None and dropout.active
        if drop:
            masks, dropped = ws.dropout_buffers(self.config)
        inp = X  # (B, D)
        if drop and dropout.input_rate and is_sparse(X):
            raise ValueError("input dropout needs dense X; sparse inputs take hidden "
                             "dropout only (input_rate=0)")
        if drop and dropout.input_rate:
            inp = dropout_forward(X, 1.0 - dropout.input_rate, dropout.rng, masks[0], dropped[0])
        ws.inputs = [inp]
        # a sparse input regrouped by column once, for F1 here and B7 in the backward
        ws.columns = _accel.sparse_columns(inp, self.params["W1"]) if is_sparse(inp) else None
        for l in range(1, K + 1):
            W, b = self.params[f"W{l}"], self.params[f"b{l}"]
            columns = ws.columns if l == 1 else None
            if l == K:
                linear_forward(inp, W, b, ws.Q[l - 1], columns)  # (B, M)  F3
                break
            inp = hidden_forward(act, inp, W, b, ws.Q[l - 1], ws.h[l - 1],
                                 columns)  # (B, H)  F1, F2
            if drop and dropout.hidden_rate:
                inp = dropout_forward(inp, 1.0 - dropout.hidden_rate, dropout.rng,
                                      masks[l], dropped[l])  # (B, H)
            ws.inputs.append(inp)
        return ws.Q[K - 1]  # (B, M)  O

    def loss(self, ws, target, w):
        """F4–F5 (or F4ℓ–F5ℓ, F4s–F5s, F4p–F5p: the model's output) on the outputs O
        :meth:`forward` left in ``ws``: ``Σ_n w_n L_n``.

        ``w`` is the per-example weight (B,) normalised to sum to 1, or the scalar
        ``1/B``; the output's ``P`` stays in ``ws`` for :meth:`backward`.
        """
        output_forward = self._output_layer(ws.Q[-1], target, w)[0]
        return output_forward(ws.Q[-1], target, w, ws.logP, ws.P, ws.row)

    def _output_layer(self, O, target, w):
        """The output's (forward, backward) pair: :data:`OUTPUT_LAYERS`'s NumPy
        reference, or the accelerator's compiled pair where it has one for this output
        and these targets (:func:`handgrad._accel.output_layer`)."""
        name = self.config.output
        return _accel.output_layer(name, O, target, w) or OUTPUT_LAYERS[name]

    def l2_penalty(self, ws, coef):
        """``½ c Σ_l ‖W_l‖²`` (weights, not biases) with ``c = coef``: scikit-learn's
        ``alpha`` penalty when ``coef = α / Σ_n s_n`` of the batch.

        Keeps each ``‖W_l‖²`` in ``ws`` for :meth:`grads_bounded`. Returns 0 for ``coef`` 0.
        """
        if not coef:
            return 0.0
        ws.weight_norm2 = [square_norm(self.params[f"W{l}"])
                           for l in range(1, self.n_layers + 1)]
        return 0.5 * coef * math.fsum(ws.weight_norm2)

    def backward(self, ws, target, w, dropout=None):
        """B2, then B5 and B6 down through every layer: ``ws.G[ℓ-1] = ∂L/∂Q`` of layer ℓ.

        Follows :meth:`forward` (with the same ``dropout``) and :meth:`loss` on the same
        ``ws``. Only the weights' current values are read, so the weight gradients
        (:meth:`weight_grads`), or an update that absorbs them
        (:meth:`accumulate_grads`), follow for all layers at once.
        """
        act = self.config.activation
        K = self.n_layers
        drop_hidden = dropout is not None and dropout.hidden_rate > 0
        output_backward = self._output_layer(ws.Q[K - 1], target, w)[1]
        G = output_backward(ws.P, target, w, ws.G[K - 1])  # (B, M)  B2 (B2ℓ, B2s, B2p)
        for l in range(K, 1, -1):
            dX = ws.G[l - 2]  # (B, H) of layer l−1
            linear_backward(G, None, self.params[f"W{l}"], None, None, dX)  # B5 into dX
            if drop_hidden:
                dropout_backward(dX, ws.mask[l - 1])  # through the dropped units
            # B6: ∂L/∂Q of layer l−1 from ∂L/∂h (just written into dX)
            G = hidden_backward(act, dX, ws.Q[l - 2], ws.h[l - 2], ws.scratch[l - 2])
        return ws.G

    def weight_grads(self, ws, l2=0.0):
        """B3, B4 for the output layer and B7 beneath, from :meth:`backward`, into ``grads``.

        ``l2`` adds the penalty's gradient ``c W`` of :meth:`l2_penalty` (``c = l2``).
        """
        for l in range(1, self.n_layers + 1):
            linear_backward(ws.G[l - 1], ws.inputs[l - 1], self.params[f"W{l}"],
                            self.grads[f"W{l}"], self.grads[f"b{l}"], None, ws.ones,
                            columns=ws.columns if l == 1 else None)
            if l2:
                _add_scaled(l2, self.params[f"W{l}"], self.grads[f"W{l}"])  # + c W
        return self.grads

    def accumulate_grads(self, ws, out, alpha, beta, l2=0.0):
        """``out ← β out + α ∂L/∂p`` for every parameter, from :meth:`backward`.

        ``out`` is flat in ``param_buffer``'s layout: the parameters themselves (plain
        SGD) or an optimizer's buffer (momentum). Large weight matrices take their
        GEMM's product directly (:func:`linear_backward_accumulate`; their part of
        ``grad_buffer`` is left untouched); the other gradients are formed in
        ``grad_buffer`` and added by one ``axpby`` per contiguous run
        (:data:`FUSE_MIN_ENTRIES`). ``l2`` adds the penalty's ``c W`` to ``∂L/∂W`` (R1).
        A sparse first-layer input forms its B7 product in ``grad_buffer`` and adds it
        (BLAS cannot take a sparse operand).
        """
        fused, runs = self._fusion_plan()
        for l in range(1, self.n_layers + 1):
            G, A, name = ws.G[l - 1], ws.inputs[l - 1], f"W{l}"
            place = fused.get(name)
            if place and is_sparse(A):  # B7 of a sparse input: formed, then added
                start, stop, shape = place
                g = self.grads[name]
                linear_backward(G, A, None, g, self.grads[f"b{l}"], None, ws.ones,
                                columns=ws.columns if l == 1 else None)  # B3, B7
                if l2:
                    _add_scaled(l2, self.params[name], g)  # + c W  (R1)
                _blas.axpby(alpha, g.reshape(-1), beta, out[start:stop],
                            scratch=g.reshape(-1))
                continue
            linear_backward(G, A, None, None if place else self.grads[name],
                            self.grads[f"b{l}"], None, ws.ones)  # B3 (and B4 unless fused)
            if place:
                start, stop, shape = place
                dest, step_beta = out[start:stop], beta
                if l2:  # out ← β out + α c W first, then the product on top (β = 1)
                    W = self.param_buffer[start:stop]  # (H·D,)
                    if np.may_share_memory(dest, W):
                        dest *= beta + alpha * l2  # out is W itself
                    else:
                        _blas.axpby(alpha * l2, W, beta, dest,
                                    scratch=self.grad_buffer[start:stop])
                    step_beta = 1.0
                linear_backward_accumulate(G, A, dest.reshape(shape), alpha, step_beta)
            elif l2:
                _add_scaled(l2, self.params[name], self.grads[name])  # + c W, formed above
        for start, stop in runs:
            g = self.grad_buffer[start:stop]  # (n,) formed above; free to be overwritten
            _blas.axpby(alpha, g, beta, out[start:stop], scratch=g)

    def weight_ranges(self):
        """``((start, stop), ...)``: where each weight matrix lies in ``param_buffer``
        (flat offsets, in order; the biases lie between them)."""
        ranges = self.__dict__.get("_weight_ranges")
        if ranges is None:
            found, offset = [], 0
            for name, shape in self.shapes.items():
                size = math.prod(shape)
                if name.startswith("W"):
                    found.append((offset, offset + size))
                offset += size
            ranges = self._weight_ranges = tuple(found)
        return ranges

    def _fusion_plan(self):
        """``({weight name: (start, stop, shape)} fused, ((start, stop), ...) the rest)``.

        Flat offsets in ``param_buffer``'s layout, worked out once per threshold.
        """
        plan = self.__dict__.get("_plan")
        if plan is None or plan[0] != FUSE_MIN_ENTRIES:
            fused, runs, offset = {}, [], 0
            for name, shape in self.shapes.items():
                size = math.prod(shape)
                if name.startswith("W") and size >= FUSE_MIN_ENTRIES:
                    fused[name] = (offset, offset + size, shape)
                elif runs and runs[-1][1] == offset:
                    runs[-1][1] = offset + size  # extends the run before it
                else:
                    runs.append([offset, offset + size])
                offset += size
            plan = self._plan = (FUSE_MIN_ENTRIES, fused, tuple(map(tuple, runs)))
        return plan[1], plan[2]

    def grads_bounded(self, ws, input_norm2=None, l2=0.0):
        """True when no entry of the gradient from ``ws`` can be NaN or infinite.

        For a layer with input A (B, D) and ``G = ∂L/∂Q`` (B, H), Cauchy–Schwarz
        bounds every entry: ``|Σ_n G[n,j] A[n,k]| ≤ ‖G‖ ‖A‖`` (B4/B7) and
        ``|Σ_n G[n,j]| ≤ √B ‖G‖`` (B3), with Frobenius norms; the penalty adds at most
        ``c ‖W‖`` (its ``‖W‖²`` measured by :meth:`l2_penalty`). Finite norms whose
        product stays far below the dtype's largest value (the margin covers the
        rounding of the sums) prove the gradient finite, from a few dot products
        over (B, H) arrays instead of a pass over every gradient entry. False means
        only "not proven": check the gradient itself. ``input_norm2`` is ``‖X‖²`` of
        the first layer's input when the caller measured it already (any larger value
        will do).
        """
        limit = float(np.finfo(self.dtype).max) / 4
        root_B = math.sqrt(ws.batch_size)
        for l, (G, A) in enumerate(zip(ws.G, ws.inputs)):
            A2 = input_norm2 if l == 0 and input_norm2 is not None else square_norm(A)
            bound = math.sqrt(square_norm(G)) * max(math.sqrt(A2), root_B)
            if l2:
                bound += l2 * math.sqrt(ws.weight_norm2[l])
            if not bound < limit:  # NaN lands here too
                return False
        return True

    def _loss_and_grads(self, X, target, w, dropout=None, l2=0.0):
        """Loss and gradient on validated, model-dtype inputs: forward, backward, B3–B7."""
        ws = self.workspace(X.shape[0])
        self.forward(X, ws, dropout)
        loss = self.loss(ws, target, w) + self.l2_penalty(ws, l2)
        self.backward(ws, target, w, dropout)
        self.weight_grads(ws, l2)
        return loss

    def _hits(self, O, target, sb=None):
        """Correct predictions in a batch from its outputs O (B, M), weighted by ``sb``
        (B,) when given; None for the regression outputs, which have no accuracy.

        Softmax: ``argmax O`` against the label (or the target row's argmax).
        Logistic: a row is correct when every output's ``O > 0`` (``P > ½``) matches
        its target's ``Y > ½`` (scikit-learn's subset accuracy for multilabel).
        """
        output = self.config.output
        if output == "softmax":
            labels = target if target.ndim == 1 else target.argmax(axis=1)  # (B,)
            hits = O.argmax(axis=1) == labels  # (B,)
        elif output == "logistic":
            hits = np.all((O > 0) == (target > 0.5), axis=1)  # (B,)
        else:
            return None
        return float(np.count_nonzero(hits) if sb is None else np.dot(hits, sb))

    # -- public API -------------------------------------------------------------

    def loss_and_grads(self, X, y, sample_weight=None, l2=0.0):
        """Loss ``Σ s_n L_n / Σ s_n`` and its gradient for every parameter.

        ``y`` is what :meth:`check_y` accepts: integer labels (B,) or rows of class
        probabilities (B, M) for a softmax output, target rows (B, M) otherwise.
        ``l2`` adds scikit-learn's penalty ``l2/2 · Σ‖W_l‖² / Σ s_n`` (weights only; R1).
        Returns ``(loss, grads)``; ``grads`` maps the names of ``params`` to
        arrays of the same shape and dtype (views of ``grad_buffer``, overwritten
        by the next call).
        """
        X = self.check_X(X)
        target = self.check_y(y, X.shape[0])
        w = normalised_weights(sample_weight, X.shape[0], self.dtype)
        loss = self._loss_and_grads(X, target, w, l2=_l2_coef(l2, sample_weight, X.shape[0]))
        return loss, self.grads

    def prepare(self, X_raw):
        """Apply the stored preprocessing to raw examples (e.g. uint8 images).

        Returns rows (N, D) in the model's dtype; without a preprocessor, X_raw
        must already be such rows.
        """
        if self.preprocessor is None:
            return self.check_X(X_raw)
        return self.check_X(self.preprocessor.transform(X_raw, self.dtype))

    def _chunk(self, X, start, stop):
        """Rows ``start:stop`` of checked X in the model's dtype (sparse stays sparse)."""
        if is_sparse(X):
            return X[start:stop].astype(self.dtype, copy=False)  # (B, D) CSR
        return np.asarray(X[start:stop], dtype=self.dtype)  # (B, D)

    def _forward_chunks(self, X, batch_size):
        """``(start, stop, O, ws)`` per chunk of checked rows: memory bounded by the chunk."""
        for start in range(0, X.shape[0], batch_size):
            chunk = self._chunk(X, start, start + batch_size)  # (B, D)
            ws = self.workspace(chunk.shape[0])
            yield start, start + chunk.shape[0], self.forward(chunk, ws), ws  # O: (B, M)

    def logits(self, X, batch_size=PREDICT_CHUNK):
        """The outputs O (N, M) before the output function, in chunks."""
        X = self.check_X(X, convert=False)
        out = np.empty((X.shape[0], self.n_classes), self.dtype)  # (N, M)
        for start, stop, O, _ in self._forward_chunks(X, batch_size):
            out[start:stop] = O
        return out

    def output(self, X, batch_size=PREDICT_CHUNK):
        """The output layer's values P (N, M): F4 (softmax probabilities), F4ℓ
        (per-label probabilities), F4s (regression values) or F4p (rates)."""
        X = self.check_X(X, convert=False)
        out = np.empty((X.shape[0], self.n_classes), self.dtype)  # (N, M)
        name = self.config.output
        for start, stop, O, ws in self._forward_chunks(X, batch_size):
            P = out[start:stop]  # (B, M)
            if name == "softmax":
                log_softmax(O, out=ws.logP, row=ws.row)
                np.exp(ws.logP, out=P)  # F4
            elif name == "logistic":
                logistic_output(O, P, ws.logP)  # F4ℓ: σ(O), never overflowing
            elif name == "identity":
                np.copyto(P, O)  # F4s
            else:
                np.exp(O, out=P)  # F4p
        return out

    def predict_proba(self, X, batch_size=PREDICT_CHUNK):
        """Probabilities (N, M), evaluated ``batch_size`` rows at a time: of each class
        (softmax; rows sum to 1) or of each label (logistic; each in (0, 1))."""
        if not self.config.classifies:
            raise ValueError(f"predict_proba needs a classification output; this model's "
                             f"output is {self.config.output!r}: use predict or output")
        return self.output(X, batch_size)

    def predict(self, X, batch_size=PREDICT_CHUNK):
        """Predictions per row: the most probable class index (N,) for a softmax output;
        ``P > ½`` as 0/1 for a logistic one, (N,) with one output and (N, M) with
        several; the values P (N, M) of a regression output."""
        name = self.config.output
        if name == "softmax":
            return np.argmax(self.logits(X, batch_size), axis=1)
        if name == "logistic":
            decided = (self.output(X, batch_size) > 0.5).astype(np.intp)  # (N, M)
            return decided[:, 0] if self.n_classes == 1 else decided
        return self.output(X, batch_size)

    def evaluate(self, X, y, sample_weight=None, batch_size=PREDICT_CHUNK):
        """``(loss, accuracy)`` on a data set, in batches, without touching grads.

        The loss is the output's own (cross-entropy, binary cross-entropy, ½ squared
        error or half Poisson deviance), weighted by ``sample_weight``; the accuracy
        is None for the regression outputs.
        """
        X = self.check_X(X, convert=False)
        target = self.check_y(y, X.shape[0])
        s = None if sample_weight is None else check_sample_weight(sample_weight, X.shape[0])
        output_forward = OUTPUT_LAYERS[self.config.output][0]
        total_loss = total_correct = total_w = 0.0
        for start in range(0, X.shape[0], batch_size):
            stop = start + batch_size
            chunk = self._chunk(X, start, stop)  # (B, D)
            t = target[start:stop]
            ws = self.workspace(chunk.shape[0])
            O = self.forward(chunk, ws)
            sw = np.ones(chunk.shape[0]) if s is None else s[start:stop]  # (B,)
            hits = self._hits(O, t, sw)  # before the loss, which may reuse O as scratch
            total_loss += output_forward(O, t, sw.astype(self.dtype), ws.logP, ws.P, ws.row)
            total_correct = None if hits is None else total_correct + hits
            total_w += float(sw.sum())
        accuracy = None if total_correct is None else total_correct / total_w
        return total_loss / total_w, accuracy

    # -- input validation (the API boundary) -------------------------------------

    def check_X(self, X, convert=True):
        """Validate inputs: 2-D, ``n_inputs`` columns, numeric and finite."""
        return self.check_X_and_norm(X, convert)[0]

    def check_X_and_norm(self, X, convert=True):
        """:meth:`check_X`, and ``‖X‖²`` as its finite check measured it (or None).

        The finite check of float data is a sum of squares (:func:`_finite_square_norm`),
        so the training loop gets a bound on every batch's ``‖X‖²`` for free.
        """
        norm2 = None
        if is_sparse(X):
            return self._check_sparse_X(X)
        if not hasattr(X, "shape") or not hasattr(X, "dtype"):
            X = np.asarray(X)
        if X.ndim != 2:
            raise ValueError(f"X must be 2-D (n_samples, {self.n_inputs}), got shape {X.shape}")
        if X.shape[1] != self.n_inputs:
            raise ValueError(
                f"X has {X.shape[1]} features but the model expects {self.n_inputs}"
            )
        if X.shape[0] == 0:
            raise ValueError("X has no rows")
        if not (np.issubdtype(X.dtype, np.number) or X.dtype == bool):
            raise ValueError(f"X must be numeric, got dtype {X.dtype}")
        if np.issubdtype(X.dtype, np.complexfloating):
            raise ValueError("X must be real, got complex values")
        if np.issubdtype(X.dtype, np.floating):
            finite, norm2 = _finite_square_norm(X)
            if not finite:
                raise ValueError("X contains NaN or infinite values")
        if convert:
            narrowing = (np.issubdtype(X.dtype, np.floating)
                         and np.finfo(X.dtype).max > np.finfo(self.dtype).max)
            with np.errstate(over="ignore"):  # reported below with a clearer message
                X = np.ascontiguousarray(X, dtype=self.dtype)
            if narrowing and not all_finite(X):  # float64 values beyond float32's range
                raise ValueError(f"X has values too large for {self.dtype.name}")
        return X, norm2

    def _check_sparse_X(self, X):
        """A SciPy sparse X as CSR rows in the model's dtype, never dense; ``‖X‖²`` of
        its stored values (the finite check's sum of squares, as for dense X)."""
        if len(X.shape) != 2:
            raise ValueError(f"X must be 2-D (n_samples, {self.n_inputs}), got shape {X.shape}")
        if X.shape[1] != self.n_inputs:
            raise ValueError(f"X has {X.shape[1]} features but the model expects "
                             f"{self.n_inputs}")
        if X.shape[0] == 0:
            raise ValueError("X has no rows")
        if not (np.issubdtype(X.dtype, np.number) or X.dtype == bool):
            raise ValueError(f"X must be numeric, got dtype {X.dtype}")
        if np.issubdtype(X.dtype, np.complexfloating):
            raise ValueError("X must be real, got complex values")
        check_sparse_structure(X)
        if X.format not in ("csr", "csc"):
            X = X.tocsr()  # COO, LIL, ...: one conversion of the stored values
        X = X.tocsr().astype(self.dtype, copy=False)  # rows are gathered per batch
        finite, norm2 = _finite_square_norm(X.data)
        if not finite:
            raise ValueError("X contains NaN or infinite values")
        return X, norm2

    def check_y(self, y, n_rows):
        """Validate targets for the model's output: labels in [0, M) or probability
        rows (n_rows, M) for softmax; target rows (n_rows, M) otherwise (a vector when
        M = 1): in [0, 1] for logistic, finite for identity, non-negative for exp."""
        return check_targets(y, n_rows, self.n_classes, self.dtype, self.config.output)


def all_finite(a):
    """True when no element of the float array ``a`` is NaN or ±inf (one pass)."""
    return _finite_square_norm(a)[0]


def _finite_square_norm(a):
    """``(all elements finite, ‖a‖² or None)`` in one pass over ``a`` (any layout).

    ``‖a‖²`` is summed as BLAS dots over blocks of about 2^20 elements, added in
    double precision: a NaN or ±inf element makes it NaN or inf, so a finite value
    proves every element finite, and costs what a plain sum would. Within a block
    the dot's rounding is at most a relative 2^20·u (1/16 in float32): the value is
    an upper bound on the squared norm of any subset of the rows up to that factor,
    which :meth:`MLP.grads_bounded`'s margin covers. When squares overflow from
    finite values the norm is None and each element is checked.
    """
    if a.ndim > 1:  # whole rows of a 2-D array per block
        step = max(1, (1 << 20) // max(1, a.size // max(1, a.shape[0])))
        blocks = (a[i:i + step] for i in range(0, a.shape[0], step))
    else:
        flat = np.ravel(a)
        blocks = (flat[i:i + (1 << 20)] for i in range(0, flat.size, 1 << 20))
    total = sum(square_norm(block) for block in blocks)
    if math.isfinite(total):
        return True, total
    flat = np.ravel(a, order="K")  # a view of a C- or F-ordered array
    chunk = 1 << 20
    finite = all(np.isfinite(flat[i:i + chunk]).all() for i in range(0, flat.size, chunk))
    return finite, None


def _add_scaled(alpha, x, y):
    """``y ← y + α x`` for two C-contiguous arrays of one shape (BLAS axpy where found)."""
    x, y = x.reshape(-1), y.reshape(-1)  # views
    _blas.axpy(alpha, x, y, scratch=None if _blas.available(y.dtype) else np.empty_like(x))


def _l2_coef(l2, sample_weight, n_rows):
    """The penalty coefficient ``c = α / Σ_n s_n`` of :meth:`MLP.l2_penalty`."""
    if not (isinstance(l2, (int, float)) and math.isfinite(l2) and l2 >= 0):
        raise ValueError(f"l2 must be a non-negative number, got {l2!r}")
    if not l2:
        return 0.0
    total = n_rows if sample_weight is None else float(np.sum(sample_weight))
    return float(l2) / total


def square_norm(a):
    """``‖a‖²`` as a Python float, one BLAS dot over the array's memory (a view for a
    C- or F-ordered array; other layouts are copied)."""
    if is_sparse(a):
        a = a.data  # the stored values: the zeros add nothing
    flat = np.ravel(a, order="K")
    with np.errstate(over="ignore", invalid="ignore"):
        return float(np.dot(flat, flat))


def log_softmax(O, out, row):
    """``log P = O − logsumexp(O)`` row-wise (F4 in log space), into ``out``."""
    np.maximum.reduce(O, axis=1, keepdims=True, out=row)  # (B, 1)
    np.subtract(O, row, out=out)  # (B, M)
    np.exp(out, out=O)  # O is reused as scratch: (B, M)
    np.add.reduce(O, axis=1, keepdims=True, out=row)
    np.log(row, out=row)
    out -= row
    return out


def check_targets(y, n_rows, n_classes, dtype, output="softmax"):
    if output != "softmax":
        return _check_output_targets(y, n_rows, n_classes, dtype, output)
    y = np.asarray(y)
    if y.ndim == 1:
        if y.shape[0] != n_rows:
            raise ValueError(f"y has {y.shape[0]} labels but X has {n_rows} rows")
        if y.dtype == bool or not (np.issubdtype(y.dtype, np.integer)
                                   or np.issubdtype(y.dtype, np.floating)):
            raise ValueError(f"labels must be integers, got dtype {y.dtype}")
        if np.issubdtype(y.dtype, np.floating):
            if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
                raise ValueError("labels must be whole numbers (class indices)")
        if y.size and (y.min() < 0 or y.max() >= n_classes):
            bad = y[(y < 0) | (y >= n_classes)][0]
            raise ValueError(
                f"label {bad} is out of range: labels must lie in [0, {n_classes - 1}]"
            )
        return y.astype(np.intp, copy=False)
    if y.ndim == 2:
        if y.shape != (n_rows, n_classes):
            raise ValueError(
                f"soft targets must have shape ({n_rows}, {n_classes}), got {y.shape}"
            )
        if not np.issubdtype(y.dtype, np.number) or not np.all(np.isfinite(y)):
            raise ValueError("soft targets must be finite numbers")
        if np.any(y < 0):
            raise ValueError("soft targets must be non-negative")
        sums = y.sum(axis=1)
        worst = int(np.argmax(np.abs(sums - 1)))
        if abs(sums[worst] - 1) > TARGET_SUM_TOL:
            raise ValueError(
                f"each row of soft targets must sum to 1 (B2 relies on it); "
                f"row {worst} sums to {sums[worst]:.6g}"
            )
        return np.ascontiguousarray(y, dtype=dtype)
    raise ValueError(f"y must be labels (n,) or probabilities (n, {n_classes}), got shape {y.shape}")


def _check_output_targets(y, n_rows, n_outputs, dtype, output):
    """Targets (n_rows, M) for the logistic, identity and exp outputs."""
    y = np.asarray(y)
    if y.ndim == 1 and n_outputs == 1:
        y = y.reshape(-1, 1)  # (N,) -> (N, 1)
    if y.ndim != 2 or y.shape != (n_rows, n_outputs):
        raise ValueError(f"targets must have shape ({n_rows}, {n_outputs}) for this model's "
                         f"{n_outputs} {output} output(s), got {y.shape}")
    if not (np.issubdtype(y.dtype, np.number) or y.dtype == bool):
        raise ValueError(f"targets must be numbers, got dtype {y.dtype}")
    if np.issubdtype(y.dtype, np.complexfloating):
        raise ValueError("targets must be real, got complex values")
    y = np.ascontiguousarray(y, dtype=dtype)
    if not all_finite(y):
        raise ValueError("targets contain NaN or infinite values")
    if output == "logistic" and (y.min() < 0 or y.max() > 1):
        raise ValueError(f"targets of a logistic output must lie in [0, 1] (label "
                         f"indicators or probabilities); got values in [{y.min():g}, "
                         f"{y.max():g}]")
    if output == "exp" and y.min() < 0:
        raise ValueError(f"targets of an exp (Poisson) output must be non-negative; got "
                         f"{y.min():g}")
    return y


def check_sample_weight(sample_weight, n_rows):
    s = np.asarray(sample_weight, dtype=np.float64)
    if s.shape != (n_rows,):
        raise ValueError(f"sample_weight must have shape ({n_rows},), got {s.shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError("sample_weight contains NaN or infinite values")
    if np.any(s < 0):
        raise ValueError("sample_weight must be non-negative")
    if not s.sum() > 0:
        raise ValueError("sample_weight sums to zero: at least one weight must be positive")
    return s


def normalised_weights(sample_weight, n_rows, dtype):
    """Per-example weights ``s_n / Σ s`` (B,), or the scalar ``1/B`` for a plain mean."""
    if sample_weight is None:
        return 1.0 / n_rows
    s = check_sample_weight(sample_weight, n_rows)
    return (s / s.sum()).astype(dtype)


# --------------------------------------------------------------------------- #
# Gradient check
# --------------------------------------------------------------------------- #


# Rounding of the float64 loss, in units of ε·max(1, |L|): a few ulps in the log-sum-exp
# and the weighted sum; trained models measured 1.3 at most (tests/test_model.py).
LOSS_ROUNDING_ULPS = 8.0
DEFAULT_GRADCHECK_TOLERANCE = 1e-5


class GradcheckResult(dict):
    """``{name: worst error}`` of :func:`gradcheck`, with how the errors were measured.

    ``noise`` is what the finite differences themselves can be off by, ``floor`` the
    absolute floor of the error measure (``noise / tolerance``), ``loss`` the loss
    at the checked point; ``passed`` says whether every error is within ``tolerance``.
    """

    def __init__(self, errors, *, tolerance, noise, floor, loss, eps):
        super().__init__(errors)
        self.tolerance, self.noise, self.floor, self.loss, self.eps = (
            tolerance, noise, floor, loss, eps)

    @property
    def worst(self):
        return max(self.values(), default=0.0)

    @property
    def passed(self):
        return self.worst <= self.tolerance

    @property
    def failures(self):
        """Names of the parameters whose worst error exceeds the tolerance."""
        return [name for name, err in self.items() if err > self.tolerance]


def gradcheck(model, X, y, sample_weight=None, *, eps=1e-5, max_checks=None, seed=0,
              tolerance=DEFAULT_GRADCHECK_TOLERANCE):
    """Central finite differences in float64 against :meth:`MLP.loss_and_grads`.

    Returns a :class:`GradcheckResult`: ``{name: worst error}`` over the checked
    entries, where an entry's error is

        |a − n| / max(|a| + |n|, floor),   floor = noise / tolerance,
        noise = 8 ε max(1, |L|) / eps + eps²

    with ``a`` the analytic and ``n`` the numeric derivative, ε the machine epsilon
    of float64 (the dtype the check runs in) and ``L`` the loss. ``noise`` bounds the
    error of the central difference itself: the loss is exact to a few ulps, so
    rounding puts about ε |L| / eps into ``n``, and truncation about eps² |∂³L| / 6.
    Where ``|a| + |n|`` is far above the floor the error is the relative error; below
    it (a vanishing gradient, as trained models have, whose ``n`` is rounding noise)
    the difference is compared with that noise, as numerical gradient checkers use
    an absolute tolerance. So an error within ``tolerance`` means ``|a − n|`` is
    within ``tolerance`` times ``|a| + |n|``, or within what finite differences can
    resolve. ``max_checks`` limits the entries checked per parameter (chosen at
    random with ``seed``); None checks every entry.
    """
    if not (isinstance(eps, (int, float, np.floating)) and math.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be a positive finite step, got {eps!r}")
    if not (isinstance(tolerance, (int, float, np.floating)) and math.isfinite(tolerance)
            and tolerance > 0):
        raise ValueError(f"tolerance must be a positive number, got {tolerance!r}")
    m64 = model.copy(dtype="float64")
    X = m64.check_X(X)
    target = m64.check_y(y, X.shape[0])
    w = normalised_weights(sample_weight, X.shape[0], np.float64)
    loss = m64._loss_and_grads(X, target, w)
    analytic = {k: v.copy() for k, v in m64.grads.items()}
    noise = LOSS_ROUNDING_ULPS * np.finfo(np.float64).eps * max(1.0, abs(loss)) / eps + eps ** 2
    floor = noise / tolerance
    rng = np.random.default_rng(seed)
    worst = {}
    for name, p in m64.params.items():
        flat = p.flat  # writes through to the parameter whatever its memory layout
        idx = np.arange(p.size)
        if max_checks is not None and p.size > max_checks:
            idx = rng.choice(p.size, size=max_checks, replace=False)
        errors = []
        for i in idx:
            old = flat[i]
            flat[i] = old + eps
            plus = m64._loss_and_grads(X, target, w)
            flat[i] = old - eps
            minus = m64._loss_and_grads(X, target, w)
            flat[i] = old
            numeric = (plus - minus) / (2 * eps)
            a = analytic[name].reshape(-1)[i]
            errors.append(abs(a - numeric) / max(abs(a) + abs(numeric), floor))
        worst[name] = float(max(errors)) if errors else 0.0
    return GradcheckResult(worst, tolerance=float(tolerance), noise=float(noise),
                           floor=float(floor), loss=float(loss), eps=float(eps))
