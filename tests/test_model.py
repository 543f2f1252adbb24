"""The model's forward and hand-derived backward pass (F1–F5, B1–B7)."""

import math

import numpy as np
import pytest

import handgrad
from handgrad.optim import SGD
from handgrad.model import (
    ACTIVATIONS,
    Dropout,
    activation_backward,
    activation_forward,
    linear_backward,
    linear_forward,
    softmax_cross_entropy_backward,
    softmax_cross_entropy_forward,
)

def numeric_grad(f, a, eps=1e-6):
    """Central finite differences of scalar f() with respect to array a (float64)."""
    g = np.zeros_like(a)
    flat, gflat = a.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        plus = f()
        flat[i] = old - eps
        minus = f()
        flat[i] = old
        gflat[i] = (plus - minus) / (2 * eps)
    return g


# --------------------------------------------------------------------------- #
# Per-layer finite-difference checks
# --------------------------------------------------------------------------- #


def test_linear_layer_gradients_match_finite_differences(rng):
    B, D, H = 5, 4, 3
    X = rng.normal(size=(B, D))
    W = rng.normal(size=(H, D))
    b = rng.normal(size=H)
    R = rng.normal(size=(B, H))  # L = Σ R ⊙ out, so ∂L/∂out = R

    def loss():
        return float((linear_forward(X, W, b, np.empty((B, H))) * R).sum())

    dW, db, dX = np.empty_like(W), np.empty_like(b), np.empty_like(X)
    linear_backward(R, X, W, dW, db, dX)
    np.testing.assert_allclose(dW, numeric_grad(loss, W), rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(db, numeric_grad(loss, b), rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(dX, numeric_grad(loss, X), rtol=1e-7, atol=1e-9)
    # a caller's reused vector of ones gives the same B3 sums
    db_ones = np.empty_like(b)
    linear_backward(R, X, W, np.empty_like(W), db_ones, None, np.ones(B))
    np.testing.assert_allclose(db_ones, db, rtol=1e-14, atol=1e-15)


def test_output_layer_buffers_are_stored_by_column():
    # The softmax reduces over the M classes; see model._by_column.
    ws = handgrad.MLP(6, 5, 4, seed=0).workspace(7)
    for a in (ws.Q[-1], ws.G[-1], ws.P, ws.logP):
        assert a.shape == (7, 4) and a.flags.f_contiguous and not a.flags.c_contiguous
    assert ws.Q[0].flags.c_contiguous and ws.ones.shape == (7,) and (ws.ones == 1).all()


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_gradients_match_finite_differences(rng, name):
    B, H = 4, 6
    Q = rng.normal(size=(B, H))
    Q[np.abs(Q) < 1e-3] = 0.5  # keep finite differences away from ReLU's kink
    R = rng.normal(size=(B, H))

    def loss():
        return float((activation_forward(name, Q, np.empty((B, H))) * R).sum())

    h = activation_forward(name, Q, np.empty((B, H)))
    scratch = np.empty((B, H), bool if name == "relu" else float)
    G = activation_backward(name, R.copy(), Q, h, scratch)
    np.testing.assert_allclose(G, numeric_grad(loss, Q), rtol=1e-7, atol=1e-9)


def test_relu_derivative_at_zero_is_zero(accel_mode):
    """The specification's convention at the kink: a_j = 1[Q_j > 0]."""
    Q = np.array([[-1.0, 0.0, 2.0]])
    h = activation_forward("relu", Q, np.empty_like(Q))
    G = activation_backward("relu", np.ones_like(Q), Q, h, np.empty(Q.shape, bool))
    np.testing.assert_array_equal(G, [[0.0, 0.0, 1.0]])


def test_logistic_does_not_overflow():
    Q = np.array([[-1e4, 0.0, 1e4]])
    with np.errstate(all="raise"):
        h = activation_forward("logistic", Q, np.empty_like(Q))
    np.testing.assert_allclose(h, [[0.0, 0.5, 1.0]])


@pytest.mark.parametrize("soft", [False, True])
def test_softmax_cross_entropy_gradient_matches_finite_differences(rng, soft):
    """B1–B2: the fused backward equals the derivative of F4–F5."""
    B, M = 5, 4
    O = rng.normal(size=(B, M)) * 3
    if soft:
        target = rng.dirichlet(np.ones(M), size=B)
    else:
        target = rng.integers(0, M, size=B)
    w = rng.uniform(0.1, 1, size=B)
    w /= w.sum()

    def loss():
        return softmax_cross_entropy_forward(O.copy(), target, w, np.empty((B, M)),
                                             np.empty((B, M)), np.empty((B, 1)))

    P = np.empty((B, M))
    softmax_cross_entropy_forward(O, target, w, np.empty((B, M)), P, np.empty((B, 1)))
    G = softmax_cross_entropy_backward(P, target, w, np.empty((B, M)))
    np.testing.assert_allclose(G, numeric_grad(loss, O), rtol=1e-6, atol=1e-9)


# --------------------------------------------------------------------------- #
# Whole-model finite-difference checks
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("hidden", [(), 7, (6, 5), (4, 3, 5)])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_gradcheck_whole_model(rng, hidden, activation, accel_mode):
    model = handgrad.MLP(5, hidden, 4, activation=activation, dtype="float64", seed=1)
    X = rng.normal(size=(8, 5))
    y = rng.integers(0, 4, size=8)
    errors = handgrad.gradcheck(model, X, y)
    assert set(errors) == set(model.params)
    assert max(errors.values()) < 1e-5, errors


def test_gradcheck_soft_targets_and_sample_weights(rng, accel_mode):
    model = handgrad.MLP(6, (5,), 3, dtype="float64", seed=2)
    X = rng.normal(size=(10, 6))
    Y = rng.dirichlet(np.ones(3), size=10)
    s = rng.uniform(0, 2, size=10)
    errors = handgrad.gradcheck(model, X, Y, sample_weight=s)
    assert max(errors.values()) < 1e-5, errors


def test_gradcheck_detects_a_wrong_gradient(rng, monkeypatch):
    """The checker itself must fail when the backward is wrong."""
    import handgrad.model as hm

    model = handgrad.MLP(3, 4, 2, dtype="float64", seed=0)
    X, y = rng.normal(size=(5, 3)), rng.integers(0, 2, size=5)
    original = hm.linear_backward

    def broken(G, X, W, dW, db, dX=None, ones=None, columns=None):
        out = original(G, X, W, dW, db, dX, ones, columns)
        if db is not None:
            db *= 1.1  # a 10% error in every bias gradient
        return out

    monkeypatch.setattr(hm, "linear_backward", broken)
    errors = handgrad.gradcheck(model, X, y)
    assert errors["b1"] > 1e-3 and errors["b2"] > 1e-3
    assert errors["W1"] < 1e-6


@pytest.fixture(scope="module")
def trained_models():
    """Models trained to a low loss on the embedded digits, as users' model files are."""
    from handgrad.datasets import Preprocessor, load_dataset

    ds = load_dataset("digits")
    prep = Preprocessor("divide").fit(ds.x_train)
    X = prep.transform(ds.x_train)
    models = []
    for seed, (hidden, activation, optimizer, epochs) in enumerate([
            (64, "relu", handgrad.optim.Adam(1e-2), 15),
            ((32, 16), "relu", handgrad.optim.Adam(1e-2), 15),
            (128, "relu", handgrad.optim.Adam(1e-2), 15),
            (64, "tanh", handgrad.optim.SGD(0.1, momentum=0.9), 15),
            ((), "relu", handgrad.optim.Adam(1e-2), 15)]):
        model = handgrad.MLP(64, hidden, 10, activation=activation, seed=seed)
        handgrad.fit(model, X, ds.y_train, optimizer=optimizer, epochs=epochs, batch_size=32,
                     seed=0)
        models.append(model)
    x_test = prep.transform(ds.x_test)
    assert min(m.evaluate(x_test, ds.y_test)[1] for m in models) > 0.9  # really trained
    return models, x_test, ds.y_test


@pytest.mark.parametrize("inputs", ["random", "data"])
def test_gradcheck_passes_trained_models(trained_models, inputs):
    """Trained models have vanishing gradients, where finite differences are rounding
    noise: a relative error alone failed 5 of 6 of them (issue #21)."""
    models, x_test, y_test = trained_models
    rng = np.random.default_rng(0)
    for model in models:
        if inputs == "random":  # what `handgrad gradcheck MODEL` feeds them
            X, y = rng.normal(size=(8, 64)), rng.integers(0, 10, 8)
        else:
            idx = rng.choice(len(y_test), 8, replace=False)
            X, y = x_test[idx], y_test[idx]
        result = handgrad.gradcheck(model, X, y, max_checks=50)
        assert result.passed, (model, dict(result), result.floor)
        assert result.worst < 1e-5 and result.tolerance == 1e-5
        # the floor is the finite differences' own noise, scaled to the tolerance
        assert result.noise == pytest.approx(8 * np.finfo(np.float64).eps
                                             * max(1.0, result.loss) / 1e-5 + 1e-10)
        assert result.floor == pytest.approx(result.noise / 1e-5)


@pytest.mark.parametrize("bug", ["bias gradient 10% off", "B2 0.1% off"])
def test_gradcheck_fails_a_planted_wrong_gradient_on_trained_models(trained_models,
                                                                    monkeypatch, bug):
    import handgrad.model as hm

    if bug == "bias gradient 10% off":
        original = hm.linear_backward

        def broken(G, X, W, dW, db, dX=None, ones=None, columns=None):
            out = original(G, X, W, dW, db, dX, ones, columns)
            if db is not None:
                db *= 1.1
            return out

        monkeypatch.setattr(hm, "linear_backward", broken)
    else:
        from handgrad import _accel

        def planted(original):
            def broken(P, target, w, out):
                original(P, target, w, out)
                out *= 1.001  # B2: ∂L/∂O off by 0.1%, so every gradient is
                return out

            return broken

        # the model dispatches through OUTPUT_LAYERS, which holds the functions
        # themselves: the NumPy pair, and the accelerator's compiled one where it is on
        for layers in (hm.OUTPUT_LAYERS, _accel.OUTPUT_LAYERS):
            forward, backward = layers["softmax"]
            monkeypatch.setitem(layers, "softmax", (forward, planted(backward)))
    models, x_test, y_test = trained_models
    rng = np.random.default_rng(1)
    for model in models:
        for X, y in ((rng.normal(size=(8, 64)), rng.integers(0, 10, 8)),
                     (x_test[:64], y_test[:64])):
            result = handgrad.gradcheck(model, X, y, max_checks=50)
            assert not result.passed, (model, dict(result))
            if bug == "bias gradient 10% off":
                assert all(name.startswith("b") for name in result.failures)


@pytest.mark.parametrize("kwargs, message", [
    ({"eps": 0}, "eps must be a positive finite step"),
    ({"eps": float("nan")}, "eps must be a positive finite step"),
    ({"tolerance": -1.0}, "tolerance must be a positive number"),
])
def test_gradcheck_refuses_bad_settings(rng, kwargs, message):
    model = handgrad.MLP(3, 4, 2, dtype="float64", seed=0)
    with pytest.raises(ValueError, match=message):
        handgrad.gradcheck(model, rng.normal(size=(2, 3)), [0, 1], **kwargs)


def test_gradcheck_with_max_checks_samples_entries(rng):
    model = handgrad.MLP(20, 30, 5, dtype="float64", seed=3)
    X, y = rng.normal(size=(4, 20)), rng.integers(0, 5, size=4)
    errors = handgrad.gradcheck(model, X, y, max_checks=10)
    assert max(errors.values()) < 1e-6


# --------------------------------------------------------------------------- #
# PyTorch autograd as an oracle
# --------------------------------------------------------------------------- #


def torch_loss_and_grads(model, X, y, sample_weight=None):
    torch = pytest.importorskip("torch")  # the oracle: tests that call this skip without it
    acts = {"relu": torch.relu, "tanh": torch.tanh, "logistic": torch.sigmoid,
            "identity": lambda t: t}
    act = acts[model.config.activation]
    params = {k: torch.tensor(v.astype(np.float64), requires_grad=True)
              for k, v in model.params.items()}
    h = torch.tensor(np.asarray(X, dtype=np.float64))
    K = model.n_layers
    for l in range(1, K + 1):
        h = h @ params[f"W{l}"].T + params[f"b{l}"]
        if l < K:
            h = act(h)
    logp = torch.log_softmax(h, dim=1)
    y = np.asarray(y)
    if y.ndim == 1:
        per = -logp[torch.arange(len(y)), torch.tensor(y)]
    else:
        per = -(torch.tensor(y, dtype=torch.float64) * logp).sum(dim=1)
    if sample_weight is None:
        loss = per.mean()
    else:
        s = torch.tensor(sample_weight, dtype=torch.float64)
        loss = (s * per).sum() / s.sum()
    loss.backward()
    return float(loss.detach()), {k: v.grad.numpy() for k, v in params.items()}


@pytest.mark.parametrize("trial", range(12))
def test_matches_pytorch_autograd_float64(trial, accel_mode):
    rng = np.random.default_rng(trial)
    D, M = int(rng.integers(1, 12)), int(rng.integers(2, 8))
    hidden = tuple(int(h) for h in rng.integers(1, 16, size=trial % 4))
    activation = ACTIVATIONS[trial % len(ACTIVATIONS)]
    model = handgrad.MLP(D, hidden, M, activation=activation, dtype="float64", seed=trial)
    B = int(rng.integers(1, 20))
    X = rng.normal(size=(B, D)) * 2
    y = rng.dirichlet(np.ones(M), size=B) if trial % 2 else rng.integers(0, M, size=B)
    s = rng.uniform(0, 3, size=B) if trial % 3 == 0 else None
    if s is not None:
        s[0] = 0.0  # a zero weight among positive ones is valid
        s[-1] += 0.5
    loss, grads = model.loss_and_grads(X, y, sample_weight=s)
    ref_loss, ref_grads = torch_loss_and_grads(model, X, y, s)
    assert loss == pytest.approx(ref_loss, rel=1e-12, abs=1e-14)
    for k in model.params:
        assert grads[k].dtype == np.float64
        np.testing.assert_allclose(grads[k], ref_grads[k], rtol=1e-10, atol=1e-13, err_msg=k)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_huge_logits_give_finite_loss_and_gradients(dtype, accel_mode):
    model = handgrad.MLP(3, 4, 3, dtype=dtype, seed=0)
    model.params["W2"][...] *= 1e6  # logits of order 1e6 (exp would overflow)
    X = np.array([[30.0, -20.0, 10.0], [-5.0, 40.0, 1.0]])
    y = np.array([0, 2])
    loss, grads = model.loss_and_grads(X, y)
    assert math.isfinite(loss)
    for g in grads.values():
        assert np.all(np.isfinite(g))
    if dtype == "float64":
        ref_loss, ref_grads = torch_loss_and_grads(model, X, y)
        assert loss == pytest.approx(ref_loss, rel=1e-12)
        for k in model.params:
            np.testing.assert_allclose(grads[k], ref_grads[k], rtol=1e-10, atol=1e-8)


def test_probabilities_of_huge_logits_are_finite_and_normalised():
    model = handgrad.MLP(2, (), 3, dtype="float32", seed=0)
    model.params["W1"][...] = [[1e30, 0], [0, 1e30], [-1e30, -1e30]]
    P = model.predict_proba(np.array([[1.0, 0.5], [0.0, 0.0]]))
    assert np.all(np.isfinite(P))
    np.testing.assert_allclose(P.sum(axis=1), 1.0, rtol=1e-6)


def test_float32_matches_pytorch_float32(accel_mode):
    rng = np.random.default_rng(7)
    model = handgrad.MLP(20, 16, 5, dtype="float32", seed=7)
    X = rng.normal(size=(32, 20)).astype(np.float32)
    y = rng.integers(0, 5, size=32)
    loss, grads = model.loss_and_grads(X, y)
    ref_loss, ref_grads = torch_loss_and_grads(model, X, y)
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    for k in model.params:
        np.testing.assert_allclose(grads[k], ref_grads[k], rtol=1e-4, atol=1e-6)


# --------------------------------------------------------------------------- #
# A worked example, computed by hand
# --------------------------------------------------------------------------- #


def test_tiny_worked_example_by_hand():
    """2 inputs, 2 hidden, 2 classes; every number below is worked out by hand.

    x = (1, 2), y = class 0 (one-hot (1, 0)).
    W¹ = [[1, −1], [0.5, 0.5]], b¹ = (0, −1)
    F1: Q = W¹x + b¹ = (1·1 − 1·2 + 0, 0.5·1 + 0.5·2 − 1) = (−1, 0.5)
    F2: h = max(0, Q) = (0, 0.5); ReLU mask a = (0, 1)
    W² = [[2, 2], [0, −2]], b² = (0, 0)
    F3: O = W²h + b² = (2·0 + 2·0.5, 0·0 − 2·0.5) = (1, −1)
    F4: P = softmax(1, −1) = (e/(e + 1/e), (1/e)/(e + 1/e)) = (σ(2), σ(−2))
        σ(2) = 1/(1 + e^{−2}) = 0.8807970779778823
    F5: L = −log P₀ = log(1 + e^{−2}) = 0.12692801104297263
    B2/B3: ∂L/∂O = ∂L/∂b² = P − y = (σ(2) − 1, σ(−2)) = (−σ(−2), σ(−2)), σ(−2) = 0.11920292202211755 =: s
    B4: ∂L/∂W² = (P − y) hᵀ = [[−s·0, −s·0.5], [s·0, s·0.5]] = [[0, −s/2], [0, s/2]]
    B5: ∂L/∂h = W²ᵀ (P − y) = (2·(−s) + 0·s, 2·(−s) − 2·s) = (−2s, −4s)
    B6: ∂L/∂Q = ∂L/∂h ⊙ a = (0, −4s)
    B7: ∂L/∂W¹ = (∂L/∂Q) xᵀ = [[0, 0], [−4s·1, −4s·2]] = [[0, 0], [−4s, −8s]]; ∂L/∂b¹ = (0, −4s)
    """
    model = handgrad.MLP(2, 2, 2, dtype="float64")
    model.set_params({
        "W1": [[1.0, -1.0], [0.5, 0.5]], "b1": [0.0, -1.0],
        "W2": [[2.0, 2.0], [0.0, -2.0]], "b2": [0.0, 0.0],
    })
    loss, g = model.loss_and_grads([[1.0, 2.0]], [0])
    s = 0.11920292202211755
    assert loss == pytest.approx(0.12692801104297263, rel=1e-14)
    np.testing.assert_allclose(model.predict_proba([[1.0, 2.0]]), [[1 - s, s]], rtol=1e-14)
    np.testing.assert_allclose(g["b2"], [-s, s], rtol=1e-14)
    np.testing.assert_allclose(g["W2"], [[0, -s / 2], [0, s / 2]], rtol=1e-14)
    np.testing.assert_allclose(g["b1"], [0, -4 * s], rtol=1e-14)
    np.testing.assert_allclose(g["W1"], [[0, 0], [-4 * s, -8 * s]], rtol=1e-14)


# --------------------------------------------------------------------------- #
# Structure, dtype and determinism
# --------------------------------------------------------------------------- #


def test_params_are_views_of_one_contiguous_buffer():
    model = handgrad.MLP(5, (4, 3), 2, seed=0)
    assert list(model.params) == ["W1", "b1", "W2", "b2", "W3", "b3"]
    assert model.params["W1"].shape == (4, 5) and model.params["W3"].shape == (2, 3)
    total = sum(p.size for p in model.params.values())
    assert model.param_buffer.size == total == model.n_params
    for name, p in model.params.items():
        assert np.shares_memory(p, model.param_buffer), name
        assert np.shares_memory(model.grads[name], model.grad_buffer), name
    model.param_buffer[:] = 0
    assert not model.params["W2"].any()


def test_float32_stays_float32(rng):
    model = handgrad.MLP(6, 5, 3, seed=0)
    assert model.param_buffer.dtype == np.float32
    X = rng.normal(size=(4, 6))  # float64 input is converted, not propagated
    loss, grads = model.loss_and_grads(X, [0, 1, 2, 0])
    assert isinstance(loss, float)
    assert all(g.dtype == np.float32 for g in grads.values())
    assert model.predict_proba(X).dtype == np.float32
    ws = model.workspace(4)
    assert all(a.dtype == np.float32 for a in ws.Q + ws.h + ws.G)


def test_initialisation_is_reproducible_and_suited_to_activation():
    a = handgrad.MLP(100, 200, 10, seed=5)
    b = handgrad.MLP(100, 200, 10, seed=5)
    c = handgrad.MLP(100, 200, 10, seed=6)
    np.testing.assert_array_equal(a.param_buffer, b.param_buffer)
    assert not np.array_equal(a.param_buffer, c.param_buffer)
    # He normal for ReLU: std sqrt(2 / fan_in)
    assert a.params["W1"].std() == pytest.approx(math.sqrt(2 / 100), rel=0.05)
    assert not a.params["b1"].any()
    # Glorot uniform otherwise: limit sqrt(6 / (fan_in + fan_out))
    t = handgrad.MLP(100, 200, 10, activation="tanh", seed=5)
    limit = math.sqrt(6 / 300)
    assert np.abs(t.params["W1"]).max() <= limit
    assert t.params["W1"].std() == pytest.approx(limit / math.sqrt(3), rel=0.05)


def test_predict_proba_in_batches_equals_one_batch(rng):
    model = handgrad.MLP(8, 16, 4, dtype="float64", seed=0)
    X = rng.normal(size=(1000, 8))
    full = model.predict_proba(X, batch_size=1000)
    chunked = model.predict_proba(X, batch_size=64)
    np.testing.assert_allclose(full, chunked, rtol=1e-13)
    np.testing.assert_allclose(full.sum(axis=1), 1, rtol=1e-13)
    np.testing.assert_array_equal(model.predict(X, batch_size=37), full.argmax(axis=1))


def test_predict_memory_is_bounded_by_the_chunk(rng):
    """10^5 rows with a wide hidden layer: workspaces stay chunk-sized."""
    model = handgrad.MLP(4, 512, 3, seed=0)
    X = rng.normal(size=(100_000, 4)).astype(np.float32)
    model.predict_proba(X, batch_size=1000)
    assert max(model._workspaces) <= 1000


def test_logistic_regression_when_hidden_is_empty(rng):
    model = handgrad.MLP(4, (), 3, dtype="float64", seed=0)
    assert list(model.params) == ["W1", "b1"]
    X = rng.normal(size=(6, 4))
    y = rng.integers(0, 3, size=6)
    loss, grads = model.loss_and_grads(X, y)
    ref_loss, ref = torch_loss_and_grads(model, X, y)
    assert loss == pytest.approx(ref_loss, rel=1e-12)
    np.testing.assert_allclose(grads["W1"], ref["W1"], rtol=1e-10)


# --------------------------------------------------------------------------- #
# Bad input raises ValueError naming the problem
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("kwargs, message", [
    ({"hidden": 0}, "hidden"),
    ({"hidden": -3}, "hidden"),
    ({"hidden": (4, 0)}, r"hidden\[1\]"),
    ({"hidden": 2.5}, "hidden"),
    ({"hidden": "many"}, "hidden"),
    ({"activation": "softsign"}, "softsign"),
    ({"dtype": "float16"}, "dtype"),
    ({"n_classes": 1}, "n_classes"),
])
def test_bad_architecture_raises(kwargs, message):
    args = {"n_inputs": 4, "hidden": 3, "n_classes": 2} | kwargs
    with pytest.raises(ValueError, match=message):
        handgrad.MLP(args.pop("n_inputs"), args.pop("hidden"), args.pop("n_classes"), **args)


@pytest.fixture
def small():
    return handgrad.MLP(3, 4, 3, seed=0)


@pytest.mark.parametrize("X, y, message", [
    (np.zeros((2, 4)), [0, 1], "3"),  # wrong number of features
    (np.zeros(3), [0], "2-D"),
    (np.zeros((2, 3)), [0, 1, 2], "labels"),
    (np.zeros((2, 3)), [0, 3], "out of range"),
    (np.zeros((2, 3)), [-1, 0], "out of range"),
    (np.zeros((2, 3)), [0.5, 1], "whole numbers"),
    (np.array([[0.0, np.nan, 1.0], [0, 0, 0]]), [0, 1], "NaN"),
    (np.array([[0.0, np.inf, 1.0], [0, 0, 0]]), [0, 1], "infinite"),
    (np.array([[1e300, 0, 0], [0, 0, 0]]), [0, 1], "too large"),
    (np.zeros((2, 3)), [[0.5, 0.5, 0.5], [1, 0, 0]], "sum to 1"),
    (np.zeros((2, 3)), [[1.5, -0.5, 0], [1, 0, 0]], "non-negative"),
    (np.zeros((2, 3)), [[1, 0], [1, 0]], "shape"),
    (np.zeros((0, 3)), [], "no rows"),
    (np.array([["a", "b", "c"]]), [0], "numeric"),
])
def test_bad_data_raises(small, X, y, message):
    with pytest.raises(ValueError, match=message):
        small.loss_and_grads(X, y)


@pytest.mark.parametrize("s, message", [
    ([1.0, -1.0], "non-negative"),
    ([0.0, 0.0], "sums to zero"),
    ([1.0, np.nan], "NaN"),
    ([1.0], "shape"),
])
def test_bad_sample_weights_raise(small, s, message):
    with pytest.raises(ValueError, match=message):
        small.loss_and_grads(np.zeros((2, 3)), [0, 1], sample_weight=s)


def test_set_params_checks_names_shapes_and_values(small):
    good = {k: v.copy() for k, v in small.params.items()}
    with pytest.raises(ValueError, match="missing"):
        small.set_params({k: v for k, v in good.items() if k != "b2"})
    with pytest.raises(ValueError, match="W1 has shape"):
        small.set_params(good | {"W1": np.zeros((3, 3))})
    with pytest.raises(ValueError, match="NaN"):
        small.set_params(good | {"b1": np.full(4, np.nan)})


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_all_finite_exact_even_when_the_sum_overflows(dtype):
    from handgrad.model import all_finite

    big = np.full(1000, np.finfo(dtype).max / 2, dtype)  # finite, but the sum overflows
    assert all_finite(big)
    for bad in (np.nan, np.inf, -np.inf):
        a = big.copy()
        a[-1] = bad
        assert not all_finite(a)
        b = np.zeros((7, 3), dtype)
        b[6, 2] = bad
        assert not all_finite(b) and not all_finite(b.T)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_finite_square_norm_measures_any_layout_and_refuses_non_finite(dtype, rng):
    from handgrad.model import _finite_square_norm

    base = rng.normal(size=(3000, 700)).astype(dtype)  # more than one 2^20 block
    want = float(np.sum(base.astype(np.float64) ** 2))
    rtol = 1e-5 if dtype == "float32" else 1e-12
    for a in (base, np.asfortranarray(base), base[:, ::3], base[::2], base.ravel(), base[5]):
        finite, norm2 = _finite_square_norm(a)
        exact = float(np.sum(a.astype(np.float64) ** 2))
        assert finite and norm2 == pytest.approx(exact, rel=rtol)
    assert _finite_square_norm(base)[1] == pytest.approx(want, rel=rtol)
    assert _finite_square_norm(np.empty((0, 4), dtype)) == (True, 0.0)
    for bad in (np.nan, np.inf, -np.inf):
        a = base.copy()
        a[2999, 699] = bad
        assert _finite_square_norm(a) == (False, None)
        assert _finite_square_norm(a.T)[0] is False
    # finite values whose squares overflow: still finite, the norm unknown
    big = np.full((4, 3), np.finfo(dtype).max / 2, dtype)
    assert _finite_square_norm(big) == (True, None)
    big[1, 1] = np.nan
    assert _finite_square_norm(big) == (False, None)


def test_check_X_reports_the_squared_norm_its_finite_check_measured(rng):
    model = handgrad.MLP(5, 4, 3, seed=0)  # float32
    X = rng.normal(size=(20, 5))  # float64: checked before the conversion
    checked, norm2 = model.check_X_and_norm(X)
    assert checked.dtype == np.float32
    assert norm2 == pytest.approx(float(np.sum(X ** 2)), rel=1e-12)
    assert model.check_X_and_norm(np.arange(10).reshape(2, 5))[1] is None  # integers: not measured
    with pytest.raises(ValueError, match="NaN or infinite"):
        model.check_X(np.where(np.arange(5) == 3, np.inf, X))


def test_gradient_bound_proves_ordinary_gradients_finite_and_refuses_overflow(rng):
    model = handgrad.MLP(6, 5, 3, seed=0)  # float32
    X, y = rng.normal(size=(8, 6)).astype(np.float32), rng.integers(0, 3, 8)
    model.loss_and_grads(X, y)
    ws = model.workspace(8)
    assert model.grads_bounded(ws)
    ws.inputs[0][0, 0] = 1e30  # ‖X‖² overflows float32: nothing is proven
    assert not model.grads_bounded(ws)
    ws.inputs[0][0, 0] = 0.0
    ws.G[0][1, 2] = np.nan
    assert not model.grads_bounded(ws)


def test_gradient_bound_holds_for_every_entry(rng):
    """Whatever the scale, every |gradient entry| is at most the layer's bound
    ‖G‖ max(‖A‖, √B) that grads_bounded compares with the dtype's limit."""
    for scale in (1e-3, 1.0, 1e3):
        model = handgrad.MLP(6, (5, 4), 3, dtype="float64", seed=1)
        model.param_buffer *= scale
        X, y = scale * rng.normal(size=(9, 6)), rng.integers(0, 3, 9)
        model.loss_and_grads(X, y)
        ws = model.workspace(9)
        for l, (G, A) in enumerate(zip(ws.G, ws.inputs), start=1):
            bound = np.linalg.norm(G) * max(np.linalg.norm(A), 3.0)
            assert np.abs(model.grads[f"W{l}"]).max() <= bound
            assert np.abs(model.grads[f"b{l}"]).max() <= bound


# --------------------------------------------------------------------------- #
# Dropout
# --------------------------------------------------------------------------- #


class FixedMask(Dropout):
    """Dropout whose masks are the same on every call (a fresh rng from one seed)."""

    def __getattribute__(self, name):
        if name == "rng":
            return np.random.default_rng(99)
        return super().__getattribute__(name)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_dropout_gradient_by_finite_differences_with_a_fixed_mask(rng, activation):
    model = handgrad.MLP(6, (7, 5), 3, activation=activation, dtype="float64", seed=0)
    # non-zero biases: a row whose inputs are all dropped would otherwise sit exactly
    # on ReLU's kink (Q = b = 0), where finite differences are meaningless
    for name in ("b1", "b2", "b3"):
        model.params[name][...] = rng.uniform(0.1, 0.5, model.params[name].shape)
    X = rng.normal(size=(9, 6))
    y = rng.integers(0, 3, 9)
    drop = FixedMask(input_rate=0.2, hidden_rate=0.4)

    def loss_and_grads():  # forward, loss, backward, weight gradients: the training step's
        ws = model.workspace(9)
        model.forward(X, ws, drop)
        loss = model.loss(ws, y, 1 / 9)
        model.backward(ws, y, 1 / 9, drop)
        model.weight_grads(ws)
        return loss

    loss_and_grads()
    analytic = model.grad_buffer.copy()
    eps = 1e-6
    numeric = np.empty_like(analytic)
    for i in range(model.n_params):
        old = model.param_buffer[i]
        model.param_buffer[i] = old + eps
        plus = loss_and_grads()
        model.param_buffer[i] = old - eps
        minus = loss_and_grads()
        model.param_buffer[i] = old
        numeric[i] = (plus - minus) / (2 * eps)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-8)
    # the masks really drop units and rescale the kept ones by 1/keep
    ws = model.workspace(9)
    m = ws.mask[1]
    assert set(np.unique(m)) == {0.0, 1 / 0.6} and 0 < (m == 0).mean() < 1


def test_dropout_rate_and_expectation(rng):
    model = handgrad.MLP(4, 2000, 2, dtype="float64", seed=0)
    X = rng.normal(size=(50, 4))
    drop = Dropout(0.0, 0.3, rng=np.random.default_rng(1))
    model.forward(X, model.workspace(50), drop)
    ws = model.workspace(50)
    assert (ws.mask[1] == 0).mean() == pytest.approx(0.3, abs=0.01)
    # inverted dropout: the expected dropped activation equals the plain one
    np.testing.assert_allclose(ws.dropped[1].mean(), ws.h[0].mean(), rtol=0.02)


def test_prediction_ignores_dropout(rng):
    model = handgrad.MLP(4, 8, 3, seed=0)
    X = rng.normal(size=(10, 4)).astype(np.float32)
    before = model.predict_proba(X)
    handgrad.fit(model, X, rng.integers(0, 3, 10), optimizer=SGD(1e-9), epochs=1,
                 dropout=Dropout(0.5, 0.5), seed=0)
    np.testing.assert_allclose(model.predict_proba(X), before, rtol=1e-5)


def test_bad_dropout_rates():
    with pytest.raises(ValueError, match="hidden_rate"):
        Dropout(0.0, 1.0)


# --------------------------------------------------------------------------- #
# The L2 penalty (scikit-learn's alpha)
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_l2_penalty_value_and_gradient(rng, weighted):
    """loss + α/2 Σ‖W_l‖² / Σ s (weights, not biases), as scikit-learn's MLPClassifier
    penalises; its gradient by finite differences."""
    model = handgrad.MLP(5, (6, 4), 3, activation="tanh", dtype="float64", seed=0)
    X, y = rng.normal(size=(9, 5)), rng.integers(0, 3, 9)
    s = rng.uniform(0.5, 2.0, 9) if weighted else None
    alpha = 0.7
    plain, _ = model.loss_and_grads(X, y, s)
    loss, grads = model.loss_and_grads(X, y, s, l2=alpha)
    total = 9.0 if s is None else s.sum()
    squares = sum(float(np.sum(model.params[f"W{l}"] ** 2)) for l in (1, 2, 3))
    assert loss == pytest.approx(plain + 0.5 * alpha * squares / total, rel=1e-13)
    analytic = model.grad_buffer.copy()
    eps = 1e-6
    for i in range(model.n_params):
        old = model.param_buffer[i]
        model.param_buffer[i] = old + eps
        plus, _ = model.loss_and_grads(X, y, s, l2=alpha)
        model.param_buffer[i] = old - eps
        minus, _ = model.loss_and_grads(X, y, s, l2=alpha)
        model.param_buffer[i] = old
        assert analytic[i] == pytest.approx((plus - minus) / (2 * eps), rel=1e-6, abs=1e-9)
    # the biases' gradients are the unpenalised ones
    _, bare = model.loss_and_grads(X, y, s)
    bare = {k: v.copy() for k, v in bare.items()}
    _, pen = model.loss_and_grads(X, y, s, l2=alpha)
    for l in (1, 2, 3):
        np.testing.assert_array_equal(pen[f"b{l}"], bare[f"b{l}"])
        np.testing.assert_allclose(pen[f"W{l}"], bare[f"W{l}"]
                                   + alpha / total * model.params[f"W{l}"], rtol=1e-12)
    with pytest.raises(ValueError, match="l2 must be a non-negative number"):
        model.loss_and_grads(X, y, l2=-1.0)


def test_backward_then_weight_grads_equal_loss_and_grads(rng):
    """The training step's public pieces give loss_and_grads's numbers."""
    model = handgrad.MLP(5, (6, 4), 3, dtype="float64", seed=0)
    X, y = rng.normal(size=(9, 5)), rng.integers(0, 3, 9)
    loss, grads = model.loss_and_grads(X, y)
    expected = {k: v.copy() for k, v in grads.items()}
    model.grad_buffer[...] = 0
    ws = model.workspace(9)
    model.forward(X, ws)
    assert model.loss(ws, y, 1 / 9) == pytest.approx(loss, rel=1e-15)
    model.backward(ws, y, 1 / 9)
    assert not model.grad_buffer.any()  # backward stops at ∂L/∂Q of every layer (B2, B5, B6)
    model.weight_grads(ws)
    for k, g in model.grads.items():
        np.testing.assert_array_equal(g, expected[k])
