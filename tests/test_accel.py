"""The accelerator's compiled kernels (handgrad._accel, numba) against the NumPy path.

Each kernel replaces a few NumPy passes with one; these tests hold them to the same
values, in float32 and float64, for every variant the NumPy path handles. The
trajectories against torch.optim run in tests/test_optim.py under both paths
(the ``accel_mode`` fixture), and so do the autograd comparisons of tests/test_model.py.
"""

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

import handgrad
from handgrad import _accel
from handgrad.model import (
    OUTPUT_LAYERS,
    activation_backward,
    activation_forward,
    hidden_backward,
    hidden_forward,
    softmax_cross_entropy_backward,
    softmax_cross_entropy_forward,
)
from handgrad.optim import SGD, Adam, AdamW
from handgrad.train import Trainer

needs_numba = pytest.mark.skipif(
    not _accel.installed(),
    reason="numba is not installed (pip install 'handgrad[accel]'): no kernels to compare")

TOL = {"float32": {"rtol": 2e-6, "atol": 1e-7}, "float64": {"rtol": 1e-13, "atol": 1e-15}}


def both(fn):
    """``fn()`` run with the kernels and then with the NumPy path: (accelerated, numpy)."""
    old = _accel.use(True)
    try:
        fast = fn()
        _accel.use(False)
        slow = fn()
    finally:
        _accel.use(old)
    return fast, slow


@needs_numba
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("cls, kwargs", [
    (Adam, {}),
    (Adam, {"lr": 3e-3, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 1e-2}),
    (AdamW, {}),
    (AdamW, {"lr": 1e-2, "weight_decay": 0.1}),
])
@pytest.mark.parametrize("n", [1, 1000, 3 * (1 << 17) + 5])
def test_adam_kernel_equals_the_numpy_update(dtype, cls, kwargs, n):
    """Lengths of one element, less than a NumPy block, and several blocks and a part."""
    rng = np.random.default_rng(0)
    p0 = rng.normal(size=n).astype(dtype)
    grads = [rng.normal(size=n).astype(dtype) for _ in range(8)]

    def run():
        p, opt = p0.copy(), cls(**kwargs)
        for g in grads:
            opt.step(p, g)
        return p, opt.state["flat"]["m"], opt.state["flat"]["v"]

    fast, slow = both(run)
    for a, b in zip(fast, slow):
        assert a.dtype == np.dtype(dtype)
        np.testing.assert_allclose(a, b, **TOL[dtype])


@needs_numba
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kwargs", [
    {"lr": 0.1, "momentum": 0.9},
    {"lr": 0.05, "momentum": 0.9, "nesterov": True},  # scikit-learn's solver="sgd"
    {"lr": 0.05, "momentum": 0.5, "dampening": 0.3, "weight_decay": 1e-2},
    {"lr": 0.01, "momentum": 0.8, "nesterov": True, "weight_decay": 1e-3},
])
@pytest.mark.parametrize("n", [1, 1000, 3 * (1 << 17) + 5])
def test_sgd_momentum_kernel_equals_the_numpy_update(dtype, kwargs, n):
    rng = np.random.default_rng(3)
    p0 = rng.normal(size=n).astype(dtype)
    grads = [rng.normal(size=n).astype(dtype) for _ in range(6)]

    def run():
        p, opt = p0.copy(), SGD(**kwargs)
        for g in grads:
            opt.step(p, g)
        return p, opt.state["flat"]["momentum_buffer"]

    fast, slow = both(run)
    # rounding apart (the kernel's μ b + c d may be contracted into one FMA): entries of
    # order 1 agree to a few ulps, those cancelled to near 0 to a few ulps of 1
    tol = {"float32": {"rtol": 2e-6, "atol": 1e-6}, "float64": {"rtol": 1e-13, "atol": 1e-14}}
    for a, b in zip(fast, slow):
        assert a.dtype == np.dtype(dtype)
        np.testing.assert_allclose(a, b, **tol[dtype])


@needs_numba
def test_adam_kernel_updates_dict_params_and_leaves_strided_ones_to_numpy():
    rng = np.random.default_rng(1)
    base = rng.normal(size=(6, 8))
    params = {"w": base[:, ::2].copy(), "strided": base[:, 1::2]}  # one C-contiguous, one not
    grads = {"w": rng.normal(size=(6, 4)), "strided": rng.normal(size=(6, 4))}

    def run():
        p = {k: v.copy() if k == "w" else base.copy()[:, 1::2] for k, v in params.items()}
        Adam(lr=1e-2).step(p, grads)
        return p

    fast, slow = both(run)
    for k in params:
        np.testing.assert_allclose(fast[k], slow[k], rtol=1e-13, atol=1e-15, err_msg=k)


@needs_numba
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("B, H", [(1, 1), (7, 33), (64, 300)])
def test_bias_relu_and_relu_backward_equal_numpy(dtype, B, H):
    rng = np.random.default_rng(2)
    X = rng.normal(size=(B, 5)).astype(dtype)
    W, b = rng.normal(size=(H, 5)).astype(dtype), rng.normal(size=H).astype(dtype)
    X[0, :] = 0  # a row whose Q is exactly b: ReLU at and around its kink
    b[0] = 0  # Q[0, 0] = 0 exactly: derivative 0 there

    G0 = rng.normal(size=(B, H)).astype(dtype)

    def run():
        Q, h = np.empty((B, H), dtype), np.empty((B, H), dtype)
        hidden_forward("relu", X, W, b, Q, h)
        G = G0.copy()
        hidden_backward("relu", G, Q, h, np.empty((B, H), bool))
        return Q, h, G

    fast, slow = both(run)
    for a, s in zip(fast, slow):
        np.testing.assert_array_equal(a, s)  # no rounding: the same operations
    assert fast[1][0, 0] == 0 and fast[2][0, 0] == 0  # h and ∂L/∂Q at Q = 0


@needs_numba
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("weights", ["mean", "per-example"])
@pytest.mark.parametrize("order", ["C", "F"])
def test_softmax_cross_entropy_kernels_equal_numpy(dtype, weights, order):
    rng = np.random.default_rng(4)
    B, M = 37, 10
    O = np.asarray(rng.normal(size=(B, M)) * 5, dtype=dtype, order=order)
    O[3] = [1e4] + [-1e4] * (M - 1)  # a row whose exp would overflow without the max
    target = rng.integers(0, M, B).astype(np.intp)
    w = 1.0 / B if weights == "mean" else (lambda s: (s / s.sum()).astype(dtype))(
        rng.uniform(0, 2, B))

    def run(forward, backward):
        logP, P = (np.empty((B, M), dtype, order=order) for _ in range(2))
        out = np.empty((B, M), dtype, order=order)
        loss = forward(O, target, w, logP, P, np.empty((B, 1), dtype))
        backward(P, target, w, out)
        return loss, logP, P, out

    old = _accel.use(True)
    try:
        pair = _accel.output_layer("softmax", O, target, w)
    finally:
        _accel.use(old)
    assert pair == _accel.OUTPUT_LAYERS["softmax"]
    fast = run(*pair)
    slow = run(softmax_cross_entropy_forward, softmax_cross_entropy_backward)
    assert fast[0] == pytest.approx(slow[0], rel=10 * TOL[dtype]["rtol"])
    for a, b in zip(fast[1:], slow[1:]):
        np.testing.assert_allclose(a, b, rtol=TOL[dtype]["rtol"], atol=4 * TOL[dtype]["atol"])
    assert np.isfinite(fast[0])


@needs_numba
def test_soft_targets_and_other_activations_keep_the_numpy_path():
    """The kernels cover integer labels and ReLU; the rest is NumPy whatever the switch."""
    rng = np.random.default_rng(5)
    Q = rng.normal(size=(4, 6))
    for name in ("tanh", "logistic", "identity"):
        fast, slow = both(lambda: hidden_backward(name, Q.copy(), Q, np.tanh(Q),
                                                  np.empty_like(Q)))
        np.testing.assert_array_equal(fast, slow)
    soft = rng.dirichlet(np.ones(6), size=4)
    O = rng.normal(size=(4, 6))
    old = _accel.use(True)
    try:
        assert _accel.output_layer("softmax", O, soft, 0.25) is None  # soft targets
        assert _accel.output_layer("softmax", O, np.zeros(4), 0.25) is None  # float labels
        assert _accel.output_layer("softmax", O, np.zeros(4, int), 0.25) is not None
        assert _accel.output_layer("softmax", O, np.zeros(4, int),
                                   np.full(4, 0.25, np.float32)) is None  # w of another dtype
        for output in set(OUTPUT_LAYERS) - set(_accel.OUTPUT_LAYERS):
            assert _accel.output_layer(output, O, np.zeros(4, int), 0.25) is None
    finally:
        _accel.use(old)


def test_the_kernels_take_only_dense_float_arrays_of_one_dtype():
    sparse = pytest.importorskip("scipy.sparse")
    old = _accel.use(True)
    try:
        if not _accel.enabled():
            assert not _accel.takes(np.zeros(3))  # off: nothing is taken
            return
        f32, f64 = np.zeros((3, 4), np.float32), np.zeros((3, 4))
        assert _accel.takes(f32, f32) and _accel.takes(f64)
        assert not _accel.takes(sparse.csr_matrix(f64), f64)  # sparse: matmul gives dtype('O')
        assert not _accel.takes(f32, f64)  # mixed dtypes
        assert not _accel.takes(f64.astype(np.float16))
        assert not _accel.takes(np.zeros((3, 4), int))
        assert not _accel.takes([[0.0]])  # not an array
        assert _accel.takes(f64[:, ::2]) and not _accel.takes(f64[:, ::2], contiguous=True)
        _accel.use(False)
        assert not _accel.takes(f64)
    finally:
        _accel.use(old)


@needs_numba
def test_layer_functions_are_the_numpy_reference_whatever_the_switch(monkeypatch):
    """handgrad.trace and other direct callers of the layer functions get the readable
    path (and its ReLU mask in scratch) even with the kernels on."""
    def refuse():
        raise AssertionError("a layer function reached the compiled kernels")

    rng = np.random.default_rng(8)
    Q, G = rng.normal(size=(5, 7)), rng.normal(size=(5, 7))
    Q[0, 0] = 0.0
    old = _accel.use(True)
    monkeypatch.setattr(_accel, "kernels", refuse)
    try:
        scratch = np.ones((5, 7), bool)
        out = activation_backward("relu", G.copy(), Q, np.maximum(Q, 0), scratch)
        np.testing.assert_array_equal(scratch, Q > 0)  # the mask the trace displays
        np.testing.assert_array_equal(out, G * (Q > 0))
        activation_forward("relu", Q, np.empty_like(Q))
        O, y = rng.normal(size=(5, 3)), np.array([0, 1, 2, 1, 0])
        logP, P = np.empty((5, 3)), np.empty((5, 3))
        softmax_cross_entropy_forward(O, y, 0.2, logP, P, np.empty((5, 1)))
        softmax_cross_entropy_backward(P, y, 0.2, np.empty((5, 3)))
    finally:
        _accel.use(old)


@needs_numba
def test_trace_runs_with_the_kernels_on():
    model = handgrad.MLP(4, 5, 3, dtype="float64", seed=0)
    x = np.array([0.5, -1.0, 2.0, 0.0])
    fast, slow = both(lambda: handgrad.trace(model, x, 1))
    assert fast.to_dict() == slow.to_dict()


@needs_numba
@pytest.mark.parametrize("fmt", ["csr", "csc"])
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_sparse_inputs_give_the_same_training_with_and_without_kernels(fmt, optimizer):
    """A SciPy sparse X (the first layer's input): CSR takes the by-column kernels for
    F1 and B7, CSC SciPy's products; both match the NumPy path, and so does dense X."""
    sparse = pytest.importorskip("scipy.sparse")
    rng = np.random.default_rng(9)
    X = rng.normal(size=(200, 30)) * (rng.random((200, 30)) < 0.1)
    y = rng.integers(0, 4, 200)
    Xs = sparse.csr_matrix(X).asformat(fmt)

    def run(data):
        model = handgrad.MLP(30, (16, 8), 4, dtype="float64", seed=0)
        loss, grads = model.loss_and_grads(data, y)
        grads = {k: v.copy() for k, v in grads.items()}
        opt = Adam(1e-2) if optimizer == "adam" else handgrad.optim.SGD(0.1)
        history = handgrad.fit(model, data, y, optimizer=opt, epochs=2, batch_size=32, seed=0)
        return loss, grads, model.param_buffer.copy(), history.train_loss

    for data in (Xs, X):
        fast, slow = both(lambda: run(data))
        assert fast[0] == pytest.approx(slow[0], rel=1e-12)
        for k in fast[1]:
            np.testing.assert_allclose(fast[1][k], slow[1][k], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(fast[2], slow[2], rtol=1e-9, atol=1e-11)
        np.testing.assert_allclose(fast[3], slow[3], rtol=1e-9)


@needs_numba
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
@pytest.mark.parametrize("B, D, H, density", [(1, 1, 1, 1.0), (7, 50, 5, 0.1),
                                              (64, 300, 33, 0.02), (5, 40, 3, 0.0)])
def test_sparse_kernels_equal_scipys_products(dtype, index_dtype, B, D, H, density):
    """F1 (X Wᵀ) and B7 (Gᵀ X) by column against SciPy, with empty rows and columns,
    duplicate entries (summed, as SciPy sums them) and unsorted column indices."""
    sparse = pytest.importorskip("scipy.sparse")
    rng = np.random.default_rng(B * D + H)
    X = sparse.random(B, D, density=density, format="csr", dtype=dtype, random_state=rng)
    if X.nnz:  # each row's entries reversed, and the first entry stored twice
        data, indices, indptr = [], [], [0]
        for n in range(B):
            a, b = X.indptr[n], X.indptr[n + 1]
            extra = 1 if n == 0 and b > a else 0
            data += [*X.data[a:b][::-1], *X.data[b - extra:b]]
            indices += [*X.indices[a:b][::-1], *X.indices[b - extra:b]]
            indptr.append(indptr[-1] + b - a + extra)
        X = sparse.csr_matrix((np.array(data, dtype), np.array(indices), np.array(indptr)),
                              shape=(B, D))
    X.indices, X.indptr = X.indices.astype(index_dtype), X.indptr.astype(index_dtype)
    W = rng.normal(size=(H, D)).astype(dtype)
    G = rng.normal(size=(B, H)).astype(dtype)
    old = _accel.use(True)
    try:
        cols = _accel.sparse_columns(X, W)
        assert cols is not None
        out = np.full((B, H), np.nan, dtype)
        dW = np.full((H, D), np.nan, dtype)
        _accel.sparse_times_wt(cols, W, out)
        _accel.sparse_weight_grad(cols, G, dW)
    finally:
        _accel.use(old)
    # against float64 products, within the rounding a sum of these terms can carry
    Xd, Wd, Gd = X.toarray().astype(np.float64), W.astype(np.float64), G.astype(np.float64)
    eps = 8 * (D + 2) * np.finfo(dtype).eps
    assert np.all(np.abs(out - Xd @ Wd.T) <= eps * (np.abs(Xd) @ np.abs(Wd.T)) + 1e-300)
    assert np.all(np.abs(dW - Gd.T @ Xd) <= eps * (np.abs(Gd.T) @ np.abs(Xd)) + 1e-300)


@needs_numba
def test_sparse_kernels_refuse_what_they_do_not_take_and_bad_indices():
    sparse = pytest.importorskip("scipy.sparse")
    W = np.ones((3, 4))
    X = sparse.csr_matrix(np.eye(2, 4))
    old = _accel.use(True)
    try:
        assert _accel.sparse_columns(X.tocsc(), W) is None  # CSC: SciPy's products
        assert _accel.sparse_columns(X.astype(np.float32), W) is None  # dtype differs
        assert _accel.sparse_columns(X, np.ones((3, 5))) is None  # width differs
        assert _accel.sparse_columns(X, np.asfortranarray(W)) is None
        bad = sparse.csr_matrix((np.ones(2), np.array([1, 7]), np.array([0, 1, 2])),
                                shape=(2, 4))  # SciPy does not check index bounds here
        with pytest.raises(ValueError, match="column index 7, outside"):
            _accel.sparse_columns(bad, W)
        for negative in (-1, -3):  # -1 was the kernel's "all in range" answer
            bad.indices[1] = negative
            with pytest.raises(ValueError, match=f"column index {negative}, outside"):
                _accel.sparse_columns(bad, W)
        _accel.use(False)
        assert _accel.sparse_columns(X, W) is None  # switched off
    finally:
        _accel.use(old)


@needs_numba
@pytest.mark.parametrize("output", list(OUTPUT_LAYERS))
@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_every_output_gives_the_same_gradients_with_and_without_kernels(output, activation):
    """The outputs without a compiled pair use OUTPUT_LAYERS' NumPy pair under the switch;
    their hidden ReLU layers may still use the kernels."""
    rng = np.random.default_rng(10)
    M = 1 if output in ("logistic", "identity", "exp") else 4
    X = rng.normal(size=(40, 6))
    if output == "softmax":
        Y = rng.integers(0, M, 40)
    elif output == "logistic":
        Y = (rng.random((40, M)) < 0.5).astype(float)
    elif output == "exp":
        Y = rng.poisson(2.0, (40, M)).astype(float)
    else:
        Y = rng.normal(size=(40, M))
    w = rng.uniform(0.5, 2, 40)

    def run():
        model = handgrad.MLP(6, (9, 5), M, activation=activation, dtype="float64", seed=1,
                             output=output)
        loss, grads = model.loss_and_grads(X, Y, sample_weight=w, l2=0.1)
        return loss, model.grad_buffer.copy()

    fast, slow = both(run)
    assert fast[0] == pytest.approx(slow[0], rel=1e-13)
    np.testing.assert_allclose(fast[1], slow[1], rtol=1e-12, atol=1e-14)


@needs_numba
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("make_opt", [lambda: Adam(1e-3), lambda: handgrad.optim.SGD(0.05),
                                      lambda: AdamW(1e-3, weight_decay=0.05)],
                         ids=["adam", "sgd", "adamw"])
def test_training_trajectories_are_the_same_with_and_without_kernels(dtype, make_opt):
    """Whole epochs through the Trainer (fused SGD included): the same weights and losses."""
    rng = np.random.default_rng(6)
    X = rng.normal(size=(600, 20)).astype(dtype)
    y = rng.integers(0, 5, 600)

    def run():
        model = handgrad.MLP(20, (32, 16), 5, dtype=dtype, seed=0)
        h = handgrad.fit(model, X, y, optimizer=make_opt(), epochs=3, batch_size=64, seed=0)
        return model.param_buffer.copy(), np.array(h.train_loss)

    (wa, la), (wb, lb) = both(run)
    tol = {"rtol": 2e-4, "atol": 2e-5} if dtype == "float32" else {"rtol": 1e-9, "atol": 1e-11}
    np.testing.assert_allclose(wa, wb, **tol)
    np.testing.assert_allclose(la, lb, **tol)


@needs_numba
@pytest.mark.parametrize("optimizer", [Adam, lambda: handgrad.optim.SGD(0.05)],
                         ids=["adam", "fused-sgd"])
def test_no_memory_is_allocated_per_step_with_the_kernels(optimizer):
    import tracemalloc

    old = _accel.use(True)
    try:
        rng = np.random.default_rng(0)
        X = rng.random((2048, 64), dtype=np.float32)
        y = rng.integers(0, 10, 2048)
        trainer = Trainer(handgrad.MLP(64, 256, 10, seed=0), X, y, optimizer=optimizer(),
                          epochs=1, batch_size=128, seed=0)
        trainer.run()  # compiles (or loads) the kernels, builds every buffer
        trainer.epochs = 3
        tracemalloc.start()
        trainer.run()
        current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    finally:
        _accel.use(old)
    assert current < 4096
    assert peak < 2 * 2048 * 8 + 16384  # the epochs' permutations, nothing per step


def test_switch_and_description(monkeypatch):
    old = _accel.use(False)
    try:
        assert not _accel.enabled()
        if _accel.installed():
            assert _accel.describe()["status"].startswith("off")
            _accel.use(True)
            assert _accel.enabled() and _accel.describe() == {
                "backend": "numba", "version": _accel.describe()["version"], "status": "active"}
    finally:
        _accel.use(old)
    monkeypatch.setitem(_accel._state, "installed", False)
    monkeypatch.setitem(_accel._state, "on", None)
    assert not _accel.enabled()
    assert "pip install 'handgrad[accel]'" in _accel.describe()["status"]


def test_environment_variable_turns_the_kernels_off():
    code = ("from handgrad import _accel, sysinfo; print(_accel.enabled(), "
            "_accel.describe()['status'])")
    env = dict(os.environ, HANDGRAD_NO_ACCEL="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.split(maxsplit=1)
    assert out[0] == "False"
    if _accel.installed():
        assert "HANDGRAD_NO_ACCEL=1" in out[1]


def test_a_numba_that_fails_to_import_leaves_the_numpy_path(monkeypatch):
    """A numba too old for this NumPy raises ImportError on import: training must not."""
    monkeypatch.setitem(_accel._state, "installed", True)
    monkeypatch.setitem(_accel._state, "on", None)
    monkeypatch.setattr(_accel, "_kernels", None)
    monkeypatch.delitem(_accel._state, "error", raising=False)

    def broken():
        raise ImportError("Numba needs NumPy 2.3 or less")

    monkeypatch.setattr(_accel, "kernels", broken)
    monkeypatch.delenv("HANDGRAD_NO_ACCEL", raising=False)
    assert not _accel.enabled()
    assert "failed to import" in _accel.describe()["status"]
    model = handgrad.MLP(5, 4, 3, seed=0)
    handgrad.fit(model, np.eye(5), np.arange(5) % 3, epochs=1, batch_size=5, seed=0)
    assert np.all(np.isfinite(model.param_buffer))
    monkeypatch.delitem(_accel._state, "error", raising=False)


@pytest.mark.parametrize("value, off", [
    ("1", True), ("true", True), ("YES", True), (" on ", True),
    ("", False), ("0", False), ("false", False), ("No", False), ("off", False)])
def test_environment_variable_takes_the_usual_boolean_spellings(monkeypatch, value, off):
    monkeypatch.setenv("HANDGRAD_NO_ACCEL", value)
    assert _accel.disabled_by_environment() == (off, None)
    monkeypatch.setitem(_accel._state, "on", None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a known spelling warns about nothing
        assert _accel.enabled() == (not off and _accel.installed() and _accel._loads())
    monkeypatch.setitem(_accel._state, "on", None)


def test_an_unknown_environment_value_is_named_in_a_warning(monkeypatch):
    monkeypatch.setenv("HANDGRAD_NO_ACCEL", "maybe")
    monkeypatch.setitem(_accel._state, "on", None)
    monkeypatch.delitem(_accel._state, "error", raising=False)  # no earlier import failure
    with pytest.warns(RuntimeWarning, match=r"HANDGRAD_NO_ACCEL='maybe' is not a yes/no value "
                                            r"\(1, true, yes, on switch the accelerator off"):
        assert _accel.enabled() is False
    if _accel.installed():
        assert "HANDGRAD_NO_ACCEL='maybe' is not a yes/no value" in _accel.describe()["status"]
    monkeypatch.setitem(_accel._state, "on", None)
