"""Optimizers: trajectories equal to torch.optim over 100+ steps."""

import numpy as np
import pytest

import handgrad
from handgrad.optim import SGD, Adam, AdamW, make_optimizer

CASES = [
    ("sgd", {"lr": 0.1}),
    ("sgd", {"lr": 0.05, "momentum": 0.9}),
    ("sgd", {"lr": 0.05, "momentum": 0.9, "nesterov": True}),
    ("sgd", {"lr": 0.05, "momentum": 0.8, "dampening": 0.3, "weight_decay": 1e-2}),
    ("sgd", {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-3}),
    ("adam", {"lr": 1e-2}),
    ("adam", {"lr": 1e-2, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 1e-2}),
    ("adamw", {"lr": 1e-2}),
    ("adamw", {"lr": 3e-3, "betas": (0.85, 0.995), "weight_decay": 0.1}),
]


@pytest.fixture(autouse=True)
def _both_blas_modes(blas_mode, accel_mode):
    """Every test here runs with the BLAS passes and with their plain-NumPy fallbacks,
    each with the accelerator's compiled kernels and without."""


OURS = {"sgd": SGD, "adam": Adam, "adamw": AdamW}


def theirs(torch, name):
    return {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[name]


def run_both(torch, name, kwargs, steps, dtype, flat):
    """Train the same network with handgrad's and torch's optimizer on the same grads.

    Both sides use handgrad's own gradients at their own current weights, so the
    comparison isolates the update formulas.
    """
    rng = np.random.default_rng(0)
    model = handgrad.MLP(6, 8, 3, dtype=dtype, seed=0)
    ref = handgrad.MLP(6, 8, 3, dtype=dtype, seed=0)
    tparams = {k: torch.tensor(v.copy()) for k, v in ref.params.items()}
    opt = OURS[name](**kwargs)
    topt = theirs(torch, name)(list(tparams.values()), **kwargs)
    X = rng.normal(size=(64, 6))
    y = rng.integers(0, 3, size=64)
    for step in range(steps):
        rows = rng.choice(64, size=16, replace=False)
        model.loss_and_grads(X[rows], y[rows])
        if flat:
            opt.step(model.param_buffer, model.grad_buffer)
        else:
            opt.step(model.params, model.grads)
        ref.set_params({k: t.numpy() for k, t in tparams.items()})
        _, g = ref.loss_and_grads(X[rows], y[rows])
        for k, t in tparams.items():
            t.grad = torch.tensor(g[k].copy())
        topt.step()
    return model, {k: t.numpy() for k, t in tparams.items()}


@pytest.mark.parametrize("name, kwargs", CASES)
@pytest.mark.parametrize("flat", [True, False])
def test_trajectory_equals_torch_float64(torch, name, kwargs, flat):
    model, ref = run_both(torch, name, kwargs, steps=150, dtype="float64", flat=flat)
    for k in model.params:
        np.testing.assert_allclose(model.params[k], ref[k], rtol=1e-9, atol=1e-11, err_msg=k)


@pytest.mark.parametrize("name, kwargs", CASES[1:2] + CASES[5:6] + CASES[7:8])
def test_trajectory_close_to_torch_float32(torch, name, kwargs):
    model, ref = run_both(torch, name, kwargs, steps=100, dtype="float32", flat=True)
    for k in model.params:
        assert model.params[k].dtype == np.float32
        np.testing.assert_allclose(model.params[k], ref[k], rtol=2e-4, atol=2e-5, err_msg=k)


@pytest.mark.parametrize("name, kwargs", CASES)
def test_state_dict_round_trip_continues_identically(name, kwargs):
    rng = np.random.default_rng(1)
    p = rng.normal(size=50)
    grads = [rng.normal(size=50) for _ in range(20)]
    a = OURS[name](**kwargs)
    pa = p.copy()
    for g in grads:
        a.step(pa, g)
    b = OURS[name](**kwargs)
    pb = p.copy()
    for g in grads[:10]:
        b.step(pb, g)
    saved = b.state_dict()
    c = OURS[name](lr=0.5)  # hyper-parameters come back from the state dict
    c.load_state_dict(saved)
    for g in grads[10:]:
        c.step(pb, g)
    np.testing.assert_array_equal(pa, pb)
    # the saved state is a copy, not a live view of the optimizer's buffers
    before = {k: {n: np.copy(v) for n, v in st.items()} for k, st in saved["state"].items()}
    b.step(pb, grads[0])
    for k, st in before.items():
        for n, v in st.items():
            np.testing.assert_array_equal(saved["state"][k][n], v)


def test_state_dict_type_mismatch_raises():
    with pytest.raises(ValueError, match="Adam"):
        SGD(0.1).load_state_dict(Adam().state_dict())


@pytest.mark.parametrize("factory, message", [
    (lambda: SGD(0), "learning rate"),
    (lambda: SGD(-1), "learning rate"),
    (lambda: SGD(float("nan")), "learning rate"),
    (lambda: SGD(0.1, momentum=-0.5), "momentum"),
    (lambda: SGD(0.1, nesterov=True), "Nesterov"),
    (lambda: Adam(betas=(1.0, 0.9)), "beta1"),
    (lambda: Adam(betas=(0.9, -0.1)), "beta2"),
    (lambda: AdamW(weight_decay=-1), "weight_decay"),
    (lambda: make_optimizer("rmsprop"), "rmsprop"),
])
def test_bad_hyperparameters_raise(factory, message):
    with pytest.raises(ValueError, match=message):
        factory()


def test_mismatched_gradient_raises():
    with pytest.raises(ValueError, match="shape"):
        SGD(0.1).step(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="keys"):
        SGD(0.1).step({"a": np.zeros(3)}, {"b": np.zeros(3)})


def test_step_allocates_no_new_arrays_after_the_first():
    import tracemalloc

    p = np.zeros(100_000, np.float32)
    g = np.ones(100_000, np.float32)
    for opt in (SGD(0.1, momentum=0.9, nesterov=True, weight_decay=1e-4),
                Adam(weight_decay=1e-4), AdamW()):
        opt.step(p, g)  # the first step creates the state and scratch buffers
        tracemalloc.start()
        for _ in range(5):
            opt.step(p, g)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert peak < 100_000, (type(opt).__name__, peak)  # far below one 400 kB array


@pytest.mark.parametrize("name, kwargs", CASES)
def test_blocked_update_equals_torch_across_block_boundaries(torch, name, kwargs):
    """A flat buffer longer than several update blocks, ending in a partial block."""
    from handgrad.optim import BLOCK

    rng = np.random.default_rng(1)
    n = 2 * BLOCK + 1234
    p = rng.normal(size=n)
    tp = torch.tensor(p.copy(), requires_grad=False)
    opt, topt = OURS[name](**kwargs), theirs(torch, name)([tp], **kwargs)
    for _ in range(5):
        g = rng.normal(size=n)
        opt.step(p, g)
        tp.grad = torch.tensor(g)
        topt.step()
    np.testing.assert_allclose(p, tp.numpy(), rtol=1e-12, atol=1e-14)


def test_non_contiguous_arrays_update_in_place_as_one_block():
    base = np.arange(24.0).reshape(4, 6)
    p = base[:, ::2]  # a strided view: updated in place, not a copy
    SGD(0.5).step({"w": p}, {"w": np.ones_like(p)})
    np.testing.assert_array_equal(base[:, ::2], np.arange(24.0).reshape(4, 6)[:, ::2] - 0.5)
    np.testing.assert_array_equal(base[:, 1::2], np.arange(24.0).reshape(4, 6)[:, 1::2])


@pytest.mark.parametrize("name, kwargs", [c for c in CASES if c[0] == "sgd"])
def test_fused_step_equals_step(name, kwargs):
    """SGD given its gradient only as ``accumulate(out, α, β)`` (out ← β out + α g)
    makes the same updates as step(p, g); Nesterov cannot and says so."""
    rng = np.random.default_rng(3)
    p_ref = rng.normal(size=500)
    p = p_ref.copy()
    ref, fused = SGD(**kwargs), SGD(**kwargs)
    if kwargs.get("nesterov"):
        assert not fused.can_fuse
        with pytest.raises(AssertionError, match="Nesterov"):
            fused.fused_step(p, lambda out, alpha, beta: None)
        return
    assert fused.can_fuse
    for _ in range(6):
        g = rng.normal(size=500)
        ref.step(p_ref, g)

        def accumulate(out, alpha, beta, g=g):
            out *= beta
            out += alpha * g

        fused.fused_step(p, accumulate)
    np.testing.assert_allclose(p, p_ref, rtol=1e-12, atol=1e-14)


def test_adam_takes_the_gradient_itself():
    assert not Adam().can_fuse and not AdamW().can_fuse
    with pytest.raises(NotImplementedError, match="Adam needs the gradient"):
        Adam().fused_step(np.zeros(3), lambda out, alpha, beta: None)


@pytest.mark.parametrize("name, kwargs", CASES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_penalty_folded_into_the_step_equals_adding_it_to_the_gradient(
        accel_mode, name, kwargs, dtype):
    """``step(p, g, penalty=(c, ranges))`` is the step on ``g + c p`` over the ranges
    (R1, the weights), whether a compiled kernel folds it in or it is added first."""
    rng = np.random.default_rng(3)
    p0 = rng.normal(size=40).astype(dtype)
    ranges, c = ((0, 12), (15, 30)), 0.37
    mask = np.zeros(40, bool)
    mask[0:12] = mask[15:30] = True
    a, b = OURS[name](**kwargs), OURS[name](**kwargs)
    pa, pb = p0.copy(), p0.copy()
    for _ in range(6):
        g = rng.normal(size=40).astype(dtype)
        a.step(pa, g.copy(), penalty=(c, ranges))
        b.step(pb, g + np.where(mask, c * pb, 0).astype(dtype))
    tol = {"float32": {"rtol": 2e-5, "atol": 1e-6}, "float64": {"rtol": 1e-12, "atol": 1e-14}}
    np.testing.assert_allclose(pa, pb, **tol[dtype])


def test_a_penalty_needs_flat_arrays_and_sorted_ranges():
    p, g = np.zeros(10), np.zeros(10)
    with pytest.raises(ValueError, match="flat arrays"):
        SGD(0.1).step({"w": p}, {"w": g}, penalty=(0.1, ((0, 5),)))
    with pytest.raises(ValueError, match=r"penalty range \(6, 4\)"):
        Adam().step(p, g, penalty=(0.1, ((0, 5), (6, 4))))
    with pytest.raises(ValueError, match=r"penalty range \(3, 12\)"):
        Adam().step(p, g, penalty=(0.1, ((3, 12),)))

