"""handgrad.MLPClassifier and MLPRegressor: scikit-learn's contract, and the one training loop."""

import math
import warnings

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")
scipy_sparse = pytest.importorskip("scipy.sparse")
from sklearn.datasets import (  # noqa: E402
    load_iris,
    make_classification,
    make_multilabel_classification,
    make_regression,
)
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

import handgrad  # noqa: E402
from handgrad.optim import SGD, Adam  # noqa: E402
from handgrad.sklearn import MLPClassifier, MLPRegressor, ScikitLearnOrder  # noqa: E402

quiet = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@parametrize_with_checks([
    MLPClassifier(random_state=0),
    MLPClassifier(solver="sgd", hidden_layer_sizes=(20, 10), random_state=0),
    MLPClassifier(solver="lbfgs", activation="tanh", random_state=0),
    MLPClassifier(solver="adam", activation="logistic", random_state=0),
    MLPRegressor(random_state=0),
    MLPRegressor(solver="sgd", hidden_layer_sizes=(20, 10), learning_rate_init=0.01,
                 random_state=0),
    MLPRegressor(solver="lbfgs", activation="tanh", random_state=0),
    MLPRegressor(solver="adam", activation="logistic", random_state=0),
])
def test_scikit_learn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)


@pytest.fixture(scope="module")
def iris():
    X, y = load_iris(return_X_y=True)
    return StandardScaler().fit_transform(X), y


# --------------------------------------------------------------------------- #
# One training loop: the estimators' sgd/adam are handgrad.fit
# --------------------------------------------------------------------------- #


def sklearn_initial_model(rs, sizes, activation, output):
    """The network scikit-learn starts from: Glorot-uniform weights and biases, drawn
    from ``rs`` layer by layer as (n_in, n_out), then the biases."""
    model = handgrad.MLP(sizes[0], sizes[1:-1], sizes[-1], activation=activation,
                         dtype="float64", output=output, seed=0)
    factor = 2.0 if activation == "logistic" else 6.0
    for l, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
        bound = math.sqrt(factor / (fan_in + fan_out))
        model.params[f"W{l}"][...] = rs.uniform(-bound, bound, (fan_in, fan_out)).T
        model.params[f"b{l}"][...] = rs.uniform(-bound, bound, fan_out)
    return model


STOCHASTIC = [
    ("sgd", dict(momentum=0.0), dict(momentum=0.0)),
    ("sgd", dict(momentum=0.9, nesterovs_momentum=False), dict(momentum=0.9)),
    ("sgd", dict(momentum=0.9, nesterovs_momentum=True), dict(momentum=0.9, nesterov=True)),
    ("adam", dict(beta_1=0.8, beta_2=0.99, epsilon=1e-7), dict(betas=(0.8, 0.99), eps=1e-7)),
]


@quiet
@pytest.mark.parametrize("solver, est_params, opt_params", STOCHASTIC)
@pytest.mark.parametrize("task", ["multiclass", "binary", "regression", "poisson"])
def test_stochastic_solvers_give_handgrad_fits_weights(solver, est_params, opt_params, task):
    """sgd/adam train through the Trainer: the same weights, bit for bit, as handgrad.fit
    from the same start with the same settings (and scikit-learn's shuffles)."""
    N, D, H, seed, lr, alpha, epochs, B = 90, 5, 7, 3, 0.02, 1e-2, 4, 16
    if task in ("multiclass", "binary"):
        X, y = make_classification(n_samples=N, n_features=D, n_informative=3,
                                   n_classes=3 if task == "multiclass" else 2, random_state=0)
        est = MLPClassifier(activation="tanh")
        output, M = ("softmax", 3) if task == "multiclass" else ("logistic", 1)
        target = y if task == "multiclass" else y.reshape(-1, 1).astype(float)
    else:
        X, y = make_regression(n_samples=N, n_features=D, random_state=0)
        y = y / y.std()
        if task == "poisson":
            y = np.random.default_rng(0).poisson(np.exp(0.3 * X[:, 0])).astype(float)
        est = MLPRegressor(activation="tanh", loss="poisson" if task == "poisson" else
                           "squared_error")
        output, M, target = ("exp" if task == "poisson" else "identity"), 1, y.reshape(-1, 1)
    est.set_params(hidden_layer_sizes=(H,), solver=solver, alpha=alpha, batch_size=B,
                   learning_rate_init=lr, max_iter=epochs, tol=0.0, n_iter_no_change=np.inf,
                   random_state=seed, **est_params)
    est.fit(X, y)
    assert est.n_iter_ == epochs

    rs = np.random.RandomState(seed)
    model = sklearn_initial_model(rs, (D, H, M), "tanh", output)
    optimizer = SGD(lr, **opt_params) if solver == "sgd" else Adam(lr, **opt_params)
    history = handgrad.fit(model, X, target, optimizer=optimizer, epochs=epochs, batch_size=B,
                           l2=alpha, order=ScikitLearnOrder(rs, N), max_loss=math.inf)
    np.testing.assert_array_equal(est.model_.param_buffer, model.param_buffer)
    assert est.loss_curve_ == history.train_loss


@quiet
def test_runs_alongside_scikit_learn_from_the_same_random_state(iris):
    """Same initial weights and shuffles as scikit-learn: with SGD at a constant rate
    the two runs differ only by rounding."""
    from sklearn.neural_network import MLPClassifier as SkMLP

    X, y = iris
    params = dict(hidden_layer_sizes=(10,), solver="sgd", learning_rate_init=0.05,
                  max_iter=30, random_state=0, alpha=1e-3)
    ours, theirs = MLPClassifier(**params).fit(X, y), SkMLP(**params).fit(X, y)
    for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-9)


# --------------------------------------------------------------------------- #
# scikit-learn's fitted attributes and semantics
# --------------------------------------------------------------------------- #


def test_fitted_attributes_follow_scikit_learn(iris):
    X, y = iris
    with pytest.warns(ConvergenceWarning, match="Maximum iterations"):
        clf = MLPClassifier(hidden_layer_sizes=(8, 6), max_iter=5, random_state=0).fit(X, y)
    assert clf.classes_.tolist() == [0, 1, 2] and clf.n_features_in_ == 4
    assert [c.shape for c in clf.coefs_] == [(4, 8), (8, 6), (6, 3)]
    assert [b.shape for b in clf.intercepts_] == [(8,), (6,), (3,)]
    assert clf.n_iter_ == 5 and len(clf.loss_curve_) == 5 and clf.loss_ == clf.loss_curve_[-1]
    assert clf.best_loss_ == min(clf.loss_curve_) and clf.n_layers_ == 4
    assert clf.t_ == 5 * len(X) and clf.out_activation_ == "softmax" and clf.n_outputs_ == 3
    assert clf.validation_scores_ is None and clf.best_validation_score_ is None


def test_output_layers_are_scikit_learns(iris):
    X, y = iris
    binary = MLPClassifier(max_iter=300, random_state=0).fit(X, y == 1)
    assert binary.out_activation_ == "logistic" and binary.n_outputs_ == 1
    assert binary.coefs_[-1].shape == (100, 1) and binary.predict_proba(X).shape == (150, 2)
    np.testing.assert_allclose(binary.predict_proba(X).sum(axis=1), 1)
    Xm, Ym = make_multilabel_classification(n_samples=60, n_classes=4, random_state=0)
    multi = MLPClassifier(solver="lbfgs", max_iter=300, random_state=0).fit(Xm, Ym)
    assert multi.out_activation_ == "logistic" and multi.n_outputs_ == 4
    assert multi.predict(Xm).shape == Ym.shape and multi.score(Xm, Ym) > 0.9
    P = multi.predict_proba(Xm)
    assert P.shape == Ym.shape and not np.allclose(P.sum(axis=1), 1)
    assert np.all((P > 0) & (P < 1))
    reg = MLPRegressor(loss="poisson", max_iter=5, random_state=0)
    with pytest.warns(ConvergenceWarning):
        reg.fit(X, y)
    assert reg.out_activation_ == "exp" and np.all(reg.predict(X) > 0)
    with pytest.raises(ValueError, match="non-negative"):
        MLPRegressor(loss="poisson").fit(X, y - 1)


def test_n_iter_counts_the_last_call_and_t_every_sample(iris):
    X, y = iris
    clf = MLPClassifier(solver="sgd", learning_rate_init=0.05, random_state=0)
    with pytest.raises(ValueError, match="classes"):
        clf.partial_fit(X, y)
    clf.partial_fit(X, y, classes=[0, 1, 2])
    first = clf.loss_
    for _ in range(30):
        clf.partial_fit(X, y)
    assert clf.loss_ < first / 2
    assert clf.n_iter_ == 1 and clf.t_ == 31 * len(X) and len(clf.loss_curve_) == 31
    with pytest.raises(ValueError, match="not in `self.classes_`"):
        clf.partial_fit(X, np.full(len(y), 7))
    assert not hasattr(MLPClassifier(solver="lbfgs"), "partial_fit")
    warm = MLPClassifier(max_iter=3, warm_start=True, random_state=0)
    with pytest.warns(ConvergenceWarning):
        warm.fit(X, y)
    with pytest.warns(ConvergenceWarning):
        warm.fit(X, y)
    assert warm.n_iter_ == 3 and warm.t_ == 6 * len(X) and len(warm.loss_curve_) == 6


@quiet
def test_partial_fit_equals_fit_epoch_by_epoch(iris):
    """The k-th partial_fit call trains epoch k: after as many calls as fit's epochs,
    with the same optimizer state carried over, the same network. (With shuffling each
    partial_fit call draws its order afresh from random_state, as scikit-learn's do.)"""
    X, y = iris
    params = dict(solver="sgd", learning_rate_init=0.05, random_state=0, shuffle=False)
    fitted = MLPClassifier(max_iter=7, tol=0, n_iter_no_change=np.inf, **params).fit(X, y)
    stepped = MLPClassifier(**params)
    for _ in range(7):
        stepped.partial_fit(X, y, classes=[0, 1, 2])
    np.testing.assert_array_equal(fitted.model_.param_buffer, stepped.model_.param_buffer)
    assert fitted.loss_curve_ == stepped.loss_curve_


def test_assigned_weights_are_trained_on(iris):
    """coefs_/intercepts_ are settable (scikit-learn's test_fit sets them by hand)."""
    X, y = iris
    clf = MLPClassifier(hidden_layer_sizes=(5,), solver="sgd", max_iter=1, random_state=0)
    with pytest.warns(ConvergenceWarning):
        clf.fit(X, y)
    rng = np.random.default_rng(0)
    new = [rng.normal(size=c.shape) for c in clf.coefs_]
    clf.coefs_ = new
    np.testing.assert_array_equal(clf.predict_proba(X), clf.predict_proba(X))
    expected = handgrad.MLP(4, 5, 3, dtype="float64").set_params(
        {"W1": new[0].T, "b1": clf.intercepts_[0], "W2": new[1].T, "b2": clf.intercepts_[1]})
    np.testing.assert_allclose(clf.predict_proba(X), expected.predict_proba(X), rtol=1e-12)
    clf.coefs_[1][...] = 0.0  # writing into the (view) arrays changes the network too
    clf.intercepts_[1][...] = 0.0
    np.testing.assert_allclose(clf.predict_proba(X), 1 / 3)
    with pytest.raises(ValueError, match="coefs_"):
        clf.coefs_ = [np.zeros((4, 5)), np.zeros((6, 3))]
        clf.predict(X)


def test_numpy_scalar_hyperparameters_and_infinite_patience(iris):
    X, y = iris
    clf = MLPClassifier(hidden_layer_sizes=np.int64(6), max_iter=np.int64(20),
                        batch_size=np.int32(30), alpha=np.float32(1e-3), tol=np.float64(1e9),
                        learning_rate_init=np.float32(0.01), random_state=np.int64(0),
                        n_iter_no_change=np.inf)
    with pytest.warns(ConvergenceWarning):
        clf.fit(X, y)
    assert clf.n_iter_ == 20 and clf._no_improvement_count == 19


def test_float32_stays_float32_end_to_end(iris):
    X, y = iris
    X32 = X.astype(np.float32)
    clf = MLPClassifier(max_iter=20, random_state=0)
    reg = MLPRegressor(max_iter=20, random_state=0)
    with pytest.warns(ConvergenceWarning):
        clf.fit(X32, y)
    with pytest.warns(ConvergenceWarning):
        reg.fit(X32, y.astype(np.float32))
    for est in (clf, reg):
        assert est.model_.dtype == np.float32
        assert all(a.dtype == np.float32 for a in est.coefs_ + est.intercepts_)
    assert clf.predict_proba(X32).dtype == np.float32 and reg.predict(X32).dtype == np.float32
    with pytest.warns(ConvergenceWarning):
        assert MLPClassifier(max_iter=2).fit(X, y).model_.dtype == np.float64
        assert MLPClassifier(max_iter=2, dtype="float32").fit(X, y).model_.dtype == np.float32


def test_feature_names_are_kept_and_checked(iris):
    pd = pytest.importorskip("pandas")
    X, y = iris
    frame = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    clf = MLPClassifier(max_iter=300, random_state=0).fit(frame, y)
    assert clf.feature_names_in_.tolist() == ["a", "b", "c", "d"]
    with pytest.warns(UserWarning, match="feature names"):
        clf.predict(X)
    with pytest.raises(ValueError, match="feature names"):
        clf.predict(frame[["b", "a", "c", "d"]])


@quiet
@pytest.mark.parametrize("fmt", ["csr", "csc"])
def test_sparse_input_gives_the_dense_result(iris, fmt):
    X, y = iris
    Xs = scipy_sparse.csr_matrix(X) if fmt == "csr" else scipy_sparse.csc_matrix(X)
    for solver in ("sgd", "adam", "lbfgs"):
        params = dict(solver=solver, max_iter=20, random_state=0, hidden_layer_sizes=(16,))
        dense, sparse = MLPClassifier(**params).fit(X, y), MLPClassifier(**params).fit(Xs, y)
        np.testing.assert_allclose(sparse.model_.param_buffer, dense.model_.param_buffer,
                                   rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(sparse.predict_proba(Xs), dense.predict_proba(X),
                                   rtol=1e-9, atol=1e-12)


SPARSE_MEMORY_SCRIPT = """
import resource, sys, warnings
import numpy as np, scipy.sparse as sp
from handgrad import MLPClassifier
warnings.simplefilter("ignore")
N, D = 4000, 50_000  # dense float64: 1.6 GB
rng = np.random.default_rng(0)
nnz = 20_000  # density 1e-4
X = sp.coo_matrix((rng.normal(size=nnz), (rng.integers(0, N, nnz), rng.integers(0, D, nnz))),
                  shape=(N, D)).asformat(sys.argv[1])
y = rng.integers(0, 2, N)
warm = MLPClassifier(hidden_layer_sizes=(4,), max_iter=1, batch_size=500, random_state=0)
warm.fit(X[:50], y[:50])  # imports and first-use allocations, before the measurement
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for solver in ("adam", "sgd", "lbfgs"):
    clf = MLPClassifier(hidden_layer_sizes=(8,), solver=solver, max_iter=2, batch_size=500,
                        random_state=0).fit(X, y)
    clf.predict_proba(X)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


@pytest.mark.parametrize("fmt", ["csr", "csc"])
def test_sparse_input_is_never_densified(fmt):
    """F1 and B7 of the first layer are sparse products: training (every solver) and
    predicting on a 4000 × 50000 sparse matrix, 1.6 GB if dense, adds a few MB of
    memory (the weights are 8 × 50000: 3.2 MB; the data 0.3 MB)."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", SPARSE_MEMORY_SCRIPT, fmt], check=True,
                         capture_output=True, text=True, timeout=600).stdout
    grown_kib = int(out.split()[-1])  # ru_maxrss is in KiB on Linux
    assert grown_kib < 100 * 1024, f"peak memory grew by {grown_kib / 1024:.0f} MiB"


def test_early_stopping_split_is_stratified_and_keeps_the_best_weights(iris):
    X, y = iris
    clf = MLPClassifier(early_stopping=True, n_iter_no_change=3, max_iter=500,
                        random_state=0).fit(X, y)
    assert clf.best_loss_ is None and len(clf.validation_scores_) == clf.n_iter_
    assert clf.best_validation_score_ == max(clf.validation_scores_)
    assert len(clf.validation_loss_) == clf.n_iter_
    with pytest.raises(ValueError, match="least populated class"):
        MLPClassifier(early_stopping=True).fit(X[:5], np.array([0, 0, 0, 0, 1]))
    with pytest.raises(ValueError, match="partial_fit does not support early_stopping"):
        clf.partial_fit(X, y)


def test_divergence_raises_scikit_learns_error_or_keeps_the_best_weights(iris):
    X, y = iris
    huge = np.finfo(np.float64).max * np.random.default_rng(0).uniform(size=(10, 2))
    with pytest.raises(ValueError, match="Solver produced non-finite parameter weights"):
        with np.errstate(all="ignore"):
            MLPRegressor().fit(huge, np.arange(10.0))
    with pytest.warns(ConvergenceWarning, match="diverged"):
        reg = MLPRegressor(activation="identity", solver="sgd", learning_rate_init=1,
                           max_iter=20, early_stopping=True, random_state=0).fit(X, y)
    assert math.isnan(reg.validation_scores_[-1])
    assert np.all(np.isfinite(reg.predict(X)))


# --------------------------------------------------------------------------- #
# Working with scikit-learn's tools, and bad input
# --------------------------------------------------------------------------- #


def test_string_and_non_contiguous_labels(iris):
    X, y = iris
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    clf = MLPClassifier(max_iter=300, random_state=0).fit(X, names)
    assert set(clf.predict(X)) <= set(names) and clf.score(X, names) > 0.9
    odd = np.array([3, 10, 42])[y]
    clf = MLPClassifier(max_iter=300, random_state=0).fit(X, odd)
    assert clf.classes_.tolist() == [3, 10, 42] and clf.score(X, odd) > 0.9
    np.testing.assert_allclose(clf.predict_proba(X).sum(axis=1), 1)
    np.testing.assert_allclose(np.exp(clf.predict_log_proba(X)), clf.predict_proba(X))


def test_pipeline_and_grid_search():
    X, y = make_classification(n_samples=200, n_features=6, n_informative=4, random_state=0)
    pipe = make_pipeline(StandardScaler(), MLPClassifier(max_iter=300, random_state=0))
    grid = GridSearchCV(pipe, {"mlpclassifier__hidden_layer_sizes": [(5,), (20,)],
                               "mlpclassifier__alpha": [1e-4, 1e-2]}, cv=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        grid.fit(X, y)
    assert grid.best_score_ > 0.8
    Xr, yr = make_regression(n_samples=200, n_features=5, noise=1.0, random_state=0)
    score = cross_val_score(make_pipeline(StandardScaler(), MLPRegressor(
        solver="lbfgs", max_iter=500, random_state=0)), Xr, yr / yr.std(), cv=3).mean()
    assert score > 0.95


def test_multi_output_regression():
    X, Y = make_regression(n_samples=200, n_features=8, n_targets=3, noise=0.1, random_state=1)
    Y = Y / Y.std(axis=0)
    reg = MLPRegressor(solver="lbfgs", max_iter=500, random_state=0).fit(X, Y)
    assert reg.n_outputs_ == 3 and reg.predict(X).shape == (200, 3) and reg.score(X, Y) > 0.95


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_class_weight_shifts_predictions():
    X, y = make_classification(n_samples=300, weights=[0.9, 0.1], class_sep=0.3, flip_y=0.1,
                               random_state=1)
    plain = MLPClassifier(max_iter=20, random_state=0).fit(X, y)
    balanced = MLPClassifier(max_iter=20, random_state=0, class_weight="balanced").fit(X, y)
    # the rare class gains probability mass when its examples weigh more
    assert balanced.predict_proba(X)[:, 1].mean() > plain.predict_proba(X)[:, 1].mean() + 0.1
    with pytest.raises(ValueError, match="partial_fit"):
        MLPClassifier(class_weight="balanced").partial_fit(X, y, classes=[0, 1])


def test_bad_class_weight_and_sample_weight_are_named_as_given(iris):
    """Each mistake is reported in the words of the parameter the user typed: not as
    scikit-learn's compute_class_weight (a function they never called), not as
    sample_weight when the negative number was a class weight, and negative sample
    weights are not "summing to zero"."""
    X, y = iris
    for bad in ("balance", 3, [1, 2, 3]):
        with pytest.raises(ValueError, match=r"class_weight must be None, 'balanced' or a "
                                             r"dict"):
            MLPClassifier(max_iter=2, class_weight=bad).fit(X, y)
    for weight in (-1, math.nan, math.inf, "heavy"):
        with pytest.raises(ValueError, match=rf"class_weight\[0\] must be a non-negative "
                                             rf"number, got {weight!r}"):
            MLPClassifier(max_iter=2, class_weight={0: weight, 1: 1, 2: 1}).fit(X, y)
    with pytest.raises(ValueError, match="sample_weight must be non-negative; its smallest "
                                         "value is -1"):
        MLPClassifier(max_iter=2).fit(X, y, sample_weight=-np.ones(len(y)))


def test_sample_weight_zero_equals_removing_rows(iris):
    X, y = iris
    sw = np.ones(len(y))
    sw[::3] = 0
    a = MLPClassifier(solver="lbfgs", random_state=0, max_iter=50).fit(X, y, sample_weight=sw)
    b = MLPClassifier(solver="lbfgs", random_state=0, max_iter=50).fit(X[sw > 0], y[sw > 0])
    np.testing.assert_allclose(a.predict_proba(X), b.predict_proba(X), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("params, message", [
    ({"hidden_layer_sizes": (0,)}, "hidden_layer_sizes"),
    ({"activation": "softplus"}, "softplus"),
    ({"solver": "rmsprop"}, "rmsprop"),
    ({"learning_rate": "warp"}, "warp"),
    ({"alpha": -1.0}, "alpha"),
    ({"batch_size": 0}, "batch_size"),
    ({"validation_fraction": 1.0}, "validation_fraction"),
    ({"momentum": 1.5}, "momentum"),
    ({"n_iter_no_change": 0}, "n_iter_no_change"),
    ({"dropout": 1.0}, "dropout"),
    ({"callbacks": ["not a callback"]}, "callbacks"),
    ({"dtype": "float16"}, "dtype"),
])
def test_bad_hyperparameters_raise_at_fit(iris, params, message):
    X, y = iris
    clf = MLPClassifier(**params)  # construction never validates (scikit-learn's contract)
    with pytest.raises(ValueError, match=message):
        clf.fit(X, y)
    with pytest.raises(ValueError, match="loss"):
        MLPRegressor(loss="huber").fit(X, y)


def test_conversion_both_ways(iris, tmp_path):
    X, y = iris
    names = np.array(["a", "b", "c"])[y]
    with pytest.warns(ConvergenceWarning):
        clf = MLPClassifier(max_iter=200, random_state=0).fit(X, names)
    model = clf.to_mlp()
    assert model.classes == ["a", "b", "c"]
    handgrad.save(model, tmp_path / "m.safetensors")
    back = handgrad.serialization.load(tmp_path / "m.safetensors")  # the network alone
    np.testing.assert_allclose(back.predict_proba(X), clf.predict_proba(X), rtol=1e-12)
    est = MLPClassifier.from_mlp(back)
    np.testing.assert_array_equal(est.predict(X), clf.predict(X))
    assert est.score(X, names) == clf.score(X, names)
    # a model trained with handgrad.fit becomes an estimator too
    m = handgrad.MLP(4, 8, 3, dtype="float64", seed=0)
    handgrad.fit(m, X, y, epochs=50, batch_size=16, seed=0)
    m.classes = ["0", "1", "2"]
    assert MLPClassifier.from_mlp(m).score(X, y.astype(str)) > 0.9


@quiet
def test_pickle_round_trip_keeps_training_going(iris):
    import pickle

    X, y = iris
    clf = MLPClassifier(max_iter=50, random_state=0).fit(X, y)
    clf.predict(X)
    blob = pickle.dumps(clf)
    again = pickle.loads(blob)
    np.testing.assert_array_equal(again.predict_proba(X), clf.predict_proba(X))
    assert again.coefs_[0].base is not None  # views of the network again, not copies
    # weights, their gradient buffer and Adam's two moments; no scratch, no copies
    assert len(blob) < 4 * clf.model_.param_buffer.nbytes + 20_000
    again.partial_fit(X, y)
    clf.partial_fit(X, y)
    np.testing.assert_array_equal(again.model_.param_buffer, clf.model_.param_buffer)


# --------------------------------------------------------------------------- #
# Beyond scikit-learn
# --------------------------------------------------------------------------- #


@quiet
def test_validation_data_is_evaluated_each_epoch(iris):
    from sklearn.metrics import log_loss, mean_squared_error

    X, y = iris
    X_train, y_train, X_val, y_val = X[::2], y[::2], X[1::2], y[1::2]
    clf = MLPClassifier(max_iter=15, random_state=0).fit(X_train, y_train,
                                                         validation_data=(X_val, y_val))
    assert len(clf.validation_loss_) == clf.n_iter_ == 15
    # the last entry is the final network's mean cross-entropy on the validation rows
    assert clf.validation_loss_[-1] == pytest.approx(log_loss(y_val, clf.predict_proba(X_val)),
                                                     rel=1e-9)
    assert clf.validation_scores_ is None  # scikit-learn's attribute: early stopping only
    weights = np.where(y_val == 2, 3.0, 1.0)
    reg = MLPRegressor(max_iter=10, random_state=0).fit(X_train, y_train * 1.0,
                                                        validation_data=(X_val, y_val, weights))
    half_mse = 0.5 * mean_squared_error(y_val, reg.predict(X_val), sample_weight=weights)
    assert reg.validation_loss_[-1] == pytest.approx(half_mse, rel=1e-9)
    # with early stopping the given rows replace the split: every training row trains
    es = MLPClassifier(max_iter=200, early_stopping=True, n_iter_no_change=5,
                       random_state=0).fit(X_train, y_train, validation_data=(X_val, y_val))
    assert es.t_ == es.n_iter_ * len(X_train)
    assert es.best_validation_score_ == max(es.validation_scores_)
    assert es.score(X_val, y_val) == es.best_validation_score_  # the best weights came back
    with pytest.raises(ValueError, match="validation_data"):
        MLPClassifier().fit(X, y, validation_data=X_val)
    with pytest.raises(ValueError, match="not among the classes"):
        MLPClassifier(max_iter=2).fit(X_train, y_train, validation_data=(X_val, y_val + 5))


@quiet
def test_dropout_regularises_reproducibly(iris):
    X, y = iris
    params = dict(hidden_layer_sizes=(32,), max_iter=300, batch_size=30, random_state=0)
    plain = MLPClassifier(**params).fit(X, y)
    dropped = MLPClassifier(dropout=0.5, **params).fit(X, y)
    again = MLPClassifier(dropout=0.5, **params).fit(X, y)
    np.testing.assert_array_equal(dropped.model_.param_buffer, again.model_.param_buffer)
    assert not np.array_equal(dropped.model_.param_buffer, plain.model_.param_buffer)
    np.testing.assert_array_equal(dropped.predict_proba(X), dropped.predict_proba(X))
    assert dropped.score(X, y) > 0.9
    # dropout is training-time noise: the training loss stays higher than without it
    assert dropped.loss_curve_[-1] > 2 * plain.loss_curve_[-1]


def test_callbacks_see_every_epoch_and_can_stop(iris):
    X, y = iris

    class Recorder(handgrad.Callback):
        def __init__(self):
            self.epochs, self.batches = [], 0

        def on_batch_end(self, batch, loss):
            self.batches += 1

        def on_epoch_end(self, epoch, history):
            self.epochs.append((epoch, history.train_loss[-1]))
            return epoch == 2  # stop after the third epoch

    recorder = Recorder()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)  # a callback's stop is no warning
        clf = MLPClassifier(batch_size=50, random_state=0, callbacks=[recorder]).fit(X, y)
    assert clf.n_iter_ == 3 and recorder.batches == 9
    assert [e for e, _ in recorder.epochs] == [0, 1, 2]
    assert [loss for _, loss in recorder.epochs] == clf.loss_curve_


@quiet
def test_library_callbacks_write_models(iris, tmp_path):
    X, y = iris
    checkpoint = handgrad.ModelCheckpoint(tmp_path / "epoch-{epoch}.safetensors",
                                          monitor="train_loss")
    clf = MLPClassifier(max_iter=3, random_state=0, callbacks=[checkpoint]).fit(X, y)
    saved = handgrad.serialization.load(tmp_path / "epoch-3.safetensors")
    np.testing.assert_array_equal(saved.param_buffer, clf.model_.param_buffer)


@quiet
def test_verbose_prints_epochs_and_a_progress_bar(iris, capsys, monkeypatch):
    import io
    import sys

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    X, y = iris
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    MLPClassifier(max_iter=2, batch_size=50, verbose=2, random_state=0).fit(X, y)
    out = capsys.readouterr().out
    assert out.count("Iteration") == 2 and "loss = " in out
    assert "epoch 1/2" in terminal.getvalue() and "epoch 2/2" in terminal.getvalue()
    MLPClassifier(max_iter=2, verbose=1, random_state=0).fit(X, y)
    assert capsys.readouterr().out.count("Iteration") == 2


@quiet
@pytest.mark.parametrize("kind", ["multiclass", "binary", "multilabel", "regression"])
def test_save_and_load_a_fitted_estimator_without_pickle(iris, tmp_path, kind):
    X, y = iris
    if kind == "multiclass":
        est, target = MLPClassifier(class_weight={"a": 1, "b": 2, "c": 1},
                                    n_iter_no_change=np.inf), np.array(["a", "b", "c"])[y]
    elif kind == "binary":
        est, target = MLPClassifier(early_stopping=True), y == 1
    elif kind == "multilabel":
        X, target = make_multilabel_classification(n_samples=60, n_classes=4, random_state=0)
        est = MLPClassifier(solver="lbfgs")
    else:
        est, target = MLPRegressor(loss="poisson", hidden_layer_sizes=(7, 5)), y * 1.0
    est.set_params(max_iter=20, random_state=0).fit(X, target)
    path = handgrad.save(est, tmp_path / "est.safetensors")
    assert b"pickle" not in path.read_bytes()[:200] and path.read_bytes()[8:9] == b"{"
    back = handgrad.load(path)
    assert type(back) is type(est) and back.get_params() == est.get_params()
    np.testing.assert_array_equal(back.predict(X), est.predict(X))
    for name in ("n_iter_", "t_", "loss_", "best_loss_", "loss_curve_", "validation_scores_",
                 "best_validation_score_", "n_features_in_", "n_outputs_", "out_activation_"):
        assert getattr(back, name) == getattr(est, name), name
    if kind != "regression":
        np.testing.assert_array_equal(back.classes_, est.classes_)
        np.testing.assert_array_equal(back.predict_proba(X), est.predict_proba(X))
    # the network alone, for the command line and handgrad.fit
    assert isinstance(handgrad.serialization.load(path), handgrad.MLP)
    # and training goes on from the saved weights
    if est.solver != "lbfgs" and not est.early_stopping:
        back.partial_fit(X, target)
        assert back.n_iter_ == 1 and back.t_ == est.t_ + len(X)


@quiet
@pytest.mark.parametrize("kind, params", [
    ("classifier", {"solver": "sgd", "momentum": 0.9}),
    ("classifier", {"solver": "sgd", "learning_rate": "adaptive", "n_iter_no_change": 1,
                    "tol": 10.0}),  # the rate is divided by 5 on the way: kept too
    ("classifier", {"solver": "adam"}),
    ("regressor", {"solver": "adam", "hidden_layer_sizes": (6, 4)}),
    ("regressor", {"solver": "sgd", "learning_rate": "invscaling", "learning_rate_init": 0.01}),
])
def test_partial_fit_after_save_and_load_equals_partial_fit_in_memory(iris, tmp_path, kind,
                                                                      params):
    X, y = iris
    if kind == "classifier":
        est, target, first = MLPClassifier(**params), y, {"classes": [0, 1, 2]}
    else:
        est, target, first = MLPRegressor(**params), y * 1.0, {}
    est.set_params(random_state=0)
    est.partial_fit(X, target, **first)
    for _ in range(3):
        est.partial_fit(X, target)
    back = handgrad.load(handgrad.save(est, tmp_path / "est.safetensors"))
    assert back._optimizer.learning_rate == est._optimizer.learning_rate
    if params.get("learning_rate") == "adaptive":
        assert est._optimizer.learning_rate < est.learning_rate_init  # it was divided
    for _ in range(2):
        est.partial_fit(X, target)
        back.partial_fit(X, target)
    for a, b in zip(est.coefs_ + est.intercepts_, back.coefs_ + back.intercepts_):
        np.testing.assert_array_equal(b, a)
    assert back.loss_curve_ == est.loss_curve_ and back.t_ == est.t_


def test_a_saved_optimizer_state_that_does_not_fit_the_solver_is_refused(iris, tmp_path):
    X, y = iris
    est = MLPClassifier(solver="sgd", hidden_layer_sizes=(5,), random_state=0)
    est.partial_fit(X, y, classes=[0, 1, 2])
    path = handgrad.save(est, tmp_path / "est.safetensors")
    model, state = handgrad.serialization.load_with_optimizer(path)
    model.training["params"]["solver"] = "adam"  # the file says adam, its state is SGD's
    with pytest.raises(handgrad.ModelFileError, match="'SGD', solver 'adam' uses Adam"):
        handgrad.sklearn.from_model(model, path, state)


def readme_estimator_blocks():
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text[text.index("## scikit-learn's MLPClassifier and MLPRegressor"):]
    section = section[:section.index("\n## ", 1)]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_the_readme_has_an_example_of_each_feature():
    blocks = readme_estimator_blocks()
    for feature in ("class_weight", "dropout", "validation_data", "callbacks", "verbose=2",
                    "handgrad.save", "handgrad.load"):
        assert any(feature in block for block in blocks), feature


@pytest.mark.parametrize("index", range(len(readme_estimator_blocks())))
def test_readme_estimator_examples_run_as_written(tmp_path, index):
    import subprocess
    import sys

    code = readme_estimator_blocks()[index]
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=tmp_path, timeout=600)
    assert run.returncode == 0, run.stderr
    if "print(" in code:
        assert run.stdout.strip()


KILLED_FIT = r"""
import os, sys
import numpy as np
import handgrad
from handgrad.sklearn import {cls}

class Die(handgrad.Callback):
    def on_epoch_end(self, epoch, history):
        if epoch + 1 == {kill_at}:
            os._exit(3)  # killed: no clean-up, the checkpoint of epoch {kill_at} on disk
        return False

rng = np.random.default_rng(0)
X, y = rng.normal(size=(150, 5)), rng.integers(0, 3, 150)
{cls}(**{params}, callbacks=[handgrad.BackupAndRestore(sys.argv[1], resume=True),
                              Die()]).fit(X, y)
"""


@quiet
@pytest.mark.parametrize("cls, solver, extra", [
    (MLPClassifier, "adam", {}), (MLPClassifier, "sgd", {}),
    (MLPClassifier, "sgd", {"learning_rate": "adaptive", "tol": 1e9, "n_iter_no_change": 2}),
    (MLPClassifier, "adam", {"early_stopping": True, "n_iter_no_change": 1000}),
    (MLPRegressor, "sgd", {"learning_rate": "invscaling"})])
def test_a_killed_fit_resumed_through_backup_and_restore_is_bit_identical(
        tmp_path, cls, solver, extra):
    """An estimator fit killed after epoch 6 (os._exit: no clean-up) and run again with
    BackupAndRestore(resume=True) ends as the uninterrupted fit: the weights, n_iter_,
    loss_curve_, the shuffle order's generator, the stopping rule's state."""
    import subprocess
    import sys

    params = dict(hidden_layer_sizes=(8,), solver=solver, max_iter=12, tol=0.0,
                  n_iter_no_change=1000, random_state=0, batch_size=32)
    params.update(extra)
    script = KILLED_FIT.format(cls=cls.__name__, kill_at=6, params=repr(params))
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 3, done.stderr
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(150, 5)), rng.integers(0, 3, 150)
    whole = cls(**params).fit(X, y)
    backup = handgrad.BackupAndRestore(tmp_path, resume=True)
    resumed = cls(**params, callbacks=[backup]).fit(X, y)
    assert backup.restored_from is not None
    assert resumed.n_iter_ == whole.n_iter_
    assert resumed.t_ == whole.t_
    assert resumed.loss_curve_ == whole.loss_curve_
    assert resumed._no_improvement_count == whole._no_improvement_count
    assert resumed._optimizer.learning_rate == whole._optimizer.learning_rate
    if whole.early_stopping:
        assert resumed.validation_scores_ == whole.validation_scores_
    for a, b in zip(resumed.coefs_ + resumed.intercepts_, whole.coefs_ + whole.intercepts_):
        np.testing.assert_array_equal(a, b)


def test_backup_and_restore_refuses_another_folds_checkpoint(tmp_path):
    """cross_val_score with one BackupAndRestore folder: the second fold (same size,
    other rows) is refused instead of getting the first fold's model."""
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(120, 4)), rng.integers(0, 2, 120)
    params = dict(hidden_layer_sizes=(4,), max_iter=3, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        MLPClassifier(**params, callbacks=[handgrad.BackupAndRestore(tmp_path, resume=True)]
                      ).fit(X[:60], y[:60])
        with pytest.raises(ValueError, match="training X, y differ.*resume=False"):
            MLPClassifier(**params, callbacks=[handgrad.BackupAndRestore(tmp_path, resume=True)]
                          ).fit(X[60:], y[60:])


@pytest.mark.parametrize("cls", [MLPClassifier, MLPRegressor])
def test_terminate_on_nan_on_an_estimator_warns_and_records_the_diverged_epoch(cls):
    """Without the callback a diverged fit raises scikit-learn's ValueError; with
    TerminateOnNaN it ends with a ConvergenceWarning (never silently), the last finite
    weights, n_iter_ counting the diverged epoch and loss_ NaN."""
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(200, 4)), rng.integers(0, 3, 200)
    params = dict(hidden_layer_sizes=(8,), solver="sgd", learning_rate_init=1e30,
                  max_iter=20, random_state=0)
    with pytest.raises(ValueError, match="non-finite"):
        cls(**params).fit(X, y)
    stop = handgrad.TerminateOnNaN()
    with pytest.warns(ConvergenceWarning, match="TerminateOnNaN ended training"):
        est = cls(**params, callbacks=[stop]).fit(X, y)
    assert stop.error is not None
    assert 1 <= est.n_iter_ == len(est.loss_curve_) < 20
    assert math.isnan(est.loss_) and math.isnan(est.loss_curve_[-1])
    assert all(np.isfinite(c).all() for c in est.coefs_)
    with warnings.catch_warnings():  # a sound fit with the same callback: no warning
        warnings.simplefilter("error", ConvergenceWarning)
        cls(**dict(params, learning_rate_init=1e-3, max_iter=200, tol=1e9,
                   n_iter_no_change=1), callbacks=[stop]).fit(X, y)
    assert stop.error is None


@pytest.mark.parametrize("how", ["negative index", "index too large", "indptr past the entries",
                                 "indptr going backwards"])
@pytest.mark.parametrize("fmt", ["csr", "csc"])
def test_sparse_input_with_a_broken_structure_is_refused(fmt, how, broken_sparse):
    """A sparse X whose indices do not fit its shape (SciPy checks them only on request)
    is refused by fit, partial_fit, predict and validation_data, never crashed on."""
    bad = broken_sparse(fmt, how)
    X = np.arange(1.0, 31.0).reshape(6, 5)
    y = np.arange(6) % 3
    params = dict(hidden_layer_sizes=(4,), max_iter=2, random_state=0)
    match = "sparse X .*(index|indptr)"
    for solver in ("adam", "lbfgs"):
        with pytest.raises(ValueError, match=match):
            MLPClassifier(solver=solver, **params).fit(bad, y)
    with pytest.raises(ValueError, match=match):
        MLPClassifier(early_stopping=True, validation_fraction=0.5, **params).fit(bad, y)
    with pytest.raises(ValueError, match=match):
        MLPRegressor(**params).fit(bad, y.astype(float))
    with pytest.raises(ValueError, match=match):
        MLPClassifier(**params).partial_fit(bad, y, classes=[0, 1, 2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = MLPClassifier(**params).fit(X, y)
        with pytest.raises(ValueError, match=match):
            clf.fit(X, y, validation_data=(bad, y))
    for method in (clf.predict, clf.predict_proba):
        with pytest.raises(ValueError, match=match):
            method(bad)
