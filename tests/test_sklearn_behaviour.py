"""Same settings, same behaviour: handgrad's estimators side by side with scikit-learn's.

Each configuration (solver, learning-rate schedule, momentum variant, alpha) is trained
by both libraries from three random states on the same small problems. handgrad's mean
score must lie within the run-to-run noise of scikit-learn's, and a run that learns
nothing where scikit-learn learns (a collapsed or stuck run) fails.
"""

import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")
from sklearn.datasets import load_digits, make_regression  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.neural_network import MLPClassifier as SkClassifier  # noqa: E402
from sklearn.neural_network import MLPRegressor as SkRegressor  # noqa: E402
from sklearn.preprocessing import MinMaxScaler, StandardScaler  # noqa: E402

from handgrad import MLPClassifier, MLPRegressor  # noqa: E402

SEEDS = (0, 1, 2)

SGD_VARIANTS = [dict(solver="sgd", learning_rate=schedule, momentum=momentum,
                     nesterovs_momentum=nesterov, learning_rate_init=0.05)
                for schedule in ("constant", "invscaling", "adaptive")
                for momentum, nesterov in ((0.0, False), (0.9, False), (0.9, True))]
CONFIGS = SGD_VARIANTS + [dict(solver="adam", learning_rate_init=0.01), dict(solver="lbfgs")]
ALPHAS = (1e-5, 1e-2, 1.0)


def _ids(config):
    return "-".join(f"{v}" for k, v in config.items() if k != "learning_rate_init")


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)  # 10 classes, few examples: settings matter
    X = MinMaxScaler().fit_transform(X)
    return train_test_split(X[:600], y[:600], test_size=0.5, random_state=0)


@pytest.fixture(scope="module")
def regression():
    X, y = make_regression(n_samples=300, n_features=8, n_informative=5, noise=10.0,
                           random_state=0)
    X = StandardScaler().fit_transform(X)
    return train_test_split(X, y / y.std(), test_size=0.5, random_state=0)


def side_by_side(ours, theirs, data, params):
    X_train, X_test, y_train, y_test = data
    scores = {"handgrad": [], "scikit-learn": []}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for seed in SEEDS:
            for name, Est in (("handgrad", ours), ("scikit-learn", theirs)):
                est = Est(hidden_layer_sizes=(16,), max_iter=30, random_state=seed, **params)
                scores[name].append(est.fit(X_train, y_train).score(X_test, y_test))
    return np.array(scores["handgrad"]), np.array(scores["scikit-learn"])


def assert_same_behaviour(ours, theirs, chance, floor=0.03):
    """handgrad's mean within scikit-learn's run-to-run noise (3 standard errors of the
    difference of the means, at least ``floor``); learning wherever scikit-learn learns."""
    noise = max(floor, 3 * np.sqrt((ours.var(ddof=1) + theirs.var(ddof=1)) / len(SEEDS)))
    assert abs(ours.mean() - theirs.mean()) <= noise, (ours, theirs, noise)
    if theirs.min() > chance + 0.2:
        assert ours.min() > chance + 0.2, f"a run collapsed: {ours} vs scikit-learn's {theirs}"


@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("config", CONFIGS, ids=_ids)
def test_classifier_scores_like_scikit_learn(digits, config, alpha):
    ours, theirs = side_by_side(MLPClassifier, SkClassifier, digits, dict(config, alpha=alpha))
    assert_same_behaviour(ours, theirs, chance=0.1)


@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("config", CONFIGS, ids=_ids)
def test_regressor_scores_like_scikit_learn(regression, config, alpha):
    params = dict(config, alpha=alpha)
    if params["solver"] == "sgd":
        params["learning_rate_init"] = 0.01  # scikit-learn's SGD diverges at 0.05 here
    ours, theirs = side_by_side(MLPRegressor, SkRegressor, regression, params)
    assert np.all(np.isfinite(ours))
    assert_same_behaviour(ours, theirs, chance=0.0, floor=0.05)
