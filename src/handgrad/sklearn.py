"""scikit-learn's ``neural_network`` estimators on handgrad's network (needs scikit-learn).

``handgrad.MLPClassifier`` and ``handgrad.MLPRegressor`` take scikit-learn's
``MLPClassifier``/``MLPRegressor`` parameters with their meaning and defaults, and
set the same fitted attributes, so changing the import is all a user does:

- the output layer is scikit-learn's: softmax + cross-entropy for multiclass, one
  logistic output + binary cross-entropy for binary problems and one per label for
  multilabel ones, identity + ½ squared error or exp + half Poisson deviance for
  regression (docs/derivation.md, B2 and B2ℓ–B2p);
- the weights start as scikit-learn's do (Glorot-uniform, drawn from
  ``random_state`` in its order), and ``alpha`` is its L2 penalty: ``½ α Σ‖W‖²``
  divided by the batch's total sample weight, on the weights and not the biases;
- the stopping rules (``tol``, ``n_iter_no_change``, ``early_stopping``), learning-rate
  schedules, ``warm_start``, ``partial_fit``, ``n_iter_``, ``t_`` and the warnings are
  scikit-learn's.

The ``sgd`` and ``adam`` solvers train through :class:`handgrad.Trainer`, the one
training loop (the same weights as :func:`handgrad.fit` with the same settings);
``lbfgs`` minimises the full-batch loss with SciPy's L-BFGS-B on the same gradients.
The update rules are PyTorch's (:mod:`handgrad.optim`): equal to scikit-learn's for
SGD with a constant rate; Adam differs only in where ε sits.

Beyond scikit-learn: ``class_weight``, ``dropout``, ``validation_data=(X_val, y_val)``
in ``fit`` (recorded per epoch in ``validation_loss_``), ``callbacks`` (handgrad's
:class:`~handgrad.Callback` objects), a per-batch progress bar with ``verbose >= 2``,
``dtype``, and ``handgrad.save``/``handgrad.load`` of a fitted estimator (no pickle).

A diverged fit (a non-finite or exploding loss) raises scikit-learn's ``ValueError``;
with :class:`~handgrad.TerminateOnNaN` among the callbacks it ends instead with the
last finite weights and a ``ConvergenceWarning``, and the diverged epoch is recorded as
scikit-learn records one under ``early_stopping`` (``n_iter_`` counts it, ``loss_`` and
the last ``loss_curve_`` entry are NaN).

Shape key: N rows, B batch, D features, H hidden units, M outputs.
"""

from __future__ import annotations

import math
import warnings
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, is_classifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils import check_random_state, compute_class_weight, shuffle
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import type_of_target, unique_labels
from sklearn.utils.validation import (
    _check_sample_weight,
    check_is_fitted,
    column_or_1d,
    validate_data,
)

from ._progress import progress_bar
from .model import MLP, Dropout, check_sparse_structure, logistic_output
from .optim import SGD, Adam
from .schedules import NoImprovement
from .callbacks import TerminateOnNaN
from .train import Callback, DivergenceError, Trainer

SOLVERS = ("lbfgs", "sgd", "adam")
STOCHASTIC_SOLVERS = ("sgd", "adam")
LEARNING_RATES = ("constant", "invscaling", "adaptive")
ACTIVATIONS = ("identity", "logistic", "tanh", "relu")
NON_FINITE_MESSAGE = ("Solver produced non-finite parameter weights. The input data may contain "
                      "large values and need to be preprocessed.")


class _BaseMLP(BaseEstimator):
    """What the classifier and the regressor share: parameters, fitting, prediction."""

    # -- parameters ------------------------------------------------------------

    def _validate_hyperparameters(self):
        """Check every parameter at fit time (scikit-learn's contract: never in
        ``__init__``); returns the hidden layer sizes as a tuple of ints."""
        def number(name, low=None, high=None, low_open=False, high_open=False, integer=False):
            value = getattr(self, name)
            kind = Integral if integer else Real
            bad = isinstance(value, bool) or not isinstance(value, kind) or math.isnan(value)
            if not bad and low is not None:
                bad = value <= low if low_open else value < low
            if not bad and high is not None:
                bad = value >= high if high_open else value > high
            if bad:
                lo = "" if low is None else ("(" if low_open else "[") + f"{low}"
                hi = "" if high is None else f"{high}" + (")" if high_open else "]")
                where = f" in {lo}, {hi}" if lo and hi else (
                    f" > {low}" if low_open else f" >= {low}") if lo else ""
                raise ValueError(f"{name} must be {'an integer' if integer else 'a number'}"
                                 f"{where}, got {value!r}")

        def flag(name):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")

        sizes = self.hidden_layer_sizes
        if isinstance(sizes, (Integral, np.integer)) and not isinstance(sizes, bool):
            sizes = [sizes]
        try:
            sizes = list(sizes)
        except TypeError:
            raise ValueError(f"hidden_layer_sizes must be an int or a sequence of ints, got "
                             f"{self.hidden_layer_sizes!r}") from None
        for s in sizes:
            if isinstance(s, bool) or not isinstance(s, (Integral, np.integer)) or s <= 0:
                raise ValueError(f"hidden_layer_sizes must be > 0, got {self.hidden_layer_sizes!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation {self.activation!r} is not supported; choose one of "
                             f"{', '.join(ACTIVATIONS)}")
        if self.solver not in SOLVERS:
            raise ValueError(f"solver {self.solver!r} is not supported; choose one of "
                             f"{', '.join(SOLVERS)}")
        if self.learning_rate not in LEARNING_RATES:
            raise ValueError(f"learning_rate {self.learning_rate!r} is not supported; choose "
                             f"one of {', '.join(LEARNING_RATES)}")
        number("alpha", 0)
        if not (isinstance(self.batch_size, str) and self.batch_size == "auto"):
            number("batch_size", 1, integer=True)
        number("learning_rate_init", 0, low_open=True)
        number("power_t", 0)
        number("max_iter", 1, integer=True)
        number("tol", 0)
        number("momentum", 0, 1)
        number("validation_fraction", 0, 1, high_open=True)
        number("beta_1", 0, 1, high_open=True)
        number("beta_2", 0, 1, high_open=True)
        number("epsilon", 0, low_open=True)
        if not (isinstance(self.n_iter_no_change, Real) and self.n_iter_no_change == np.inf):
            number("n_iter_no_change", 1, integer=True)
        number("max_fun", 1, integer=True)
        number("dropout", 0, 1, high_open=True)
        for name in ("shuffle", "warm_start", "nesterovs_momentum", "early_stopping"):
            flag(name)
        if not isinstance(self.verbose, (bool, np.bool_, Integral)):
            raise ValueError(f"verbose must be a bool or an int, got {self.verbose!r}")
        if self.dtype is not None and (self.dtype not in ("float32", "float64", np.float32,
                                                          np.float64)):
            raise ValueError(f"dtype must be None, 'float32' or 'float64', got {self.dtype!r}")
        if self.early_stopping and self.validation_fraction == 0:
            raise ValueError("early_stopping needs validation_fraction > 0")
        callbacks = [] if self.callbacks is None else list(self.callbacks)
        for cb in callbacks:
            if not isinstance(cb, Callback):
                raise ValueError(f"callbacks must be handgrad.Callback objects, got {cb!r}")
        return tuple(int(s) for s in sizes)

    # -- fitted weights, shaped as scikit-learn's --------------------------------

    def _publish_weights(self):
        """``coefs_``/``intercepts_``: (n_in, n_out) and (n_out,) views of the network's
        weights, so reading them costs nothing and writing into them trains on."""
        model = self.model_
        self.coefs_ = [model.params[f"W{l}"].T for l in range(1, model.n_layers + 1)]
        self.intercepts_ = [model.params[f"b{l}"] for l in range(1, model.n_layers + 1)]
        self._views = (tuple(self.coefs_), tuple(self.intercepts_))
        self.n_layers_ = model.n_layers + 1
        self.n_outputs_ = model.n_classes
        self.out_activation_ = model.config.output

    def _sync_model(self, output=None):
        """Make ``model_`` hold ``coefs_``/``intercepts_``: a user may have assigned them
        (scikit-learn lets one), with or without a fitted network behind them."""
        coefs, intercepts = getattr(self, "coefs_", None), getattr(self, "intercepts_", None)
        model = getattr(self, "model_", None)
        views = getattr(self, "_views", None)
        if (model is not None and views is not None and isinstance(coefs, list)
                and isinstance(intercepts, list) and len(coefs) == len(views[0])
                and len(intercepts) == len(views[1])
                and all(a is b for a, b in zip(coefs, views[0]))
                and all(a is b for a, b in zip(intercepts, views[1]))):
            return model  # untouched: the views are the network's own weights
        if coefs is None or intercepts is None:
            raise ValueError("coefs_ and intercepts_ must both be set")
        coefs = [np.asarray(c) for c in coefs]
        intercepts = [np.asarray(b).reshape(-1) for b in intercepts]
        if len(coefs) != len(intercepts) or not coefs:
            raise ValueError(f"coefs_ ({len(coefs)} arrays) and intercepts_ "
                             f"({len(intercepts)}) must list one array per layer")
        for i, (c, b) in enumerate(zip(coefs, intercepts)):
            if c.ndim != 2 or b.shape != (c.shape[1],):
                raise ValueError(f"layer {i}: coefs_[{i}] must be (n_in, n_out) and "
                                 f"intercepts_[{i}] (n_out,), got {c.shape} and {b.shape}")
            if i and c.shape[0] != coefs[i - 1].shape[1]:
                raise ValueError(f"coefs_[{i}] takes {c.shape[0]} inputs but layer {i - 1} "
                                 f"has {coefs[i - 1].shape[1]} units")
        n_in, n_out = coefs[0].shape[0], coefs[-1].shape[1]
        hidden = tuple(c.shape[1] for c in coefs[:-1])
        if output is None:
            output = model.config.output if model is not None else self._output_for(n_out)
        same = (model is not None and model.config.hidden == hidden
                and model.n_inputs == n_in and model.n_classes == n_out
                and model.config.output == output)
        if not same:
            dtype = model.config.dtype if model is not None else self._network_dtype(
                np.result_type(*coefs))
            model = MLP(n_in, hidden, n_out, activation=self.activation, dtype=dtype,
                        seed=0, output=output)
        model.set_params({**{f"W{l + 1}": c.T for l, c in enumerate(coefs)},
                          **{f"b{l + 1}": b for l, b in enumerate(intercepts)}})
        self.model_ = model
        self._publish_weights()
        return model

    def _network_dtype(self, data_dtype):
        """The network's arithmetic: ``dtype`` if set, else the data's (float32 stays
        float32, anything else is float64), as scikit-learn keeps float32."""
        if self.dtype is not None:
            return np.dtype(self.dtype).name
        return "float32" if np.dtype(data_dtype) == np.float32 else "float64"

    def _initialize(self, X, n_outputs, hidden, rs):
        """A new network with scikit-learn's initial weights, and fresh training state."""
        sizes = (X.shape[1], *hidden, n_outputs)
        model = MLP(X.shape[1], hidden, n_outputs, activation=self.activation,
                    dtype=self._network_dtype(X.dtype), seed=0,
                    output=self._output_for(n_outputs))
        # Glorot-uniform for weights and biases, drawn in scikit-learn's order (each
        # layer's (n_in, n_out) weights, then its biases): the same random_state gives
        # scikit-learn's initial network.
        factor = 2.0 if self.activation == "logistic" else 6.0
        for l, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
            bound = math.sqrt(factor / (fan_in + fan_out))
            model.params[f"W{l}"][...] = rs.uniform(-bound, bound, (fan_in, fan_out)).T
            model.params[f"b{l}"][...] = rs.uniform(-bound, bound, fan_out)
        self.model_ = model
        self._publish_weights()
        # the Trainer's seed: epoch e's shuffle is drawn from (seed, e); an integer
        # random_state is the seed itself, so handgrad.fit(seed=random_state) matches
        self._seed = (int(self.random_state) if isinstance(self.random_state, Integral)
                      and not isinstance(self.random_state, bool)
                      else int(rs.randint(np.iinfo(np.int32).max)))
        self._reset_state()

    def _reset_state(self):
        self.n_iter_ = 0
        self.t_ = 0
        self._epoch = 0  # epochs trained so far, over every call: the next shuffle's index
        self._optimizer = None
        self.loss_ = None
        self.loss_curve_ = []
        self.validation_loss_ = []
        self._no_improvement_count = 0
        self._best_params = self.model_.param_buffer.copy() if self.early_stopping else None
        if self.early_stopping:
            self.validation_scores_ = []
            self.best_validation_score_ = -np.inf
            self.best_loss_ = None
        else:
            self.best_loss_ = np.inf
            self.validation_scores_ = None
            self.best_validation_score_ = None

    def _ensure_state(self):
        """Training state a user-assigned ``coefs_`` came without (scikit-learn's
        defaults), so ``partial_fit``/``warm_start`` continue from it."""
        defaults = {"n_iter_": 0, "t_": 0, "_epoch": 0, "_optimizer": None, "loss_": None,
                    "loss_curve_": [], "validation_loss_": [], "_no_improvement_count": 0,
                    "best_loss_": None if self.early_stopping else np.inf,
                    "validation_scores_": [] if self.early_stopping else None,
                    "best_validation_score_": -np.inf if self.early_stopping else None}
        for name, value in defaults.items():
            if not hasattr(self, name):
                setattr(self, name, value)
        if self.early_stopping and (getattr(self, "_best_params", None) is None
                                    or self._best_params.shape != self.model_.param_buffer.shape):
            self._best_params = self.model_.param_buffer.copy()
        if not hasattr(self, "_seed"):
            rs = check_random_state(self.random_state)
            self._seed = (int(self.random_state) if isinstance(self.random_state, Integral)
                          and not isinstance(self.random_state, bool)
                          else int(rs.randint(np.iinfo(np.int32).max)))
        if self.early_stopping and self.validation_scores_ is None:
            self.validation_scores_, self.best_validation_score_ = [], -np.inf
        if self.best_validation_score_ is None and self.early_stopping:
            self.best_validation_score_ = -np.inf

    # -- fitting ---------------------------------------------------------------

    def _fit(self, X, y, sample_weight, incremental, validation_data=None):
        hidden = self._validate_hyperparameters()
        if incremental and self.early_stopping:
            raise ValueError("partial_fit does not support early_stopping=True")
        if self.solver == "lbfgs":
            self._refuse_unused_by_lbfgs(validation_data)
        first_pass = not hasattr(self, "coefs_") or (not self.warm_start and not incremental)
        X, Y, y_raw = self._validate_input(X, y, incremental, reset=first_pass)  # Y: (N, M)
        check_sparse_structure(X)  # before any row of it is taken (the split, batches)
        sw = None
        if sample_weight is not None:
            sw = _check_sample_weight(sample_weight, X, dtype=np.float64)
            if sw.size and sw.min() < 0:
                raise ValueError(f"sample_weight must be non-negative; its smallest value is "
                                 f"{sw.min():g}")
        sw = self._weigh_classes(y_raw, Y, sw, incremental)
        if sw is not None and not sw.sum() > 0:
            raise ValueError("sample weights sum to zero: no example carries weight")
        rs = check_random_state(self.random_state)
        if first_pass:
            self._initialize(X, Y.shape[1], hidden, rs)
        else:
            model = self._sync_model(self._output_for(Y.shape[1]))
            if model.config.hidden != hidden or model.n_classes != Y.shape[1]:
                raise ValueError(
                    f"the network has hidden layers {model.config.hidden} and "
                    f"{model.n_classes} outputs, but this call needs {hidden} and "
                    f"{Y.shape[1]}: {'partial_fit' if incremental else 'warm_start'} "
                    f"continues the same network (set warm_start=False to start afresh)")
            self._ensure_state()
        if validation_data is not None:
            validation_data = self._validation_rows(validation_data)
        if self.solver == "lbfgs":
            self._fit_lbfgs(X, Y, sw)
        else:
            self._fit_stochastic(X, Y, y_raw, sw, rs, incremental, validation_data)
        if not np.all(np.isfinite(self.model_.param_buffer)):
            raise ValueError(NON_FINITE_MESSAGE)
        self._publish_weights()
        return self

    def _refuse_unused_by_lbfgs(self, validation_data):
        """handgrad's own options work through the training loop, which ``lbfgs`` does not
        use: refused rather than silently ignored."""
        unused = []
        if self.dropout:
            unused.append(f"dropout={self.dropout!r}")
        if self.callbacks:
            unused.append("callbacks")
        if validation_data is not None:
            unused.append("validation_data")
        if unused:
            raise ValueError(f"solver='lbfgs' would ignore {', '.join(unused)}: these work "
                             f"through handgrad's training loop, which the sgd and adam "
                             f"solvers use; choose solver='adam' or 'sgd', or leave them out")

    def _validation_rows(self, validation_data):
        """``(X_val, Y_val, y_val, sw_val)`` from ``validation_data=(X_val, y_val)`` or
        ``(X_val, y_val, sample_weight_val)``."""
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
            raise ValueError("validation_data must be (X_val, y_val) or (X_val, y_val, "
                             "sample_weight_val)")
        X_val, y_val, *sw_val = validation_data
        X_val = validate_data(self, X_val, reset=False, accept_sparse=["csr", "csc"],
                              dtype=(np.float64, np.float32))
        Y_val, y_val = self._encode_validation(y_val, X_val.shape[0])
        sw_val = sw_val[0] if sw_val else None
        if sw_val is not None:
            sw_val = _check_sample_weight(sw_val, X_val, dtype=np.float64)
        return X_val, Y_val, y_val, sw_val

    def _target(self, Y):
        """What the network trains on: labels (N,) for softmax, rows (N, M) otherwise."""
        if self.model_.config.output == "softmax":
            return np.argmax(Y, axis=1)  # (N,)  one-hot rows to class indices
        return np.asarray(Y, dtype=self.model_.dtype)  # (N, M)

    def _make_optimizer(self):
        if self.solver == "sgd":
            nesterov = bool(self.nesterovs_momentum and self.momentum > 0)
            return SGD(float(self.learning_rate_init), momentum=float(self.momentum),
                       nesterov=nesterov)
        return Adam(float(self.learning_rate_init), betas=(float(self.beta_1),
                    float(self.beta_2)), eps=float(self.epsilon))

    def _early_stopping_split(self, X, Y, y_raw, sw, rs):
        """scikit-learn's split of a validation set off the training data (drawn from
        ``random_state`` after the initial weights), stratified for classifiers."""
        n = X.shape[0]
        stratify = self._stratify(Y, y_raw)
        try:
            idx_train, idx_val = train_test_split(np.arange(n), random_state=rs,
                                                  test_size=self.validation_fraction,
                                                  stratify=stratify)
        except ValueError:
            if stratify is None or self.n_outputs_ == 1:
                raise  # scikit-learn's own error (a class with too few members)
            # multiclass labels with a class too small to split: split unstratified, as
            # scikit-learn does for every multiclass problem
            idx_train, idx_val = train_test_split(np.arange(n), random_state=rs,
                                                  test_size=self.validation_fraction)
        if len(idx_val) < 2:
            raise ValueError("The validation set is too small. Increase 'validation_fraction' "
                             "or the size of your dataset.")
        take = (lambda a, i: None if a is None else a[i])
        return ((X[idx_train], Y[idx_train], take(sw, idx_train)),
                (X[idx_val], Y[idx_val], take(y_raw, idx_val), take(sw, idx_val)))

    def _fit_stochastic(self, X, Y, y_raw, sw, rs, incremental, validation_data):
        model = self.model_
        if not incremental or self._optimizer is None:
            self._optimizer = _Solver(self._make_optimizer())
        opt = self._optimizer.optimizer
        val = None
        if validation_data is not None:
            val = validation_data  # (X_val, Y_val, y_val, sw_val): no split
        elif self.early_stopping:
            (X, Y, sw), val = self._early_stopping_split(X, Y, y_raw, sw, rs)
        N = X.shape[0]
        if self.batch_size == "auto":
            B = min(200, N)
        else:
            if self.batch_size > N:
                warnings.warn("Got `batch_size` less than 1 or larger than sample size. It is "
                              "going to be clipped", UserWarning, stacklevel=4)
            B = int(np.clip(self.batch_size, 1, N))
        epochs = 1 if incremental else int(self.max_iter)
        start = self._epoch
        order = ScikitLearnOrder(rs, N)
        monitor = _Monitor(self, N, val, incremental, order)
        callbacks = [monitor, *(self.callbacks or ())]
        if self.verbose and self.verbose >= 2:
            callbacks.append(_ProgressBar(start + epochs))
        uniform = sw is None or np.all(sw == sw[0])  # equal weights: the plain mean
        dropout = Dropout(0.0, float(self.dropout)) if self.dropout else None
        validation = None if val is None else (val[0], self._target(val[1]), val[3])
        trainer = Trainer(model, X, self._target(Y), optimizer=opt, epochs=start + epochs,
                          initial_epoch=start, batch_size=B, shuffle=bool(self.shuffle),
                          order=order, seed=self._seed,
                          sample_weight=None if uniform else sw, validation_data=validation,
                          callbacks=callbacks, l2=float(self.alpha), dropout=dropout,
                          max_loss=math.inf)  # scikit-learn never stops on a large loss
        self.n_iter_ = 0  # (a BackupAndRestore resume sets it back, with the rest)
        terminators = [cb for cb in callbacks if isinstance(cb, TerminateOnNaN)]
        try:
            trainer.run()
            err = next((cb.error for cb in terminators if cb.error is not None), None)
            if err is not None:  # TerminateOnNaN ended training quietly: say so
                raise err
        except DivergenceError as err:
            self._epoch = trainer.epoch + 1
            if not self.early_stopping and not terminators:
                raise ValueError(f"{NON_FINITE_MESSAGE} ({err})") from err
            # as scikit-learn: the diverged epoch scores NaN, the best weights come back
            self.n_iter_ += 1
            self.loss_ = math.nan
            self.loss_curve_.append(math.nan)
            if self.early_stopping:
                self.validation_scores_.append(math.nan)
                kept = "the weights of the best validation score were restored"
            else:
                kept = ("TerminateOnNaN ended training: the weights are those of the last "
                        "finite update")
            warnings.warn(f"{err}; {kept}", ConvergenceWarning, stacklevel=4)
        except KeyboardInterrupt:
            warnings.warn("Training interrupted by user.", stacklevel=4)
        if (not incremental and not monitor.stopped and self.n_iter_ == self.max_iter
                and not math.isnan(self.loss_ if self.loss_ is not None else 0.0)):
            warnings.warn(f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) reached "
                          f"and the optimization hasn't converged yet.", ConvergenceWarning,
                          stacklevel=4)
        if self.early_stopping:
            model.param_buffer[...] = self._best_params  # scikit-learn restores the best
        else:
            self._best_params = None  # kept only for early stopping's restore

    def _fit_lbfgs(self, X, Y, sw):
        from scipy.optimize import minimize

        model = self.model_
        target = self._target(Y)
        grad64 = np.empty(model.n_params)  # (n_params,) SciPy works in float64
        curve = []

        def fun(theta):
            model.param_buffer[...] = theta
            loss, _ = model.loss_and_grads(X, target, sw, l2=float(self.alpha))  # R1
            np.copyto(grad64, model.grad_buffer)
            return loss, grad64

        def record(intermediate_result):
            curve.append(float(intermediate_result.fun))
            if self.verbose:
                print(f"Iteration {len(curve)}, loss = {curve[-1]:.8f}")

        with np.errstate(over="ignore", invalid="ignore"):
            result = minimize(fun, model.param_buffer.astype(np.float64), method="L-BFGS-B",
                              jac=True, callback=record,
                              options={"maxfun": int(self.max_fun), "maxiter": int(self.max_iter),
                                       "gtol": float(self.tol)})
        model.param_buffer[...] = result.x
        self.n_iter_ = min(int(result.nit), int(self.max_iter))
        self.loss_ = float(result.fun)
        self.loss_curve_ = curve
        self.t_ = getattr(self, "t_", 0) + X.shape[0]
        if result.status != 0:
            message = (f"lbfgs failed to converge after {self.n_iter_} iteration(s) (status="
                       f"{result.status}):\n{result.message}\n")
            if self.n_iter_ == self.max_iter:
                message += (f"\nIncrease the number of iterations to improve the convergence "
                            f"(max_iter={self.max_iter}).")
            message += "\nYou might also want to scale the data (sklearn.preprocessing)."
            warnings.warn(message, ConvergenceWarning, stacklevel=4)

    def _loss_grad_lbfgs(self, packed_coef_inter, X, y, sample_weight, *_buffers):
        """scikit-learn's private ``(loss, gradient)`` of packed parameters (every
        ``coefs_`` (n_in, n_out) row by row, then every ``intercepts_``), penalty
        included; sets the network to them, as scikit-learn's does. For code written
        against scikit-learn's internals (its gradient test among them); the buffers
        it passes are not needed."""
        model = self._sync_model()
        sizes = model.config.layer_sizes
        packed = np.asarray(packed_coef_inter)
        params, offset = {}, 0
        for l, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
            params[f"W{l}"] = packed[offset:offset + n_in * n_out].reshape(n_in, n_out).T
            offset += n_in * n_out
        for l, n_out in enumerate(sizes[1:], start=1):
            params[f"b{l}"] = packed[offset:offset + n_out]
            offset += n_out
        if offset != packed.size:
            raise ValueError(f"packed parameters hold {packed.size} values, the network "
                             f"{offset}")
        model.set_params(params)
        Y = np.asarray(y)
        Y = Y.reshape(-1, 1) if Y.ndim == 1 else Y  # (N, M)
        loss, grads = model.loss_and_grads(X, self._target(Y), sample_weight,
                                           l2=float(self.alpha))
        grad = np.concatenate([grads[f"W{l}"].T.ravel() for l in range(1, len(sizes))]
                              + [grads[f"b{l}"] for l in range(1, len(sizes))])
        return loss, grad.astype(np.float64)

    def _partial_fit_available(self):
        return self.solver in STOCHASTIC_SOLVERS

    # -- prediction ------------------------------------------------------------

    def _checked(self, X):
        """X validated against the fit (features, names, finite), and the network."""
        check_is_fitted(self, "coefs_")
        X = validate_data(self, X, reset=False, accept_sparse=["csr", "csc"],
                          dtype=(np.float64, np.float32))
        return X, self._sync_model()

    def _outputs(self, X):
        """The output layer's values P (N, M) for X, in the network's dtype."""
        X, model = self._checked(X)
        return model.output(X)

    def _score_rows(self, X, y, sample_weight):
        """scikit-learn's validation score on checked rows: NaN when P is not finite."""
        P = self.model_.output(X)
        if not np.all(np.isfinite(P)):
            return math.nan
        return float(self._score_function(y, self._decide(P), sample_weight=sample_weight))

    # -- conversion --------------------------------------------------------------

    def to_mlp(self):
        """The fitted network as a :class:`handgrad.MLP` (a copy), with this estimator's
        parameters and fitted state in ``model.training``: what ``handgrad.save`` writes."""
        check_is_fitted(self, "coefs_")
        model = self._sync_model().copy()
        model.training = _describe(self)
        if is_classifier(self):
            model.classes = ([str(c) for c in self.classes_]
                             if len(self.classes_) == model.n_classes else None)
        return model

    def _saved_optimizer(self):
        """The stochastic solver's optimizer, whose state ``handgrad.save`` keeps beside the
        network so that ``partial_fit`` after ``handgrad.load`` continues as it would have
        in memory; None before any stochastic fit (or when its state no longer fits the
        network: ``coefs_`` assigned another architecture)."""
        solver = getattr(self, "_optimizer", None)
        if solver is None or getattr(self, "model_", None) is None:
            return None
        optimizer = solver.optimizer
        buffer = self._sync_model().param_buffer
        for st in optimizer.state.values():
            for value in st.values():
                if isinstance(value, np.ndarray) and (value.shape != buffer.shape
                                                      or value.dtype != buffer.dtype):
                    return None
        return optimizer

    def __getstate__(self):
        # coefs_/intercepts_ are views of model_'s weights: rebuilt, not pickled twice
        state = self.__dict__.copy()
        if "model_" in state and "_views" in state:
            self._sync_model()
            state = self.__dict__.copy()
            for name in ("coefs_", "intercepts_", "_views"):
                state.pop(name, None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        if "model_" in state and "coefs_" not in state:
            self._publish_weights()

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.input_tags.allow_nan = False
        return tags


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """Multi-layer perceptron classifier with hand-derived gradients.

    scikit-learn's ``MLPClassifier`` parameters (same names, defaults and meaning),
    plus:

    class_weight : dict, "balanced" or None
        Weights of the classes, multiplying ``sample_weight`` (single-output targets;
        "balanced" is for ``fit`` only, as in ``SGDClassifier``).
    dropout : float in [0, 1)
        Inverted dropout of the hidden units while training (docs/derivation.md D1–D2).
    callbacks : list of handgrad.Callback
        Called by the training loop (``sgd`` and ``adam``): per batch, per epoch, at
        the end; an ``on_epoch_end`` returning True stops training.
    dtype : None, "float32" or "float64"
        The network's arithmetic; None follows X (float32 stays float32).

    The fitted network is ``model_`` (a :class:`handgrad.MLP`); ``fit`` also takes
    ``validation_data=(X_val, y_val)``, whose loss per epoch is ``validation_loss_``.
    """

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 class_weight=None, dropout=0.0, callbacks=None, dtype=None):
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
        self.dropout = dropout
        self.callbacks = callbacks
        self.dtype = dtype

    _score_function = staticmethod(accuracy_score)

    def fit(self, X, y, sample_weight=None, validation_data=None):
        """Fit to ``X`` (N, D), dense or sparse, and labels ``y`` (N,) or a label
        indicator matrix (N, L). ``validation_data=(X_val, y_val)`` (or with a third
        entry, its sample weights) is evaluated after each epoch (its loss in
        ``validation_loss_``) and, with ``early_stopping``, replaces the split."""
        return self._fit(X, y, sample_weight, incremental=False,
                         validation_data=validation_data)

    @available_if(_BaseMLP._partial_fit_available)
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """One epoch over ``X``; ``classes`` is required on the first call."""
        if not hasattr(self, "classes_"):
            if classes is None:
                raise ValueError("classes must be passed on the first call to partial_fit.")
            self._label_binarizer = LabelBinarizer()
            if type_of_target(y).startswith("multilabel"):
                self._label_binarizer.fit(y)
            else:
                self._label_binarizer.fit(classes)
            self.classes_ = self._label_binarizer.classes_
        elif classes is not None and not np.array_equal(self.classes_, unique_labels(classes)):
            raise ValueError(f"`classes={classes!r}` is not the same as on last call to "
                             f"partial_fit, was: {self.classes_!r}")
        return self._fit(X, y, sample_weight, incremental=True)

    def _output_for(self, n_outputs):
        """scikit-learn's output layer: softmax for multiclass, logistic otherwise."""
        binarizer = getattr(self, "_label_binarizer", None)
        if binarizer is not None:
            return "softmax" if binarizer.y_type_ == "multiclass" else "logistic"
        return "softmax" if n_outputs > 2 else "logistic"

    def _validate_input(self, X, y, incremental, reset):
        X, y = validate_data(self, X, y, accept_sparse=["csr", "csc"], multi_output=True,
                             dtype=(np.float64, np.float32), reset=reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if not hasattr(self, "classes_") or (not self.warm_start and not incremental):
            self._label_binarizer = LabelBinarizer()
            self._label_binarizer.fit(y)
            self.classes_ = self._label_binarizer.classes_
        else:
            classes = unique_labels(y)
            if self.warm_start:
                if set(classes) != set(self.classes_):
                    raise ValueError(
                        "warm_start can only be used where `y` has the same classes as in the "
                        f"previous call to fit. Previously got {self.classes_}, `y` has "
                        f"{classes}")
            elif len(np.setdiff1d(classes, self.classes_, assume_unique=True)):
                raise ValueError(f"`y` has classes not in `self.classes_`. `self.classes_` has "
                                 f"{self.classes_}. 'y' has {classes}.")
        Y = self._label_binarizer.transform(y).astype(bool)  # (N, M) indicators
        return X, Y, y

    def _encode_validation(self, y_val, n_rows):
        y_val = np.asarray(y_val)
        if y_val.ndim == 2 and y_val.shape[1] == 1:
            y_val = column_or_1d(y_val, warn=True)
        if len(y_val) != n_rows:
            raise ValueError(f"validation_data: y_val has {len(y_val)} rows, X_val {n_rows}")
        unknown = np.setdiff1d(unique_labels(y_val), self.classes_)
        if len(unknown):
            raise ValueError(f"validation_data: labels {unknown.tolist()} are not among the "
                             f"classes {self.classes_.tolist()}")
        return self._label_binarizer.transform(y_val).astype(bool), y_val

    def _stratify(self, Y, y_raw):
        if Y.shape[1] == 1:
            return Y  # binary: scikit-learn's stratification on the indicator
        if self._label_binarizer.y_type_ == "multiclass":
            return y_raw  # multiclass: by label (scikit-learn does not stratify these)
        return None  # multilabel: never

    def _weigh_classes(self, y, Y, sw, incremental):
        if self.class_weight is None:
            return sw
        cw = self.class_weight
        if not (isinstance(cw, dict) or (isinstance(cw, str) and cw == "balanced")):
            raise ValueError(f"class_weight must be None, 'balanced' or a dict "
                             f"{{class: weight}}, got {cw!r}")
        for c, w in (cw.items() if isinstance(cw, dict) else ()):
            if (isinstance(w, (bool, np.bool_)) or not isinstance(w, (Real, np.number))
                    or not (math.isfinite(w) and w >= 0)):
                raise ValueError(f"class_weight[{c!r}] must be a non-negative number, "
                                 f"got {w!r}")
        if self._label_binarizer.y_type_.startswith("multilabel"):
            raise ValueError("class_weight needs single-output targets, not multilabel ones")
        if incremental and isinstance(self.class_weight, str):
            raise ValueError(f"class_weight={self.class_weight!r} is not supported for "
                             f"partial_fit (the classes' frequencies are the whole data's); "
                             f"pass a dict")
        cw = compute_class_weight(self.class_weight, classes=self.classes_, y=y)
        per_row = cw[np.searchsorted(self.classes_, y)]  # (N,)
        return per_row if sw is None else sw * per_row

    def _decide(self, P):
        """Labels from the output values P (N, M): scikit-learn's inverse binarization."""
        if P.shape[1] == 1:
            P = P.ravel()
        return self._label_binarizer.inverse_transform(P)

    def predict(self, X):
        """Predicted labels (N,), or a label indicator matrix (N, L) for multilabel."""
        return self._decide(self._outputs(X))

    def predict_proba(self, X):
        """Probabilities (N, M): of each class (columns ordered as ``classes_``), or of
        each label for multilabel."""
        X, model = self._checked(X)
        if model.config.output != "logistic":
            return model.output(X)  # (N, M) softmax
        if model.n_classes == 1:  # binary: the one logistic output gives both classes,
            O = model.logits(X)  # (N, 1)
            P = np.empty((O.shape[0], 2), O.dtype)  # (N, 2)
            logistic_output(-O, P[:, :1], np.empty_like(O))  # σ(−O) = 1 − σ(O), not
            logistic_output(O, P[:, 1:], np.empty_like(O))  # formed by a subtraction
        else:
            P = model.output(X)  # (N, L) one probability per label
        # σ(O) rounds to exactly 1 for O > 37 (float64); probabilities stay inside
        # (0, 1), clipped where scikit-learn's log-loss clips them
        eps = np.finfo(P.dtype).eps
        return np.clip(P, eps, 1 - eps, out=P)

    def predict_log_proba(self, X):
        P = self.predict_proba(X)
        with np.errstate(divide="ignore"):
            return np.log(P, out=P)

    @classmethod
    def from_mlp(cls, model, **params):
        """A fitted estimator around (a copy of) a softmax ``model``, e.g. one trained by
        :func:`handgrad.fit`; classes from ``model.classes`` (else 0..M-1)."""
        est = cls(hidden_layer_sizes=model.config.hidden, activation=model.config.activation,
                  dtype=model.config.dtype, **params)
        if model.config.output not in ("softmax", "logistic"):
            raise ValueError(f"from_mlp needs a classifier's output, not "
                             f"{model.config.output!r}")
        classes = np.array(model.classes if model.classes is not None
                           else list(range(max(2, model.n_classes))))
        est._label_binarizer = LabelBinarizer().fit(classes)
        est.classes_ = est._label_binarizer.classes_
        if list(est.classes_) != list(classes):
            raise ValueError("model.classes must be sorted, as classes_ is")
        est.model_ = model.copy()
        est.n_features_in_ = model.n_inputs
        est._publish_weights()
        est._reset_state()
        return est

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


class MLPRegressor(RegressorMixin, _BaseMLP):
    """Multi-layer perceptron regressor with hand-derived gradients.

    scikit-learn's ``MLPRegressor`` parameters, among them ``loss`` ("squared_error":
    identity output, ½ squared error; "poisson": exp output, half Poisson deviance,
    for non-negative targets), plus ``dropout``, ``callbacks`` and ``dtype`` as in
    :class:`MLPClassifier`. Multi-output targets (N, M) are fitted jointly.
    """

    def __init__(self, loss="squared_error", hidden_layer_sizes=(100,), activation="relu", *,
                 solver="adam", alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 dropout=0.0, callbacks=None, dtype=None):
        self.loss = loss
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
        self.dropout = dropout
        self.callbacks = callbacks
        self.dtype = dtype

    _score_function = staticmethod(r2_score)

    def fit(self, X, y, sample_weight=None, validation_data=None):
        """Fit to ``X`` (N, D), dense or sparse, and targets ``y`` (N,) or (N, M);
        ``validation_data=(X_val, y_val)`` as in :meth:`MLPClassifier.fit`."""
        return self._fit(X, y, sample_weight, incremental=False,
                         validation_data=validation_data)

    @available_if(_BaseMLP._partial_fit_available)
    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over ``X`` (the first call starts the network)."""
        return self._fit(X, y, sample_weight, incremental=True)

    def _validate_hyperparameters(self):
        if self.loss not in ("squared_error", "poisson"):
            raise ValueError(f"loss {self.loss!r} is not supported; choose 'squared_error' "
                             f"or 'poisson'")
        return super()._validate_hyperparameters()

    def _output_for(self, n_outputs):
        return "exp" if self.loss == "poisson" else "identity"

    def _validate_input(self, X, y, incremental, reset):
        X, y = validate_data(self, X, y, accept_sparse=["csr", "csc"], multi_output=True,
                             y_numeric=True, dtype=(np.float64, np.float32), reset=reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if self.loss == "poisson" and np.any(y < 0):
            raise ValueError("loss='poisson' needs non-negative targets (counts or rates); "
                             f"y has values down to {np.min(y):g}")
        Y = y.reshape(-1, 1) if y.ndim == 1 else y  # (N, M)
        return X, Y, y

    def _encode_validation(self, y_val, n_rows):
        y_val = np.asarray(y_val, dtype=np.float64)
        Y_val = y_val.reshape(-1, 1) if y_val.ndim == 1 else y_val
        if Y_val.shape != (n_rows, self.n_outputs_):
            raise ValueError(f"validation_data: y_val must have {n_rows} rows and "
                             f"{self.n_outputs_} target(s), got shape {y_val.shape}")
        return Y_val, y_val

    def _stratify(self, Y, y_raw):
        return None

    def _weigh_classes(self, y, Y, sw, incremental):
        return sw

    def _decide(self, P):
        return P.ravel() if P.shape[1] == 1 else P

    def predict(self, X):
        """Predictions (N,), or (N, M) for several targets, in the network's dtype."""
        return self._decide(self._outputs(X))


class ScikitLearnOrder:
    """scikit-learn's shuffling as a :class:`~handgrad.Trainer` ``order``: each epoch
    shuffles the previous epoch's order with ``random_state`` (a ``RandomState``, used
    after the initial weights and the early-stopping split have been drawn from it).

    With it, the same ``random_state`` gives scikit-learn's batches, so a handgrad
    estimator follows scikit-learn's own training run (up to where Adam puts ε and
    rounding). Epochs must be asked for in order; asking again for the current one
    (a resumed epoch) returns the same order.
    """

    def __init__(self, random_state, n_rows):
        self.random_state = random_state
        self.current = np.arange(n_rows)  # (N,)
        self.epoch = None

    def state_dict(self):
        """The shuffle's position: the current order, its epoch and the generator's state
        (so a resumed run draws the orders an uninterrupted one would)."""
        kind, keys, pos, has_gauss, gauss = self.random_state.get_state()
        # integers as float64 tensors (checkpoints hold floats; exact below 2**53)
        return {"order": np.asarray(self.current, dtype=np.float64), "order_epoch": self.epoch,
                "rng_kind": kind, "rng_keys": np.asarray(keys, dtype=np.float64),
                "rng_pos": int(pos),
                "rng_has_gauss": int(has_gauss), "rng_gauss": float(gauss)}

    def load_state_dict(self, state):
        order = np.asarray(state["order"])
        if order.shape != self.current.shape:
            raise ValueError(f"cannot resume: the checkpoint's shuffle order has "
                             f"{order.shape[0]} rows, this run {self.current.shape[0]}")
        self.current = order.astype(np.int64)
        self.epoch = state["order_epoch"]
        self.random_state.set_state((state["rng_kind"], np.asarray(state["rng_keys"],
                                                                   dtype=np.uint32),
                                     int(state["rng_pos"]), int(state["rng_has_gauss"]),
                                     float(state["rng_gauss"])))

    def __call__(self, epoch):
        if epoch != self.epoch:
            if self.epoch is not None and epoch != self.epoch + 1:
                raise ValueError(f"scikit-learn's shuffles come in sequence: asked for epoch "
                                 f"{epoch} after {self.epoch}")
            self.current = shuffle(self.current, random_state=self.random_state)  # (N,)
            self.epoch = epoch
        return self.current


class _Solver:
    """A stochastic solver's optimizer under scikit-learn's name for its rate."""

    def __init__(self, optimizer):
        self.optimizer = optimizer

    @property
    def learning_rate(self):
        return self.optimizer.lr

    @learning_rate.setter
    def learning_rate(self, value):
        self.optimizer.lr = float(value)


class _Monitor(Callback):
    """scikit-learn's end-of-epoch bookkeeping, run by the Trainer after each epoch:
    ``loss_curve_``, ``t_``, ``n_iter_``, the validation score, the no-improvement
    count and its consequence (stop, or divide an adaptive rate by 5), invscaling."""

    def __init__(self, est, n_rows, validation, incremental, order=None):
        self.est, self.n_rows, self.incremental = est, n_rows, incremental
        self.order = order  # the ScikitLearnOrder, whose state checkpoints carry
        self.validation = validation  # (X_val, Y_val, y_val, sw_val) or None
        self.stopped = False
        # scikit-learn's no-improvement rule (handgrad.schedules), carried on from the
        # estimator's count and best value (they persist across warm starts)
        early = est.early_stopping
        self.rule = NoImprovement(est.n_iter_no_change, est.tol, higher_is_better=early)
        best = est.best_validation_score_ if early else est.best_loss_
        self.rule.best = (self.rule.sign * best if best is not None and math.isfinite(best)
                          else None)
        self.rule.count = est._no_improvement_count

    #: The estimator's per-epoch state, saved in checkpoints so that a resume through
    #: BackupAndRestore continues as the uninterrupted fit would (JSON values).
    RESUMED = ("n_iter_", "t_", "_epoch", "loss_", "loss_curve_", "validation_loss_",
               "_no_improvement_count", "best_loss_", "validation_scores_",
               "best_validation_score_")

    def state_dict(self):
        est = self.est
        state = {"estimator": {name: _number_tree(getattr(est, name, None))
                               for name in self.RESUMED},
                 "rule_best": _number(self.rule.best), "rule_count": int(self.rule.count),
                 "stopped": bool(self.stopped),
                 "lr": float(est._optimizer.learning_rate)}
        if est.early_stopping and est._best_params is not None:
            state["best_params"] = est._best_params.copy()
        if self.order is not None:
            state.update(self.order.state_dict())
        return state

    def load_state_dict(self, state):
        est = self.est
        for name, value in state["estimator"].items():
            value = _from_number_tree(value)
            setattr(est, name, list(value) if isinstance(value, list) else value)
        self.rule.best = _from_number(state["rule_best"])
        self.rule.count = int(state["rule_count"])
        self.stopped = bool(state["stopped"])
        est._optimizer.learning_rate = float(state["lr"])
        if "best_params" in state:
            est._best_params = np.array(state["best_params"], dtype=est.model_.param_buffer.dtype)
        if self.order is not None and "order" in state:
            self.order.load_state_dict(state)

    def on_epoch_end(self, epoch, history):
        est = self.est
        solver = est._optimizer
        est.n_iter_ += 1
        est._epoch = epoch + 1
        est.t_ += self.n_rows
        est.loss_ = float(history.train_loss[-1])  # includes the L2 penalty, as scikit-learn's
        est.loss_curve_.append(est.loss_)
        if est.verbose:
            print(f"Iteration {est.n_iter_}, loss = {est.loss_:.8f}")
        if self.validation is not None:  # the Trainer evaluated it: the loss, weighted
            est.validation_loss_.append(float(history.val_loss[-1]))
        if est.early_stopping:
            X_val, _, y_val, sw_val = self.validation
            score = est._score_rows(X_val, y_val, sw_val)
            est.validation_scores_.append(score)
            if est.verbose:
                print(f"Validation score: {score:f}")
            better, _ = self.rule.update(score)
            if better:
                est.best_validation_score_ = score
                est._best_params = est.model_.param_buffer.copy()
        else:
            better, _ = self.rule.update(est.loss_)
            if better:
                est.best_loss_ = est.loss_
        est._no_improvement_count = self.rule.count
        if est.solver == "sgd" and est.learning_rate == "invscaling":
            solver.learning_rate = est.learning_rate_init / (est.t_ + 1) ** est.power_t
        if est._no_improvement_count > est.n_iter_no_change:
            what = ("Validation score did not improve" if est.early_stopping
                    else "Training loss did not improve")
            msg = (f"{what} more than tol={est.tol:f} for {est.n_iter_no_change} "
                   f"consecutive epochs.")
            if est.solver == "sgd" and est.learning_rate == "adaptive":
                if solver.learning_rate <= 1e-6:
                    if est.verbose:
                        print(msg + " Learning rate too small. Stopping.")
                    self.stopped = True
                else:
                    solver.learning_rate /= 5.0
                    self.rule.reset()
                    est._no_improvement_count = 0
                    if est.verbose:
                        print(msg + f" Setting learning rate to {solver.learning_rate:f}")
            else:
                if est.verbose:
                    print(msg + " Stopping.")
                self.stopped = True
        return self.stopped


class _ProgressBar(Callback):
    """``verbose >= 2``: a live per-batch bar on stderr (tqdm when installed)."""

    def __init__(self, total_epochs):
        self.total_epochs = total_epochs
        self.bar = None

    def on_epoch_begin(self, epoch, n_batches):
        self.bar = progress_bar(n_batches, desc=f"epoch {epoch + 1}/{self.total_epochs}",
                                unit="batch")

    def on_batch_end(self, batch, loss):
        self.bar.set_postfix_str(f"loss {loss:.4f}")
        self.bar.update(1)

    def on_epoch_end(self, epoch, history):
        self.bar.close()
        return False


# -- model files: the estimator as plain JSON beside its network (handgrad.save) ------

FILE_STATE = ("n_iter_", "t_", "loss_", "best_loss_", "best_validation_score_",
              "_no_improvement_count", "_epoch", "_seed")
FILE_CURVES = ("loss_curve_", "validation_scores_", "validation_loss_")


def _number(v):
    """A JSON value for a number: non-finite floats as strings ("inf", "nan")."""
    if isinstance(v, (np.integer, np.floating, np.bool_)):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


def _number_tree(v):
    """A JSON-safe copy of a number, None, or list of numbers."""
    if isinstance(v, (list, tuple)):
        return [_number(x) for x in v]
    return _number(v)


def _from_number_tree(v):
    if isinstance(v, list):
        return [_from_number(x) for x in v]
    return _from_number(v)


def _from_number(v):
    return float(v) if isinstance(v, str) and v in ("inf", "-inf", "nan") else v


def _json_params(est):
    """``get_params()`` as JSON; what JSON cannot hold (callbacks, a RandomState) is left
    out and comes back as the default."""
    out = {}
    for k, v in est.get_params().items():
        if k == "class_weight" and isinstance(v, dict):
            out[k] = {"pairs": [[_json_label(c), _number(w)] for c, w in v.items()]}
            continue
        if isinstance(v, (tuple, list)) and all(isinstance(x, (Integral, np.integer)) for x in v):
            v = [int(x) for x in v]
        v = _number(v)
        if isinstance(v, (int, float, str, bool, list, type(None))):
            out[k] = v
    return out


def _params_from_json(d):
    params = {}
    for k, v in d.items():
        if k == "hidden_layer_sizes" and isinstance(v, list):
            v = tuple(v)
        elif k == "class_weight" and isinstance(v, dict):
            v = {c: w for c, w in v["pairs"]}
        params[k] = _from_number(v)
    return params


def _json_label(c):
    return c.item() if isinstance(c, np.generic) else c


def _json_classes(classes):
    kind = classes.dtype.kind
    if kind in "iub":
        return {"dtype": classes.dtype.str, "values": [int(c) for c in classes]}
    if kind == "f":
        return {"dtype": classes.dtype.str, "values": [float(c) for c in classes]}
    return {"dtype": "str", "values": [str(c) for c in classes]}


def _classes_from_json(d):
    return np.array(d["values"], dtype=None if d["dtype"] == "str" else np.dtype(d["dtype"]))


def _describe(est):
    """The estimator beside its network, in ``model.training`` (handgrad.save)."""
    training = {"estimator": f"handgrad.{type(est).__name__}", "params": _json_params(est),
                "n_iter": _number(getattr(est, "n_iter_", None)),  # the summary every
                "loss": _number(getattr(est, "loss_", None)),  # model file's training has
                "state": {name: _number(getattr(est, name, None)) for name in FILE_STATE}}
    for name in FILE_CURVES:
        curve = getattr(est, name, None)
        training["state"][name] = None if curve is None else [_number(x) for x in curve]
    names = getattr(est, "feature_names_in_", None)
    if names is not None:
        training["feature_names_in"] = [str(n) for n in names]
    if is_classifier(est):
        training["classes"] = _json_classes(est.classes_)
        training["target_type"] = est._label_binarizer.y_type_
    return training


def from_model(model, path="the model file", optimizer_state=None):
    """The fitted estimator a model file written by ``handgrad.save(estimator, path)``
    describes, around its network ``model`` (what :func:`handgrad.load` returns).

    Parameters, classes, feature names, the fitted attributes and, given its
    ``optimizer_state`` (:func:`handgrad.serialization.load_with_optimizer`), the
    stochastic solver's state (momentum, Adam's moments and step count, the current
    learning rate) come back: ``partial_fit`` continues exactly as it would have on the
    estimator that was saved. Callbacks do not (JSON cannot hold them).
    """
    training = model.training
    kinds = {"handgrad.MLPClassifier": MLPClassifier, "handgrad.MLPRegressor": MLPRegressor}
    try:
        cls = kinds[training["estimator"]]
        est = cls(**_params_from_json(training["params"]))
        state = training["state"]
        if cls is MLPClassifier:
            classes = _classes_from_json(training["classes"])
            target_type = training["target_type"]
    except (KeyError, TypeError, ValueError) as exc:
        from .serialization import ModelFileError

        raise ModelFileError(f"{path}: the estimator's description is damaged ({exc!r})") \
            from None
    if cls is MLPClassifier:
        binarizer = LabelBinarizer()
        if target_type.startswith("multilabel"):
            binarizer.fit(np.eye(len(classes), dtype=int))  # an indicator of each label
        else:
            binarizer.fit(classes)
        est._label_binarizer, est.classes_ = binarizer, binarizer.classes_
    est.model_ = model
    est.n_features_in_ = model.n_inputs
    if training.get("feature_names_in") is not None:
        est.feature_names_in_ = np.array(training["feature_names_in"], dtype=object)
    est._publish_weights()
    est._reset_state()
    for name in FILE_STATE + FILE_CURVES:
        value = state.get(name)
        if isinstance(value, list):
            value = [_from_number(v) for v in value]
        if value is not None or name in FILE_CURVES:
            setattr(est, name, _from_number(value))
    if optimizer_state is not None:
        est._optimizer = _Solver(_restored_optimizer(est, optimizer_state, path))
    return est


def _restored_optimizer(est, state, path):
    """The solver's optimizer of ``est`` with the saved ``state`` dict, checked."""
    from .serialization import ModelFileError

    if not est._partial_fit_available():
        raise ModelFileError(f"{path}: holds an optimizer's state, but the estimator's "
                             f"solver {est.solver!r} keeps none")
    buffer = est.model_.param_buffer
    try:
        optimizer = est._make_optimizer()
        if state.get("type") != type(optimizer).__name__:
            raise ValueError(f"the state is of {state.get('type')!r}, solver {est.solver!r} "
                             f"uses {type(optimizer).__name__}")
        hyper = {k: tuple(v) if isinstance(v, list) else v
                 for k, v in state["hyperparameters"].items()}
        type(optimizer)(**hyper)  # the constructor checks every value
        for key, st in state["state"].items():
            for name, value in st.items():
                if isinstance(value, np.ndarray) and (value.shape != buffer.shape
                                                      or value.dtype != buffer.dtype):
                    raise ValueError(f"{key}/{name} is {value.dtype} {value.shape}, the "
                                     f"network's parameters {buffer.dtype} {buffer.shape}")
        optimizer.load_state_dict(state)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ModelFileError(f"{path}: the estimator's optimizer state does not fit it "
                             f"({exc})") from None
    return optimizer
