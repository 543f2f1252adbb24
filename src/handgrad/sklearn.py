"""A scikit-learn estimator around the hand-derived network (needs scikit-learn).

``handgrad.MLPClassifier`` follows the estimator contract and scikit-learn's own
``MLPClassifier`` where their parameters overlap: the same names, defaults,
stopping rules (``tol``, ``n_iter_no_change``, ``early_stopping``), learning-rate
schedules and L2 penalty (``alpha``, on the weights and not the biases, scaled by
the batch's total sample weight). The gradients are handgrad's (docs/derivation.md);
the update rules are PyTorch's (``handgrad.optim``), which equal scikit-learn's for
SGD with momentum and differ from its Adam only in where ε sits.

Shape key: N rows, B batch, D features, H hidden units, M classes.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.utils import compute_class_weight
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import (
    _check_sample_weight,
    check_is_fitted,
    column_or_1d,
    validate_data,
)

from .model import MLP
from .optim import SGD, Adam

SOLVERS = ("lbfgs", "sgd", "adam")
LEARNING_RATES = ("constant", "invscaling", "adaptive")


class MLPClassifier(ClassifierMixin, BaseEstimator):
    """Multi-layer perceptron classifier with hand-derived gradients.

    Parameters are scikit-learn's ``MLPClassifier``'s, plus ``class_weight`` and
    ``dtype`` ("float64" or "float32", the network's arithmetic). The fitted
    network is ``model_`` (a :class:`handgrad.MLP`), which ``handgrad.save`` writes.
    """

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 class_weight=None, dtype="float64"):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.class_weight = class_weight
        self.dtype = dtype

    # -- parameters ------------------------------------------------------------

    def _validate_hyperparameters(self):
        def positive(name, value, integer=False):
            kind = (int, np.integer) if integer else (int, float, np.integer, np.floating)
            if isinstance(value, bool) or not isinstance(value, kind) or not value > 0:
                raise ValueError(f"{name} must be a positive {'integer' if integer else 'number'}"
                                 f", got {value!r}")

        sizes = self.hidden_layer_sizes
        sizes = [sizes] if isinstance(sizes, (int, np.integer)) else list(sizes)
        for s in sizes:
            positive("hidden_layer_sizes entries", s, integer=True)
        if self.activation not in ("relu", "tanh", "logistic", "identity"):
            raise ValueError(f"activation {self.activation!r} is not supported; choose relu, "
                             f"tanh, logistic or identity")
        if self.solver not in SOLVERS:
            raise ValueError(f"solver {self.solver!r} is not supported; choose one of {SOLVERS}")
        if self.learning_rate not in LEARNING_RATES:
            raise ValueError(f"learning_rate {self.learning_rate!r} is not supported; choose one "
                             f"of {LEARNING_RATES}")
        if isinstance(self.alpha, bool) or not (isinstance(self.alpha, (int, float))
                                                and self.alpha >= 0):
            raise ValueError(f"alpha must be a non-negative number, got {self.alpha!r}")
        positive("learning_rate_init", self.learning_rate_init)
        positive("max_iter", self.max_iter, integer=True)
        positive("max_fun", self.max_fun, integer=True)
        positive("n_iter_no_change", self.n_iter_no_change, integer=True)
        if self.batch_size != "auto":
            positive("batch_size", self.batch_size, integer=True)
        if not (isinstance(self.tol, (int, float)) and self.tol >= 0):
            raise ValueError(f"tol must be a non-negative number, got {self.tol!r}")
        if not 0 <= self.momentum <= 1:
            raise ValueError(f"momentum must lie in [0, 1], got {self.momentum!r}")
        for name in ("beta_1", "beta_2"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must lie in [0, 1), got {getattr(self, name)!r}")
        if not 0 < self.validation_fraction < 1:
            raise ValueError(f"validation_fraction must lie in (0, 1), got "
                             f"{self.validation_fraction!r}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        return tuple(int(s) for s in sizes)

    # -- fitted attributes shaped as scikit-learn's ------------------------------

    @property
    def coefs_(self):
        """Weights per layer as scikit-learn stores them: (n_in, n_out) views."""
        check_is_fitted(self, "model_")
        return [self.model_.params[f"W{l}"].T for l in range(1, self.model_.n_layers + 1)]

    @property
    def intercepts_(self):
        check_is_fitted(self, "model_")
        return [self.model_.params[f"b{l}"] for l in range(1, self.model_.n_layers + 1)]

    # -- fitting ------------------------------------------------------------------

    def fit(self, X, y, sample_weight=None):
        """Fit the network to ``X`` (N, D) and labels ``y`` (N,); returns self."""
        return self._fit(X, y, sample_weight, incremental=False)

    def _partial_fit_available(self):
        return self.solver in ("sgd", "adam")

    @available_if(_partial_fit_available)
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """One epoch over ``X``; ``classes`` is required on the first call."""
        if not hasattr(self, "classes_"):
            if classes is None:
                raise ValueError("classes must be passed on the first call to partial_fit")
            classes = np.unique(column_or_1d(classes))
            if len(classes) < 2:
                raise ValueError("partial_fit needs at least two classes, got "
                                 f"{len(classes)} class")
            self.classes_ = classes
        elif classes is not None and not np.array_equal(self.classes_, np.unique(classes)):
            raise ValueError(f"classes={classes!r} differs from the classes of the first "
                             f"partial_fit call, {self.classes_!r}")
        return self._fit(X, y, sample_weight, incremental=True)

    def _encode(self, y, incremental):
        check_classification_targets(y)
        if incremental:
            unknown = np.setdiff1d(np.unique(y), self.classes_)
            if len(unknown):
                raise ValueError(f"labels {unknown.tolist()} are not among the classes "
                                 f"{self.classes_.tolist()} given to partial_fit")
            return np.searchsorted(self.classes_, y)
        classes, encoded = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(f"the training labels hold only one class ({classes[0]!r}); a "
                             f"classifier needs at least two classes")
        if (self.warm_start and hasattr(self, "classes_")
                and not np.array_equal(classes, self.classes_)):
            raise ValueError("warm_start can only be used when y has the same classes as in "
                             "the previous call to fit")
        self.classes_ = classes
        return encoded

    def _fit(self, X, y, sample_weight, incremental):
        hidden = self._validate_hyperparameters()
        first_call = not (incremental and hasattr(self, "model_"))
        X, y = validate_data(self, X, y, reset=first_call, dtype=(np.float64, np.float32),
                             ensure_min_samples=1)
        y = column_or_1d(y, warn=True)
        sw = _check_sample_weight(sample_weight, X, dtype=np.float64)
        target = self._encode(y, incremental)
        if self.class_weight is not None:
            cw = compute_class_weight(self.class_weight, classes=self.classes_, y=y)
            sw = sw * cw[target]
        if not sw.sum() > 0:
            raise ValueError("sample weights sum to zero: no example carries weight")
        n_classes = len(self.classes_)
        rng = np.random.default_rng(_seed(self.random_state))
        reuse = hasattr(self, "model_") and (incremental or self.warm_start)
        if reuse and (self.model_.config.hidden != hidden or self.model_.n_classes != n_classes):
            if incremental:
                raise ValueError("hidden_layer_sizes changed between partial_fit calls")
            reuse = False  # warm_start with another architecture starts afresh
        if not reuse:
            self.model_ = MLP(X.shape[1], hidden, n_classes, activation=self.activation,
                              dtype=self.dtype, seed=int(rng.integers(1 << 63)))
            self.model_.classes = [str(c) for c in self.classes_]
            self._reset_state()
        X = self.model_.check_X(X)  # (N, D) in the network's dtype
        if self.solver == "lbfgs":
            self._fit_lbfgs(X, target, sw)
        else:
            self._fit_stochastic(X, target, sw, rng, incremental)
        self.n_layers_ = self.model_.n_layers + 1
        self.n_outputs_ = self.model_.n_classes
        self.out_activation_ = "softmax"
        return self

    def _reset_state(self):
        self.n_iter_ = 0
        self.t_ = 0
        self.loss_curve_ = []
        self.best_loss_ = np.inf
        self.validation_scores_ = [] if self.early_stopping else None
        self.best_validation_score_ = -np.inf if self.early_stopping else None
        self._no_improvement_count = 0
        self._optimizer = None
        self.loss_ = None

    def _penalised_loss_and_grads(self, X, target, sw):
        """Weighted mean loss plus ``alpha/2 Σ‖W‖² / Σ s`` and its gradient."""
        model = self.model_
        total = float(sw.sum())
        w = (sw / total).astype(model.dtype)  # (B,)
        loss = model._loss_and_grads(X, target, w)
        if self.alpha:
            for l in range(1, model.n_layers + 1):
                W = model.params[f"W{l}"]
                loss += 0.5 * self.alpha * float(np.vdot(W, W)) / total
                model.grads[f"W{l}"] += (self.alpha / total) * W  # biases are not penalised
        return loss

    def _make_optimizer(self):
        if self.solver == "sgd":
            nesterov = bool(self.nesterovs_momentum and self.momentum > 0)
            return SGD(self.learning_rate_init, momentum=self.momentum, nesterov=nesterov)
        return Adam(self.learning_rate_init, betas=(self.beta_1, self.beta_2), eps=self.epsilon)

    def _fit_stochastic(self, X, target, sw, rng, incremental):
        model = self.model_
        if self._optimizer is None:
            self._optimizer = self._make_optimizer()
        opt = self._optimizer
        X_val = y_val = None
        if self.early_stopping and not incremental:
            stratify = target if np.bincount(target).min() >= 2 else None
            idx_train, idx_val = train_test_split(
                np.arange(len(X)), test_size=self.validation_fraction,
                random_state=int(rng.integers(1 << 31)), stratify=stratify)
            X_val, y_val = X[idx_val], target[idx_val]
            X, target, sw = X[idx_train], target[idx_train], sw[idx_train]
        N = len(X)
        B = min(200, N) if self.batch_size == "auto" else min(int(self.batch_size), N)
        if self.batch_size != "auto" and self.batch_size > N and not incremental:
            warnings.warn("Got `batch_size` less than 1 or larger than sample size. It is going "
                          "to be clipped", UserWarning, stacklevel=3)
        epochs = 1 if incremental else self.max_iter
        for _ in range(epochs):
            order = rng.permutation(N) if self.shuffle else np.arange(N)
            accumulated = 0.0
            for start in range(0, N, B):
                idx = order[start:start + B]
                sb = sw[idx]
                if not sb.sum() > 0:
                    continue  # a batch of zero-weight rows carries no gradient
                loss = self._penalised_loss_and_grads(np.take(X, idx, axis=0), target[idx], sb)
                opt.step(model.param_buffer, model.grad_buffer)
                accumulated += loss * float(sb.sum())
            self.n_iter_ += 1
            self.t_ += N
            self.loss_ = accumulated / float(sw.sum())
            self.loss_curve_.append(self.loss_)
            if self.verbose:
                print(f"Iteration {self.n_iter_}, loss = {self.loss_:.8f}")
            self._update_no_improvement(X_val, y_val)
            if self.learning_rate == "invscaling" and self.solver == "sgd":
                opt.lr = self.learning_rate_init / (self.t_ + 1) ** self.power_t
            if self._no_improvement_count > self.n_iter_no_change:
                if self.learning_rate == "adaptive" and self.solver == "sgd" and opt.lr > 1e-6:
                    opt.lr /= 5.0
                    self._no_improvement_count = 0
                    if self.verbose:
                        print(f"Setting learning rate to {opt.lr:f}")
                else:
                    if self.verbose:
                        print(f"Training loss did not improve more than tol={self.tol} for "
                              f"{self.n_iter_no_change} consecutive epochs. Stopping.")
                    break
            if incremental:
                break
        else:
            if not incremental:
                warnings.warn(f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) "
                              f"reached and the optimization hasn't converged yet.",
                              ConvergenceWarning, stacklevel=3)
        if self.early_stopping and not incremental and self._best_params is not None:
            model.param_buffer[...] = self._best_params

    def _update_no_improvement(self, X_val, y_val):
        if X_val is not None:
            score = float(np.mean(self.model_.predict(X_val) == y_val))
            self.validation_scores_.append(score)
            if score < self.best_validation_score_ + self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if score > self.best_validation_score_:
                self.best_validation_score_ = score
                self._best_params = self.model_.param_buffer.copy()
            self.best_loss_ = None
            return
        self._best_params = None
        if self.loss_curve_[-1] > self.best_loss_ - self.tol:
            self._no_improvement_count += 1
        else:
            self._no_improvement_count = 0
        if self.loss_curve_[-1] < self.best_loss_:
            self.best_loss_ = self.loss_curve_[-1]

    def _fit_lbfgs(self, X, target, sw):
        from scipy.optimize import minimize

        model = self.model_
        buf64 = np.empty(model.n_params)

        def fun(theta):
            model.param_buffer[...] = theta
            loss = self._penalised_loss_and_grads(X, target, sw)
            np.copyto(buf64, model.grad_buffer)
            return loss, buf64

        result = minimize(fun, model.param_buffer.astype(np.float64), method="L-BFGS-B",
                          jac=True, options={"maxfun": self.max_fun, "maxiter": self.max_iter,
                                             "gtol": self.tol})
        model.param_buffer[...] = result.x
        self.n_iter_ = int(result.nit)
        self.loss_ = float(result.fun)
        self.loss_curve_ = [self.loss_]
        self.best_loss_ = self.loss_
        if result.status == 1:
            warnings.warn(f"lbfgs failed to converge after {self.n_iter_} iterations "
                          f"({result.message}); increase max_iter or scale the data",
                          ConvergenceWarning, stacklevel=3)

    # -- prediction ---------------------------------------------------------------

    def _rows(self, X):
        check_is_fitted(self, "model_")
        X = validate_data(self, X, reset=False, dtype=(np.float64, np.float32))
        return self.model_.check_X(X)

    def predict_proba(self, X):
        """Class probabilities (N, M), columns in the order of ``classes_``."""
        rows = self._rows(X)
        return self.model_.predict_proba(rows).astype(np.float64)

    def predict_log_proba(self, X):
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def predict(self, X):
        rows = self._rows(X)
        return self.classes_[self.model_.predict(rows)]

    # -- conversion -------------------------------------------------------------

    def to_mlp(self):
        """The fitted network as a :class:`handgrad.MLP` (a copy), ready for ``handgrad.save``."""
        check_is_fitted(self, "model_")
        model = self.model_.copy()
        model.classes = [str(c) for c in self.classes_]
        model.training = {"estimator": "handgrad.MLPClassifier", "n_iter": self.n_iter_,
                          "loss": self.loss_, "params": {
                              k: (list(v) if isinstance(v, tuple) else v)
                              for k, v in self.get_params().items()
                              if isinstance(v, (int, float, str, bool, tuple, type(None)))}}
        return model

    @classmethod
    def from_mlp(cls, model, **params):
        """A fitted estimator around (a copy of) ``model``; classes from ``model.classes``."""
        est = cls(hidden_layer_sizes=model.config.hidden, activation=model.config.activation,
                  dtype=model.config.dtype, **params)
        est._reset_state()
        est.model_ = model.copy()
        est.classes_ = np.array(model.classes if model.classes is not None
                                else list(range(model.n_classes)))
        est.n_features_in_ = model.n_inputs
        est.n_layers_ = model.n_layers + 1
        est.n_outputs_ = model.n_classes
        est.out_activation_ = "softmax"
        return est

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags

def _seed(random_state):
    """An integer seed from scikit-learn's random_state conventions."""
    if random_state is None:
        return None
    if isinstance(random_state, (int, np.integer)):
        return int(random_state)
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(np.iinfo(np.int32).max))
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(1 << 63))
    raise ValueError(f"random_state must be None, an int, a RandomState or a Generator, "
                     f"got {random_state!r}")
