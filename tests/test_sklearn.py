"""handgrad.MLPClassifier against scikit-learn's own estimator checks and tools."""

import warnings

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")
from sklearn.datasets import load_iris, make_classification  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

import handgrad  # noqa: E402
from handgrad.sklearn import MLPClassifier  # noqa: E402


@parametrize_with_checks([
    MLPClassifier(random_state=0),
    MLPClassifier(solver="sgd", hidden_layer_sizes=(20, 10), random_state=0),
    MLPClassifier(solver="lbfgs", activation="tanh", random_state=0),
])
def test_scikit_learn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)


@pytest.fixture(scope="module")
def iris():
    X, y = load_iris(return_X_y=True)
    return StandardScaler().fit_transform(X), y


def test_fitted_attributes_follow_scikit_learn(iris):
    X, y = iris
    with pytest.warns(ConvergenceWarning):
        clf = MLPClassifier(hidden_layer_sizes=(8, 6), max_iter=5, random_state=0).fit(X, y)
    assert clf.classes_.tolist() == [0, 1, 2] and clf.n_features_in_ == 4
    assert [c.shape for c in clf.coefs_] == [(4, 8), (8, 6), (6, 3)]
    assert [b.shape for b in clf.intercepts_] == [(8,), (6,), (3,)]
    assert clf.n_iter_ == 5 and len(clf.loss_curve_) == 5 and clf.loss_ == clf.loss_curve_[-1]
    assert clf.best_loss_ == min(clf.loss_curve_) and clf.n_layers_ == 4
    assert clf.t_ == 5 * len(X)


def test_accuracy_matches_scikit_learns_own_mlp(iris):
    from sklearn.neural_network import MLPClassifier as SkMLP

    X, y = iris
    ours = cross_val_score(MLPClassifier(max_iter=500, random_state=0), X, y, cv=5).mean()
    theirs = cross_val_score(SkMLP(max_iter=500, random_state=0), X, y, cv=5).mean()
    assert ours >= theirs - 0.03 and ours > 0.9


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
    grid.fit(X, y)
    assert grid.best_score_ > 0.8
    assert set(grid.best_params_) == {"mlpclassifier__hidden_layer_sizes", "mlpclassifier__alpha"}


def test_partial_fit_learns_incrementally(iris):
    X, y = iris
    clf = MLPClassifier(solver="sgd", learning_rate_init=0.05, random_state=0)
    with pytest.raises(ValueError, match="classes"):
        clf.partial_fit(X, y)
    clf.partial_fit(X, y, classes=[0, 1, 2])
    first = clf.loss_
    for _ in range(30):
        clf.partial_fit(X, y)
    assert clf.loss_ < first / 2 and clf.n_iter_ == 31
    with pytest.raises(ValueError, match="not among the classes"):
        clf.partial_fit(X, np.full(len(y), 7))
    assert not hasattr(MLPClassifier(solver="lbfgs"), "partial_fit")


def test_early_stopping_keeps_the_best_validation_weights(iris):
    X, y = iris
    clf = MLPClassifier(early_stopping=True, n_iter_no_change=3, max_iter=500,
                        random_state=0).fit(X, y)
    assert clf.best_loss_ is None and len(clf.validation_scores_) == clf.n_iter_
    assert clf.best_validation_score_ == max(clf.validation_scores_)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_class_weight_shifts_predictions():
    X, y = make_classification(n_samples=300, weights=[0.9, 0.1], class_sep=0.3, flip_y=0.1,
                               random_state=1)
    plain = MLPClassifier(max_iter=20, random_state=0).fit(X, y)
    balanced = MLPClassifier(max_iter=20, random_state=0, class_weight="balanced").fit(X, y)
    # the rare class gains probability mass when its examples weigh more
    assert balanced.predict_proba(X)[:, 1].mean() > plain.predict_proba(X)[:, 1].mean() + 0.1


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
    ({"dtype": "float16"}, "dtype"),
])
def test_bad_hyperparameters_raise_at_fit(iris, params, message):
    X, y = iris
    clf = MLPClassifier(**params)  # construction never validates (scikit-learn's contract)
    with pytest.raises(ValueError, match=message):
        clf.fit(X, y)


def test_conversion_both_ways_and_saving(iris, tmp_path):
    X, y = iris
    names = np.array(["a", "b", "c"])[y]
    clf = MLPClassifier(max_iter=200, random_state=0).fit(X, names)
    model = clf.to_mlp()
    assert model.classes == ["a", "b", "c"]
    handgrad.save(model, tmp_path / "m.safetensors")
    back = handgrad.load(tmp_path / "m.safetensors")
    np.testing.assert_allclose(back.predict_proba(X), clf.predict_proba(X), rtol=1e-12)
    est = MLPClassifier.from_mlp(back)
    np.testing.assert_array_equal(est.predict(X), clf.predict(X))
    assert est.score(X, names) == clf.score(X, names)
    # a model trained with handgrad.fit becomes an estimator too
    m = handgrad.MLP(4, 8, 3, dtype="float64", seed=0)
    handgrad.fit(m, X, y, epochs=50, batch_size=16, seed=0)
    m.classes = ["0", "1", "2"]
    assert MLPClassifier.from_mlp(m).score(X, y.astype(str)) > 0.9


def test_pickle_round_trip_drops_scratch_buffers(iris):
    import pickle

    X, y = iris
    clf = MLPClassifier(max_iter=50, random_state=0).fit(X, y)
    clf.predict(X)
    blob = pickle.dumps(clf)
    again = pickle.loads(blob)
    np.testing.assert_array_equal(again.predict_proba(X), clf.predict_proba(X))
    assert len(blob) < 3 * clf.model_.param_buffer.nbytes + 20_000
