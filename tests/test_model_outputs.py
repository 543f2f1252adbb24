"""The four output/loss pairs of model.py (F4–F5/B2, F4ℓ–B2ℓ, F4s–B2s, F4p–B2p), R1, and
sparse first-layer inputs, against PyTorch autograd in float64 and finite differences."""

import math

import numpy as np
import pytest

import handgrad
from handgrad.model import (
    OUTPUT_LAYERS,
    OUTPUTS,
    exp_poisson_backward,
    exp_poisson_forward,
    identity_squared_error_backward,
    identity_squared_error_forward,
    logistic_binary_cross_entropy_backward,
    logistic_binary_cross_entropy_forward,
    softmax_cross_entropy_backward,
)


@pytest.fixture
def torch():
    """PyTorch, the oracle: each test that needs it skips on its own when it is missing."""
    return pytest.importorskip("torch")


def targets(output, rng, B, M):
    """Valid targets (B, M) for each output (softmax: labels (B,))."""
    if output == "softmax":
        return rng.integers(0, M, B)
    if output == "logistic":
        Y = (rng.random((B, M)) < 0.5).astype(float)
        Y[0] = rng.random(M)  # soft labels are allowed too
        return Y
    if output == "identity":
        return rng.normal(size=(B, M))
    Y = rng.poisson(2.0, size=(B, M)).astype(float)
    Y[0, 0] = 0.0  # 0 log 0 = 0
    return Y


def torch_loss_per_row(torch, output, O, Y):
    """Each pair's per-example loss, written with PyTorch's own functions."""
    F = torch.nn.functional
    if output == "softmax":
        return F.cross_entropy(O, Y, reduction="none")
    if output == "logistic":
        return F.binary_cross_entropy_with_logits(O, Y, reduction="none").sum(dim=1)
    if output == "identity":
        return 0.5 * F.mse_loss(O, Y, reduction="none").sum(dim=1)
    # half Poisson deviance: PyTorch's e^O − Y O, plus the constant Y log Y − Y
    return (F.poisson_nll_loss(O, Y, log_input=True, full=False, reduction="none")
            + torch.xlogy(Y, Y) - Y).sum(dim=1)


def torch_output(torch, output, O):
    return {"softmax": lambda: torch.softmax(O, dim=1), "logistic": lambda: torch.sigmoid(O),
            "identity": lambda: O, "exp": lambda: torch.exp(O)}[output]()


@pytest.mark.parametrize("output", list(OUTPUTS))
@pytest.mark.parametrize("weighted", [False, True])
def test_each_pairs_forward_and_backward_match_pytorch(torch, rng, output, weighted):
    B, M = 7, 4
    O = rng.normal(size=(B, M)) * 3
    O[1, 0] = 40.0 if output != "exp" else 5.0  # saturated outputs stay finite
    O[2, 1] = -40.0 if output != "exp" else -5.0
    Y = targets(output, rng, B, M)
    w = rng.random(B) if weighted else 1.0 / B
    w = w / w.sum() if weighted else w
    forward, backward = OUTPUT_LAYERS[output]
    logP, P, row = np.empty((B, M)), np.empty((B, M)), np.empty((B, 1))
    loss = forward(O.copy(), Y, w, logP, P, row)
    G = backward(P, Y, w, np.empty((B, M)))

    Ot = torch.tensor(O, dtype=torch.float64, requires_grad=True)
    Yt = torch.tensor(Y)
    wt = torch.tensor(np.broadcast_to(w, (B,)).copy())
    ref = (torch_loss_per_row(torch, output, Ot, Yt) * wt).sum()
    ref.backward()
    assert loss == pytest.approx(ref.item(), rel=1e-12, abs=1e-12)
    np.testing.assert_allclose(P, torch_output(torch, output, Ot).detach().numpy(),
                               rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(G, Ot.grad.numpy(), rtol=1e-10, atol=1e-14)


def test_every_backward_is_p_minus_y(rng):
    """B2, B2ℓ, B2s, B2p: the canonical links give one formula, ∂L/∂O = w ⊙ (P − Y)."""
    B, M = 5, 3
    P, Y, w = rng.random((B, M)), rng.random((B, M)), rng.random(B)
    Y_soft = Y / Y.sum(axis=1, keepdims=True)
    for backward, target in ((softmax_cross_entropy_backward, Y_soft),
                             (logistic_binary_cross_entropy_backward, Y),
                             (identity_squared_error_backward, Y),
                             (exp_poisson_backward, Y)):
        G = backward(P, target, w, np.empty((B, M)))
        np.testing.assert_allclose(G, w[:, None] * (P - target), rtol=1e-15)


@pytest.mark.parametrize("forward, make", [
    (logistic_binary_cross_entropy_forward, lambda rng, s: (rng.random(s) < 0.5) * 1.0),
    (identity_squared_error_forward, lambda rng, s: rng.normal(size=s)),
    (exp_poisson_forward, lambda rng, s: rng.poisson(1.5, size=s) * 1.0),
])
def test_each_loss_matches_finite_differences(rng, forward, make):
    B, M = 4, 3
    O, Y = rng.normal(size=(B, M)), make(rng, (B, M))
    bufs = [np.empty((B, M)), np.empty((B, M)), np.empty((B, 1))]

    def loss(Ox):
        return forward(Ox.copy(), Y, 1.0 / B, *bufs)

    numeric = np.zeros_like(O)
    for i in np.ndindex(O.shape):
        step = np.zeros_like(O)
        step[i] = 1e-6
        numeric[i] = (loss(O + step) - loss(O - step)) / 2e-6
    forward(O.copy(), Y, 1.0 / B, *bufs)
    backward = {logistic_binary_cross_entropy_forward: logistic_binary_cross_entropy_backward,
                identity_squared_error_forward: identity_squared_error_backward,
                exp_poisson_forward: exp_poisson_backward}[forward]
    analytic = backward(bufs[1], Y, 1.0 / B, np.empty((B, M)))
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-9)


def torch_network(torch, model):
    layers = []
    for l in range(1, model.n_layers + 1):
        W = torch.tensor(model.params[f"W{l}"], requires_grad=True)
        b = torch.tensor(model.params[f"b{l}"], requires_grad=True)
        layers.append((W, b))
    return layers


def torch_forward(torch, layers, X, activation):
    act = {"relu": torch.relu, "tanh": torch.tanh, "logistic": torch.sigmoid,
           "identity": lambda q: q}[activation]
    h = X
    for i, (W, b) in enumerate(layers):
        h = h @ W.T + b
        if i < len(layers) - 1:
            h = act(h)
    return h


@pytest.mark.parametrize("output", list(OUTPUTS))
@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_whole_network_gradients_match_pytorch(torch, rng, output, activation):
    """Every parameter's gradient (B2x, B3–B7) with sample weights and the L2 penalty R1."""
    B, D, M, l2 = 9, 5, 1 if output in ("logistic", "identity") else 3, 0.07
    model = handgrad.MLP(D, (6, 4), M, activation=activation, dtype="float64", seed=1,
                         output=output)
    X = rng.normal(size=(B, D))
    Y = targets(output, rng, B, M)
    s = rng.random(B) + 0.1
    loss, grads = model.loss_and_grads(X, Y, sample_weight=s, l2=l2)

    layers = torch_network(torch, model)
    O = torch_forward(torch, layers, torch.tensor(X), activation)
    w = torch.tensor(s / s.sum())
    ref = (torch_loss_per_row(torch, output, O, torch.tensor(Y)) * w).sum()
    c = l2 / s.sum()  # R1: scikit-learn's alpha over the batch's total sample weight
    ref = ref + 0.5 * c * sum((W * W).sum() for W, _ in layers)
    ref.backward()
    assert loss == pytest.approx(ref.item(), rel=1e-12)
    for l, (W, b) in enumerate(layers, start=1):
        np.testing.assert_allclose(grads[f"W{l}"], W.grad.numpy(), rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(grads[f"b{l}"], b.grad.numpy(), rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("output", list(OUTPUTS))
def test_gradcheck_holds_for_every_output(rng, output):
    M = 2
    model = handgrad.MLP(4, 5, M, activation="tanh", dtype="float64", seed=0, output=output)
    X, Y = rng.normal(size=(6, 4)), targets(output, rng, 6, M)
    worst = handgrad.gradcheck(model, X, Y)
    assert max(worst.values()) < 1e-6, worst


@pytest.mark.parametrize("fmt", ["csr", "csc", "coo"])
@pytest.mark.parametrize("output", ["softmax", "identity"])
def test_sparse_inputs_give_the_dense_gradients(rng, fmt, output):
    sparse = pytest.importorskip("scipy.sparse")
    X = rng.normal(size=(8, 12)) * (rng.random((8, 12)) < 0.3)
    Y = targets(output, rng, 8, 3)
    model = handgrad.MLP(12, 5, 3, dtype="float64", seed=0, output=output)
    dense_loss, dense = model.loss_and_grads(X, Y, l2=0.1)
    dense = {k: v.copy() for k, v in dense.items()}
    loss, grads = model.loss_and_grads(sparse.coo_matrix(X).asformat(fmt), Y, l2=0.1)
    assert loss == pytest.approx(dense_loss, rel=1e-13)
    for k in dense:
        np.testing.assert_allclose(grads[k], dense[k], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(model.output(sparse.csr_matrix(X)), model.output(X), rtol=1e-13)


@pytest.mark.parametrize("output", ["softmax", "logistic", "identity", "exp"])
def test_fused_sgd_with_l2_equals_the_gradient_then_the_step(rng, output):
    """R1 inside the fused update (into the weights, or into the momentum buffer) gives
    what the unfused gradient + step gives."""
    from handgrad.optim import SGD
    from handgrad.update import Update

    X = rng.normal(size=(64, 300))
    Y = targets(output, rng, 64, 2 if output != "softmax" else 3)
    M = Y.shape[1] if Y.ndim == 2 else 3
    for momentum in (0.0, 0.9):
        runs = []
        for fuse in (True, False):
            model = handgrad.MLP(300, 64, M, dtype="float64", seed=0, output=output)
            opt = SGD(0.05, momentum=momentum)
            trainer = handgrad.Trainer(model, X, Y, optimizer=opt, epochs=2, batch_size=16,
                                       seed=0, l2=0.5, max_loss=math.inf)
            if not fuse:
                trainer.update = Update(model, opt, fuse=False)
            assert trainer.update.fused == fuse
            trainer.run()
            runs.append(model.param_buffer.copy())
        np.testing.assert_allclose(runs[0], runs[1], rtol=1e-10, atol=1e-12)


def test_targets_are_checked_per_output():
    for output, bad, message in (("logistic", [[2.0]], r"\[0, 1\]"),
                                 ("exp", [[-1.0]], "non-negative"),
                                 ("identity", [[np.nan]], "NaN"),
                                 ("identity", [[1.0, 2.0]], "shape")):
        model = handgrad.MLP(2, 3, 1, dtype="float64", output=output)
        with pytest.raises(ValueError, match=message):
            model.loss_and_grads(np.ones((1, 2)), bad)
    with pytest.raises(ValueError, match="softmax"):
        handgrad.MLP(2, 3, 1, output="softmax")
    with pytest.raises(ValueError, match="unknown output"):
        handgrad.MLP(2, 3, 2, output="tanh")
    with pytest.raises(ValueError, match="predict_proba"):
        handgrad.MLP(2, 3, 2, output="identity").predict_proba(np.ones((1, 2)))


def test_models_with_each_output_save_and_load(tmp_path, rng):
    for output in OUTPUTS:
        model = handgrad.MLP(3, 4, 2, dtype="float64", seed=0, output=output)
        handgrad.save(model, tmp_path / f"{output}.safetensors")
        back = handgrad.load(tmp_path / f"{output}.safetensors")
        assert back.config == model.config
        X = rng.normal(size=(5, 3))
        np.testing.assert_array_equal(back.output(X), model.output(X))


def test_torch_and_onnx_bridges_follow_the_output(torch, rng):
    from handgrad.torch_bridge import to_torch

    X = rng.normal(size=(5, 3))
    for output in ("softmax", "logistic", "identity"):
        model = handgrad.MLP(3, 4, 2, dtype="float64", seed=0, output=output)
        net = to_torch(model, probabilities=True)
        np.testing.assert_allclose(net(torch.tensor(X)).detach().numpy(), model.output(X),
                                   rtol=1e-12)
    with pytest.raises(ValueError, match="exp"):
        to_torch(handgrad.MLP(3, 4, 2, output="exp"), probabilities=True)
    pytest.importorskip("onnx")
    from handgrad.onnx import to_onnx_model

    with pytest.raises(ValueError, match="softmax"):
        to_onnx_model(handgrad.MLP(3, 4, 1, output="logistic"))


SPARSE_DAMAGE = ["negative index", "large negative index", "index too large",
                 "indptr past the entries", "indptr going backwards"]


@pytest.mark.parametrize("accel", [True, False])
@pytest.mark.parametrize("how", SPARSE_DAMAGE)
@pytest.mark.parametrize("fmt", ["csr", "csc"])
def test_sparse_input_with_a_broken_structure_is_refused_not_crashed_on(fmt, how, accel,
                                                                        broken_sparse):
    """SciPy checks index bounds only on request; the compiled F1/B7 and SciPy's own
    products would read and write outside the arrays (a crash, or silently wrong
    numbers). Every entry point refuses such a matrix with a ValueError naming it."""
    from handgrad import _accel

    X = broken_sparse(fmt, how)
    y = np.arange(6) % 3
    old = _accel.use(accel)
    try:
        model = handgrad.MLP(5, 4, 3, dtype="float64", seed=0)
        for call in (lambda: model.loss_and_grads(X, y), lambda: model.output(X),
                     lambda: handgrad.fit(model, X, y, epochs=1, batch_size=2, seed=0)):
            with pytest.raises(ValueError, match="sparse X .*(index|indptr)"):
                call()
    finally:
        _accel.use(old)
