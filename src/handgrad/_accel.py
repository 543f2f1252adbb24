"""Optional compiled kernels for the elementwise passes of a training step (numba).

The plain NumPy code in :mod:`handgrad.model` and :mod:`handgrad.optim` is the
reference and the fallback. Each NumPy ufunc call is one pass over memory, so a
step's elementwise work costs a pass per operation: Adam's update alone makes
seven passes over the parameters (``m``, ``g²``, ``v``, ``√v``, ``+ ε̂``, the
quotient, ``p``). With ``pip install 'handgrad[accel]'`` the same formulas run as
loops compiled by numba, each a single pass that keeps every intermediate in a
register:

- :func:`adam_update`: Adam and AdamW, ``m``, ``v`` and ``p`` in one pass (4 reads,
  3 writes per parameter);
- :func:`sgd_momentum_update`: SGD with momentum (heavy-ball or Nesterov, as
  scikit-learn's default ``solver="sgd"``), buffer and ``p`` in one pass instead of
  four or five;
- :func:`bias_relu_forward`: F1's ``+ b`` and F2's ``max(0, ·)`` in one pass;
- :func:`relu_backward`: B6, ``∂L/∂Q = ∂L/∂h ⊙ 1[Q > 0]`` without a mask array;
- :func:`softmax_xent_forward` / :func:`softmax_xent_backward`: F4–F5 and B2 each in
  one call instead of about ten (the (B, M) arrays are small: the saving is calls);
- :func:`sparse_columns`, :func:`sparse_times_wt`, :func:`sparse_weight_grad`: F1 and
  B7 of a SciPy CSR first-layer input, by column. SciPy's products need ``Wᵀ`` as a
  C-ordered (D, H) copy for F1 and return B7 as (D, H), transposed back into ``dW``:
  two transposing copies of W's size per step. Grouping the batch's entries by input
  column instead lets both products walk W (H, D) as it is stored.

The model takes a kernel only where it applies (:func:`takes`, :func:`output_layer`,
:func:`sparse_columns`): dense float32/float64 arrays, or a CSR matrix of the weights'
dtype for the first layer's products,
ReLU hidden layers, the softmax cross-entropy output with integer labels (soft
targets, label smoothing and the other outputs of ``handgrad.model.OUTPUT_LAYERS``
stay on NumPy). The layer functions themselves (``activation_backward``,
``softmax_cross_entropy_forward``, ...) are always the NumPy reference, so what calls
them directly, such as :func:`handgrad.trace`, sees the readable path.

The values equal the NumPy path's up to rounding (the tests compare both, and both
against ``torch.optim``). Arithmetic stays in the arrays' dtype: every constant is
passed as a scalar of that dtype, so float32 data is not promoted to float64.

The kernels are used when numba imports and ``HANDGRAD_NO_ACCEL`` does not switch them
off: ``1``, ``true``, ``yes`` or ``on`` (any case) do; ``0``, ``false``, ``no``, ``off`` or
an empty value leave them on; any other value warns, naming it, and switches them off (the
variable was set to turn them off). :func:`use` switches them off and on in a running
process. Compiled code is
cached on disk (numba's ``cache=True``), so only the first process pays the compile.
"""

from __future__ import annotations

import importlib.util
import os
import threading

import numpy as np

_DISABLE_ENV = "HANDGRAD_NO_ACCEL"
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")

_kernels = None  # {name: compiled function}, imported on first use
_state = {"on": None, "installed": None}  # "on" None: the environment decides on first use
_LOCK = threading.Lock()


def installed():
    """True when numba can be imported (found once, without importing it)."""
    if _state["installed"] is None:
        _state["installed"] = importlib.util.find_spec("numba") is not None
    return _state["installed"]


def use(flag):
    """Switch the kernels on (True; only where numba is installed) or off (False) in
    this process; ``None`` goes back to the environment's default. Returns the old
    setting (True, False or None)."""
    old = _state["on"]
    _state["on"] = None if flag is None else bool(flag) and installed()
    return old


def disabled_by_environment():
    """``(off, problem)``: whether ``HANDGRAD_NO_ACCEL`` switches the kernels off, and a
    line naming its value when that value is not one of the usual boolean spellings."""
    raw = os.environ.get(_DISABLE_ENV, "")
    value = raw.strip().lower()
    if value in _TRUE:
        return True, None
    if value in _FALSE:
        return False, None
    return True, (f"{_DISABLE_ENV}={raw!r} is not a yes/no value ({', '.join(_TRUE)} switch "
                  f"the accelerator off; {', '.join(v for v in _FALSE if v)} or empty leave it "
                  f"on); taking it as off")


def enabled():
    """True when the compiled kernels are in use.

    Decided on the first call: the kernels are used when numba is installed, imports
    (a numba too old for this NumPy refuses to) and ``HANDGRAD_NO_ACCEL`` is unset.
    """
    on = _state["on"]
    if on is None:
        off, problem = disabled_by_environment()
        if problem:
            import warnings

            warnings.warn(problem, RuntimeWarning, stacklevel=2)
        on = not off and installed() and _loads()
        _state["on"] = on
    return on


def _loads():
    """Import the kernels' module; False (and the reason kept) if numba fails to import."""
    try:
        kernels()
    except Exception as exc:  # noqa: BLE001 - any import failure means: use NumPy
        _state["error"] = f"{type(exc).__name__}: {exc}"
        return False
    return True


def describe():
    """``{backend, version, status}`` for ``handgrad info --system`` and benchmarks."""
    if not installed():
        return {"backend": None, "version": None,
                "status": "not installed: pip install 'handgrad[accel]' for numba kernels"}
    from importlib.metadata import PackageNotFoundError, version

    try:
        numba_version = version("numba")
    except PackageNotFoundError:  # importable without package metadata
        numba_version = None
    if enabled():
        status = "active"
    elif _state.get("error"):
        status = f"off: numba failed to import ({_state['error']})"
    elif disabled_by_environment()[0]:
        problem = disabled_by_environment()[1]
        status = f"off: {problem or _DISABLE_ENV + '=' + os.environ[_DISABLE_ENV]}"
    else:
        status = "off: switched off in this process"
    return {"backend": "numba", "version": numba_version, "status": status}


DTYPES = (np.dtype(np.float32), np.dtype(np.float64))  # what the kernels are written for


def takes(*arrays, contiguous=False):
    """True when the kernels are on and every array is one they handle: a dense NumPy
    array (no SciPy sparse matrix), float32 or float64, all of one dtype, and with
    ``contiguous`` C-contiguous. Anything else keeps the NumPy reference path."""
    if not enabled():
        return False
    dtype = None
    for a in arrays:
        if not isinstance(a, np.ndarray) or a.dtype not in DTYPES:
            return False
        if dtype is None:
            dtype = a.dtype
        elif a.dtype != dtype:
            return False
        if contiguous and not a.flags.c_contiguous:
            return False
    return True


def kernels():
    """The kernels by name (each compiled on its first call, or loaded from numba's
    cache)."""
    global _kernels
    if _kernels is None:
        with _LOCK:
            if _kernels is None:
                from . import _numba_kernels as k

                # numba's first call of any kernel imports SciPy's linear algebra, and
                # with it SciPy's OpenBLAS: made here, at load time, so that callers that
                # limit BLAS threads (handgrad._threads) find every pool already loaded
                k.relu_backward(np.zeros((1, 1)), np.zeros((1, 1)))
                _kernels = {name: getattr(k, name) for name in k.__all__}
    return _kernels


def adam_update(p, g, m, v, *, beta1, beta2, scale, eps_hat, weight_decay, shrink,
                segments=None):
    """One Adam/AdamW step of the flat contiguous ``p`` in place, with ``m``, ``v``.

    ``scale = lr √(1 − β2^t) / (1 − β1^t)`` and ``eps_hat = ε √(1 − β2^t)`` as in
    :meth:`handgrad.optim.Adam.update`; ``weight_decay`` is Adam's L2 term added to
    the gradient (0 for AdamW), ``shrink`` AdamW's ``1 − lr λ`` (1 for Adam);
    ``segments`` ``((start, stop, c), ...)`` covering ``p`` add the L2 penalty's
    ``c p`` to ``g`` on each (R1); None: no penalty.
    """
    t = p.dtype.type
    kernels()["adam"](p, g, m, v, t(beta1), t(1.0 - beta1), t(beta2), t(1.0 - beta2),
                      t(scale), t(eps_hat), t(weight_decay), t(shrink),
                      *_segments(segments, p))


def sgd_momentum_update(p, g, buf, *, lr, momentum, dampening, weight_decay, nesterov,
                        first, segments=None):
    """One SGD-with-momentum step of the flat contiguous ``p`` in place, with the momentum
    buffer ``buf`` (``first``: the buffer is empty and becomes ``g + λ p``), as
    :meth:`handgrad.optim.SGD.update`; ``segments`` as in :func:`adam_update`."""
    t = p.dtype.type
    kernels()["sgd_momentum"](p, g, buf, t(lr), t(momentum), t(1.0 - dampening),
                              t(weight_decay), bool(nesterov), bool(first),
                              *_segments(segments, p))


_SEGMENTS = {}  # (segments, n, dtype) -> the kernels' arrays: a step allocates nothing


def _segments(segments, p):
    """``(bounds (S + 1,) int64, pens (S,) of p's dtype)`` for the kernels."""
    key = (segments, p.shape[0], p.dtype)
    found = _SEGMENTS.get(key)
    if found is None:
        if segments is None:
            segments = ((0, p.shape[0], 0.0),)
        bounds = np.array([start for start, _, _ in segments] + [segments[-1][1]], np.int64)
        assert bounds[0] == 0 and bounds[-1] == p.shape[0], "segments must cover p"
        if len(_SEGMENTS) >= 16:  # a run needs two (full and last batch): bounded
            _SEGMENTS.clear()
        found = _SEGMENTS[key] = (bounds, np.array([c for _, _, c in segments], p.dtype))
    return found


def bias_relu_forward(Q, b, h):
    """``Q ← Q + b`` (F1's bias) and ``h = max(0, Q)`` (F2) in one pass; returns h."""
    kernels()["bias_relu"](Q, b, h)
    return h


def relu_backward(G, Q):
    """B6 in place: ``G ← G ⊙ 1[Q > 0]``; returns G."""
    kernels()["relu_backward"](G, Q)
    return G


_NO_ROWS = {np.dtype(t): np.empty(0, t) for t in (np.float32, np.float64)}


def _weights(w, dtype):
    """``(per-row weights or an empty array, the one weight)`` in ``dtype``."""
    if isinstance(w, np.ndarray) and w.ndim > 0:
        return w, dtype.type(0)
    return _NO_ROWS[dtype], dtype.type(w)


def softmax_xent_forward(O, target, w, logP, P, row=None):
    """F4–F5 for integer labels: fills ``logP`` and ``P`` (B, M); returns ``Σ_n w_n L_n``.

    The signature of :func:`handgrad.model.softmax_cross_entropy_forward` (``row``, its
    scratch, is not needed)."""
    return float(kernels()["xent_forward"](O, target, *_weights(w, O.dtype), logP, P))


def softmax_xent_backward(P, target, w, out):
    """B2 for integer labels: ``out = w ⊙ (P − Y)`` (B, M); returns out."""
    kernels()["xent_backward"](P, target, *_weights(w, P.dtype), out)
    return out


# The outputs of handgrad.model.OUTPUT_LAYERS that have a compiled (forward, backward)
# pair here, with the same signatures. Each takes integer labels only; soft targets
# and the other outputs stay on the NumPy path.
OUTPUT_LAYERS = {"softmax": (softmax_xent_forward, softmax_xent_backward)}


def output_layer(output, O, target, w):
    """The compiled (forward, backward) pair for the model's ``output`` when the
    kernels take this batch: integer labels ``target`` (B,), outputs ``O`` (B, M) in
    float32/float64 and per-example weights ``w`` (B,) of O's dtype, or a scalar;
    None otherwise (the caller uses :data:`handgrad.model.OUTPUT_LAYERS`)."""
    pair = OUTPUT_LAYERS.get(output)
    if pair is None or not takes(O):
        return None
    if not (isinstance(target, np.ndarray) and target.ndim == 1
            and target.dtype.kind in "iu" and target.shape[0] == O.shape[0]):
        return None
    if isinstance(w, np.ndarray) and w.ndim > 0 and (w.dtype != O.dtype or w.ndim != 1):
        return None
    return pair


class SparseColumns:
    """A CSR batch (B, D) regrouped by column for :func:`sparse_times_wt` and
    :func:`sparse_weight_grad`: column j's entries are ``rows[start[j]:start[j + 1]]``
    with values ``vals[...]``. Built once per batch by :func:`sparse_columns`."""

    __slots__ = ("start", "rows", "vals", "shape")

    def __init__(self, start, rows, vals, shape):
        self.start, self.rows, self.vals, self.shape = start, rows, vals, shape


def sparse_columns(X, W):
    """:class:`SparseColumns` of ``X`` when the kernels take this product: ``X`` a SciPy
    CSR matrix (B, D) of ``W``'s dtype (float32/float64) and ``W`` (H, D) C-ordered;
    None otherwise (the caller uses SciPy's products). An index outside ``[0, D)``
    raises ValueError (SciPy checks index bounds only on request)."""
    if (not enabled() or getattr(X, "format", None) != "csr" or X.dtype != W.dtype
            or W.dtype not in DTYPES or not W.flags.c_contiguous or X.ndim != 2
            or X.shape[1] != W.shape[1]):
        return None
    B, D = X.shape
    nnz = int(X.indptr[-1] - X.indptr[0])
    start = np.empty(D + 1, np.int64)  # (D + 1,)
    rows = np.empty(nnz, np.int64)  # (nnz,)
    vals = np.empty(nnz, W.dtype)  # (nnz,)
    bad = kernels()["csr_to_columns"](X.indptr, X.indices, X.data, D, start, rows, vals)
    if bad >= 0:  # the position of the first index out of range (negative ones too)
        raise ValueError(f"sparse input has column index {X.indices[bad]}, outside "
                         f"[0, {D}): the matrix's indices do not match its shape (scipy's "
                         f"X.check_format(full_check=True) finds such entries)")
    return SparseColumns(start, rows, vals, (B, D))


def sparse_times_wt(cols, W, out):
    """F1's product ``out = X Wᵀ`` (B, H) for ``cols = sparse_columns(X, W)``."""
    kernels()["columns_times_wt"](cols.start, cols.rows, cols.vals, W, out,
                                  np.empty(W.shape[0], W.dtype))
    return out


def sparse_weight_grad(cols, G, dW):
    """B7 ``dW = Gᵀ X`` (H, D) for ``cols = sparse_columns(X, W)`` and ``G`` (B, H)."""
    kernels()["columns_grad"](cols.start, cols.rows, cols.vals, G, dW,
                              np.empty(dW.shape[0], dW.dtype))
    return dW
