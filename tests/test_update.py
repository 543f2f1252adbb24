"""The update: B3, B4, B7 and the optimizer step, fused and proven finite where it can be."""

import numpy as np
import pytest

import handgrad
from handgrad.model import Dropout
from handgrad.optim import SGD, Adam
from handgrad.update import Update


SGD_VARIANTS = [{}, {"weight_decay": 1e-2}, {"momentum": 0.9},
                {"momentum": 0.8, "dampening": 0.3, "weight_decay": 5e-3}]


def _fit_sgd(X, y, dtype, sgd=None, **options):
    model = handgrad.MLP(X.shape[1], (16, 8), 4, dtype=dtype, seed=0)
    handgrad.fit(model, X, y, optimizer=SGD(0.1, **(sgd or {})), epochs=3, batch_size=32,
                 seed=1, dropout=Dropout(0.1, 0.2), **options)
    return model


@pytest.mark.parametrize("fuse_min, fused_weights", [(0, ("W1", "W2", "W3")), (150, ("W1",))],
                         ids=["every-W-fused", "W1-fused"])
@pytest.mark.parametrize("sgd", SGD_VARIANTS, ids=["plain", "decay", "momentum", "all"])
@pytest.mark.parametrize("dtype, tol", [("float32", 1e-5), ("float64", 1e-12)])
def test_fused_sgd_equals_the_gradient_then_the_step(rng, monkeypatch, sgd, dtype, tol,
                                                     fuse_min, fused_weights):
    """Two hidden layers, dropout and sample weights: the fused update (which never
    writes the gradient of a fused weight matrix, and adds the rest by runs) trains
    the same weights as gradient + SGD.step."""
    from handgrad import _blas

    if not _blas.available(dtype):
        pytest.skip("NumPy's BLAS routines were not found: there is no fused path")
    # 12-16-8-4: W1 has 192 entries, W2 128, W3 32
    monkeypatch.setattr(handgrad.model, "FUSE_MIN_ENTRIES", fuse_min)
    X, y, s = rng.normal(size=(200, 12)), rng.integers(0, 4, 200), rng.random(200)
    fused = _fit_sgd(X, y, dtype, sgd, sample_weight=s)
    for name, g in fused.grads.items():  # the fused path ran: fused gradients never written
        assert g.any() == (name not in fused_weights), name
    with monkeypatch.context() as m:
        m.setattr(SGD, "can_fuse", property(lambda self: False))
        plain = _fit_sgd(X, y, dtype, sgd, sample_weight=s)
    assert plain.grad_buffer.any()
    np.testing.assert_allclose(fused.param_buffer, plain.param_buffer, rtol=tol, atol=tol)


def test_nesterov_is_not_fused(rng):
    X, y = rng.normal(size=(64, 12)), rng.integers(0, 4, 64)
    model = _fit_sgd(X, y, "float64", {"momentum": 0.9, "nesterov": True})
    assert model.grad_buffer.any()  # the gradient itself was formed for the step


def test_fused_sgd_falls_back_when_the_gradient_is_not_proven_finite(rng, monkeypatch):
    X, y = rng.normal(size=(200, 12)), rng.integers(0, 4, 200)
    fused = _fit_sgd(X, y, "float64")
    monkeypatch.setattr(handgrad.MLP, "grads_bounded", lambda self, ws, input_norm2=None, l2=0.0: False)
    checked = _fit_sgd(X, y, "float64")
    assert checked.grad_buffer.any()  # the gradient was formed and checked exactly
    np.testing.assert_allclose(checked.param_buffer, fused.param_buffer, rtol=1e-12,
                               atol=1e-12)


@pytest.mark.parametrize("sgd", SGD_VARIANTS[:3] + [{"momentum": 0.9, "nesterov": True}],
                         ids=["plain", "decay", "momentum", "nesterov"])
def test_l2_penalty_fused_equals_the_gradient_then_the_step(rng, monkeypatch, sgd):
    from handgrad import _blas

    if not _blas.available("float64"):
        pytest.skip("NumPy's BLAS routines were not found: there is no fused path")
    monkeypatch.setattr(handgrad.model, "FUSE_MIN_ENTRIES", 150)  # W1 fused, W2, W3 not
    X, y = rng.normal(size=(200, 12)), rng.integers(0, 4, 200)
    fused = _fit_sgd(X, y, "float64", sgd, l2=0.3)
    with monkeypatch.context() as m:
        m.setattr(SGD, "can_fuse", property(lambda self: False))
        plain = _fit_sgd(X, y, "float64", sgd, l2=0.3)
    unpenalised = _fit_sgd(X, y, "float64", sgd)
    np.testing.assert_allclose(fused.param_buffer, plain.param_buffer, rtol=1e-12, atol=1e-12)
    assert not np.allclose(fused.param_buffer, unpenalised.param_buffer)


def _step_ready(rng, dtype="float64"):
    model = handgrad.MLP(5, 7, 3, dtype=dtype, seed=0)
    X, y = rng.normal(size=(16, 5)).astype(dtype), rng.integers(0, 3, 16)
    ws = model.workspace(16)
    model.forward(X, ws)
    model.loss(ws, y, 1 / 16)
    model.backward(ws, y, 1 / 16)
    return model, ws


@pytest.mark.parametrize("optimizer", [lambda: SGD(0.1), Adam], ids=["sgd", "adam"])
def test_a_non_finite_gradient_returns_false_and_changes_nothing(rng, optimizer):
    model, ws = _step_ready(rng)
    ws.G[0][3, 2] = np.inf  # ∂L/∂Q of the first layer: W1's and b1's gradients overflow
    before = model.param_buffer.copy()
    opt = optimizer()
    assert Update(model, opt)(ws) is False
    np.testing.assert_array_equal(model.param_buffer, before)
    assert not opt.state  # no optimizer state either


def test_reduce_sums_before_the_step_and_turns_the_fast_path_off(rng, monkeypatch):
    """With ``reduce`` (data-parallel training) the gradient is formed, reduced in place,
    checked and stepped; the bound of one worker's part is never consulted."""
    model, ws = _step_ready(np.random.default_rng(0))
    twin, ws_twin = _step_ready(np.random.default_rng(0))
    calls = []

    def reduce(g):  # as if two workers held the same part: the sum doubles it
        calls.append(g is model.grad_buffer)
        g *= 2.0

    update = Update(model, SGD(0.1), reduce=reduce)
    assert not update.fused
    monkeypatch.setattr(handgrad.MLP, "grads_bounded",
                        lambda *a, **k: pytest.fail("a worker's bound proves nothing"))
    assert update(ws) is True and calls == [True]
    assert Update(twin, SGD(0.2), fuse=False, reduce=lambda g: None)(ws_twin) is True
    np.testing.assert_allclose(model.param_buffer, twin.param_buffer, rtol=1e-14)
