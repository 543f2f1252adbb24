"""Every quantity of the derivation as numbers, each checked: ``handgrad.trace(model, x, y)``.

One example (or a small batch) goes through F1–F5 and B1–B7 of ``docs/derivation.md``, and
the :class:`Trace` that comes back lists every named quantity in the specification's order:
``Q, h, O, P, L, dL/dP, dP/dO, dL/dO, dL/db2, dL/dW2, dL/dh, a, dL/dQ, dL/db1, dL/dW1`` for
the specification's network (and ``Q1, h1, …, dL/dW3`` with layer numbers for deeper ones).

Two computations meet in every step:

- the **value**, computed by the model's own layer functions (``linear_forward``,
  ``activation_forward``, ``softmax_cross_entropy_forward`` and their backwards in
  :mod:`handgrad.model`, looked up at call time), so what the trace shows is what training
  computes, and a mistake in one of them shows up here;
- the **check**, computed without them: a plain NumPy forward pass written separately for
  F1–F5, central finite differences of the loss for every gradient, the numerical Jacobian
  of the softmax for B1, and central differences of the activation for its derivative ``a``.

Everything is computed in float64 whatever the model's dtype (float32 weights convert
exactly). The worst relative error of a check is ``max |v − n| / max(|v|, |n|, floor)``
over the checked entries, where the absolute ``floor`` is the independent computation's own
rounding noise (estimated from the magnitudes it sums, never from the values it checks)
divided by the tolerance: an entry down at that noise, where a finite difference can say
nothing finer, is judged on the noise's scale instead of its own, so tiny values do not
fail for want of digits while any mismatch larger than the noise still does.

Shape key: ``B`` batch, ``D`` inputs, ``H`` hidden units, ``M`` classes. A single example
(``x`` of shape (D,)) gives the derivation's column vectors, ``Q`` (H,), ``P`` (M,), and so
on; a batch (B, D) gives rows per example and the mean loss ``L = (1/B) Σ_n L_n``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import _formula as fm
from . import model as _model  # the layer functions, looked up at call time
from ._errors import ParameterError
from ._words import count
from .datasets.errors import DataError
from .inputs import read_examples

TRACE_FORMAT = "handgrad-trace"
TRACE_VERSION = 1
TOLERANCE = 1e-6  # largest worst relative error a check passes with
MAX_BATCH = 64  # examples in one trace: B1 alone holds B × M × M numbers
MAX_CHECKS = 256  # entries checked by finite differences per step when it holds more
EPS = 1e-5  # central-difference step, in the units of the next pre-activation
JACOBIAN_EPS = 1e-5  # step of B1's numerical Jacobian (entries of P are at most 1)
ABS_FLOOR = 1e-300  # the relative error's floor is the check's rounding noise ÷ tolerance
DEMO_SEED = 28  # the demonstration network of `handgrad explain`


class TraceArgumentError(ParameterError):
    """A request for a trace that cannot be met: a bad label, index or combination.

    The parameters at fault are data (:class:`~handgrad._errors.ParameterError`):
    ``handgrad explain`` shows them as its flags."""


# --------------------------------------------------------------------------- #
# The trace's records
# --------------------------------------------------------------------------- #


@dataclass
class Check:
    """An independent computation of a step and how far the step's value is from it."""

    method: str  # "reference forward", "central differences", "numerical Jacobian", ...
    error: float  # worst relative error over the checked entries
    tolerance: float
    floor: float  # the absolute floor of the relative error's denominator
    checked: int  # entries compared
    entries: int  # entries in the step
    worst_index: tuple | None = None  # where the worst error is (None for a scalar)
    value: np.ndarray | None = None  # the independent values, NaN where not checked

    @property
    def passed(self):
        return bool(self.error <= self.tolerance)  # NaN fails

    def to_dict(self):
        return {"method": self.method, "error": _encode_float(self.error),
                "tolerance": self.tolerance, "floor": self.floor, "checked": self.checked,
                "entries": self.entries,
                "worst_index": None if self.worst_index is None else list(self.worst_index)}

    @classmethod
    def from_dict(cls, d):
        return cls(d["method"], _decode_float(d["error"]), float(d["tolerance"]),
                   float(d["floor"]), int(d["checked"]), int(d["entries"]),
                   None if d.get("worst_index") is None else tuple(d["worst_index"]))


@dataclass
class Step:
    """One named quantity of the derivation with its value and its check."""

    eq: str  # the equation's id in docs/derivation.md: "F1" … "B7", "B2a", "B6a"
    name: str  # plain text: "Q", "dL/dW2", "a1", …
    layer: int | None  # ℓ of the layer it belongs to (None for P, L and the seed's steps)
    formula: fm.Node  # renders as text, LaTeX and MathML
    note: str  # one sentence on what the step is
    value: np.ndarray
    check: Check | None = None
    also: dict = field(default_factory=dict)  # the same quantity another way: {label: array}
    symbol: fm.Node = None  # the quantity's own symbol (∂L/∂P for B2a's ∂L/∂P_i = …)

    @property
    def latex(self):
        return self.formula.latex()

    @property
    def text(self):
        """The formula in plain Unicode text."""
        return self.formula.text()

    @property
    def shape(self):
        return tuple(self.value.shape)

    @property
    def check_error(self):
        return None if self.check is None else self.check.error

    @property
    def passed(self):
        return self.check is None or self.check.passed

    def to_dict(self):
        return {"eq": self.eq, "name": self.name, "layer": self.layer,
                "shape": list(self.shape), "value": _encode_array(self.value),
                "check_error": _encode_float(self.check_error),
                "formula": self.text, "latex": self.latex, "note": self.note,
                "check": None if self.check is None else self.check.to_dict(),
                "also": {k: _encode_array(v) for k, v in self.also.items()}}

    def __repr__(self):
        mark = "" if self.check is None else (" ✓" if self.check.passed else " ✗")
        return f"<Step {self.eq} {self.name} {self.shape}{mark}>"


class Trace:
    """The derivation as numbers: :attr:`steps` in the specification's order.

    ``trace["dL/dW1"]`` is a step by name; ``str(trace)`` the terminal view;
    :meth:`to_markdown`, :meth:`to_latex`, :meth:`to_html` and :meth:`to_dict` the others
    (Jupyter shows :meth:`_repr_html_`).
    """

    def __init__(self, steps, *, network, x, y, params, description="", classes=None,
                 tolerance=TOLERANCE, decimals=4, input_shape=None):
        self.steps = list(steps)
        self.network = dict(network)  # layer_sizes, activation, dtype of the model
        self.x = np.asarray(x, dtype=np.float64)  # (D,) or (B, D): the inputs F1 received
        self.y = np.asarray(y, dtype=np.float64)  # (M,) or (B, M): the targets
        self.params = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
        self.description = description
        self.classes = None if classes is None else [str(c) for c in classes]
        self.tolerance = float(tolerance)
        self.decimals = int(decimals)
        # the shape of one raw example (e.g. (28, 28)), so views can draw an image input
        self.input_shape = None if input_shape is None else tuple(int(d) for d in input_shape)
        self._by_name = {s.name: s for s in self.steps}

    # -- access ----------------------------------------------------------------

    def __getitem__(self, name):
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"no step named {name!r}; steps: {', '.join(self.names)}") from None

    def __iter__(self):
        return iter(self.steps)

    def __len__(self):
        return len(self.steps)

    @property
    def names(self):
        return [s.name for s in self.steps]

    @property
    def loss(self):
        return float(self["L"].value)

    @property
    def batched(self):
        return self.x.ndim == 2

    @property
    def ok(self):
        """Every step's check passed."""
        return all(s.passed for s in self.steps)

    @property
    def failed(self):
        return [s for s in self.steps if not s.passed]

    @property
    def worst_error(self):
        errors = [s.check.error for s in self.steps if s.check is not None]
        return max(errors, default=0.0)

    def __repr__(self):
        sizes = "-".join(str(s) for s in self.network["layer_sizes"])
        state = "all checks pass" if self.ok else f"{count(len(self.failed), 'check')} FAIL"
        return f"<Trace {sizes} {self.network['activation']}: {len(self.steps)} steps, {state}>"

    # -- renderers ---------------------------------------------------------------

    def __str__(self):
        return self.to_text()

    def to_text(self, decimals=None, color=False):
        """The terminal view: each step's equation, formula, shape, values and check."""
        from ._trace_render import render_text

        return render_text(self, self.decimals if decimals is None else decimals, color)

    def to_markdown(self, decimals=None):
        from ._trace_render import render_markdown

        return render_markdown(self, self.decimals if decimals is None else decimals)

    def to_latex(self, decimals=None, standalone=True):
        """A LaTeX document (or, with ``standalone=False``, its body)."""
        from ._trace_render import render_latex

        return render_latex(self, self.decimals if decimals is None else decimals, standalone)

    def to_html(self, decimals=None, standalone=True):
        """A self-contained HTML page (MathML formulas, no scripts, nothing fetched)."""
        from ._trace_render import render_html

        return render_html(self, self.decimals if decimals is None else decimals, standalone)

    def _repr_html_(self):
        return self.to_html(standalone=False)

    def to_dict(self):
        """JSON-ready: ``{"format", "format_version", "network", …, "steps": [{"eq", "name",
        "shape", "value", "check_error", …}, …]}``; non-finite numbers are the strings
        ``"nan"``, ``"inf"``, ``"-inf"``."""
        return {
            "format": TRACE_FORMAT, "format_version": TRACE_VERSION,
            "network": self.network, "description": self.description,
            "classes": self.classes, "tolerance": self.tolerance, "decimals": self.decimals,
            "input_shape": None if self.input_shape is None else list(self.input_shape),
            "x": _encode_array(self.x), "y": _encode_array(self.y),
            "params": {k: _encode_array(v) for k, v in self.params.items()},
            "loss": _encode_float(self.loss), "ok": self.ok,
            "steps": [s.to_dict() for s in self.steps],
        }

    @classmethod
    def from_dict(cls, d):
        """Rebuild a trace from :meth:`to_dict` (the checks' own numbers are not kept)."""
        if not isinstance(d, dict) or d.get("format") != TRACE_FORMAT:
            found = d.get("format") if isinstance(d, dict) else type(d).__name__
            raise ValueError(f"not a handgrad trace (format {found!r}, expected "
                             f"{TRACE_FORMAT!r}); write one with Trace.to_dict()")
        if d.get("format_version") != TRACE_VERSION:
            raise ValueError(f"trace format version {d.get('format_version')!r} is not "
                             f"supported (this handgrad reads version {TRACE_VERSION}); "
                             f"regenerate it with this version's handgrad.trace")
        try:
            network = d["network"]
            x = _decode_array(d["x"])
            plan = _plan(len(network["layer_sizes"]) - 1, network["activation"], x.ndim == 2)
            specs = {s.name: s for s in plan}
            steps = []
            for sd in d["steps"]:
                spec = specs.get(sd["name"])
                if spec is None or spec.eq != sd["eq"]:
                    raise ValueError(f"step {sd['name']!r} ({sd['eq']}) does not belong to a "
                                     f"{network['activation']} network of "
                                     f"{len(network['layer_sizes']) - 1} layers")
                value = _decode_array(sd["value"])
                if list(value.shape) != list(sd["shape"]):
                    raise ValueError(f"step {sd['name']!r}: value of shape {value.shape}, "
                                     f"the record says {tuple(sd['shape'])}")
                check = None if sd.get("check") is None else Check.from_dict(sd["check"])
                also = {k: _decode_array(v) for k, v in sd.get("also", {}).items()}
                steps.append(Step(spec.eq, spec.name, spec.layer, spec.formula, spec.note,
                                  value, check, also, spec.symbol))
            return cls(steps, network=network, x=x, y=_decode_array(d["y"]),
                       params={k: _decode_array(v) for k, v in d["params"].items()},
                       description=d.get("description", ""), classes=d.get("classes"),
                       tolerance=d.get("tolerance", TOLERANCE), decimals=d.get("decimals", 4),
                       input_shape=d.get("input_shape"))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"damaged trace record: missing or malformed {exc}") from None


def _encode_float(v):
    if v is None:
        return None
    v = float(v)
    if math.isfinite(v):
        return v
    return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")


def _decode_float(v):
    return None if v is None else float(v)  # float("nan"), float("-inf") parse the strings


def _encode_array(a):
    a = np.asarray(a, dtype=np.float64)
    if np.all(np.isfinite(a)):
        return a.tolist()
    return np.array([_encode_float(v) for v in a.ravel()], dtype=object).reshape(a.shape).tolist()


def _decode_array(nested):
    a = np.array(nested, dtype=object)
    return np.vectorize(float, otypes=[np.float64])(a) if a.size else a.astype(np.float64)


# --------------------------------------------------------------------------- #
# The plan: which steps, in which order, with which formula
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class _Spec:
    eq: str
    name: str
    layer: int | None
    formula: fm.Node
    note: str
    symbol: fm.Node = None  # the quantity as a whole (a vector or matrix), when the formula
    # states it entry by entry; otherwise the formula's left-hand side

    def __post_init__(self):
        if self.symbol is None:
            node = self.formula
            while isinstance(node, fm.Row):
                node = node.items[0]
            object.__setattr__(self, "symbol", node)


ACTIVATION_NOTES = {
    "relu": ("ReLU keeps the positive pre-activations and sets the others to 0.",
             "The ReLU's derivative: 1 where the unit is active (Q > 0), else 0 "
             "(at exactly 0 the convention of PyTorch and scikit-learn, 0)."),
    "tanh": ("tanh squashes each pre-activation into (−1, 1).",
             "tanh's derivative, from its own output: 1 − h²."),
    "logistic": ("The logistic function σ squashes each pre-activation into (0, 1).",
                 "σ's derivative, from its own output: h (1 − h)."),
    "identity": ("The identity activation passes the pre-activations through unchanged.",
                 "The identity's derivative is 1 everywhere."),
}


def _plan(K, activation, batched):
    """The steps of a network of ``K`` linear layers, in the specification's order."""
    spec_net = K == 2  # the specification's network keeps its unnumbered Q, h, a

    def named(base, l):
        return base if spec_net else f"{base}{l}"

    def q(l, sub=None):  # sub="n": example n of a batch
        return fm.sym("O", sub=sub) if l == K else fm.sym("Q", None if spec_net else l, sub)

    def h(l, sub=None):
        if l == 0:
            return fm.sym("x", sub=sub)
        return fm.sym("h", None if spec_net else l, sub)

    def a(l):
        return fm.sym("a", None if spec_net else l)

    def W(l):
        return fm.sym("W", l)

    def b(l):
        return fm.sym("b", l)

    def d(of):
        return fm.partial("L", of)

    def batch_sum(body):
        return fm.Sum("n", body) if batched else body

    sp = fm.Space()
    plan = []
    # Forward: F1 and F2 for each hidden layer, F3 for the output layer, F4, F5.
    for l in range(1, K + 1):
        affine = fm.Row(W(l), sp, h(l - 1), fm.op("+"), b(l))
        if l < K:
            plan.append(_Spec("F1", named("Q", l), l, fm.eq(q(l), affine),
                              "Each hidden unit's pre-activation: a weighted sum of the layer's "
                              "inputs plus its bias."))
            act = {"relu": fm.Func("max", 0, q(l), latex=r"\max"),
                   "tanh": fm.Func("tanh", q(l), latex=r"\tanh"),
                   "logistic": fm.Func("σ", q(l), latex=r"\sigma"),
                   "identity": q(l)}[activation]
            plan.append(_Spec("F2", named("h", l), l, fm.eq(h(l), act),
                              ACTIVATION_NOTES[activation][0]))
        else:
            plan.append(_Spec("F3", "O", l, fm.eq(q(l), affine),
                              "The output layer's scores (logits), one per class."))
    Pi, Oi = fm.sym("P", sub="i"), fm.sym("O", sub="i")
    plan.append(_Spec("F4", "P", None, fm.Row(
        fm.eq("P", fm.Func("softmax", "O")), fm.Mo(",", spaced=False), fm.Space(),
        fm.eq(Pi, fm.Frac(fm.Func("exp", Oi, latex=r"\exp"),
                          fm.Sum("k", fm.Func("exp", fm.sym("O", sub="k"), latex=r"\exp"))))),
        "Softmax turns the scores into probabilities that sum to 1 (the code goes through "
        "log-sum-exp, so nothing overflows)."))
    # With a batch the seed's quantities carry the example's index n and the mean's 1/B.
    n = "n" if batched else ""
    yi, Pn = fm.sym("y", sub=n + "i"), fm.sym("P", sub=n + "i")
    ce = fm.Sum("i", fm.Row(yi, sp, fm.Func("log", Pn, latex=r"\log")))
    if batched:
        ce = fm.Row(fm.factor(fm.Frac(1, "B")), sp, fm.Sum("n", ce))
    plan.append(_Spec("F5", "L", None, fm.eq("L", fm.Row(fm.minus(), ce)),
                      "Cross-entropy: minus the log-probability the network gives the target"
                      + (", averaged over the batch." if batched else ".")))
    # The seed: B2a (differentiating F5), B1 (the softmax Jacobian), B2 (their product).
    dLdP = fm.Row(fm.minus(), fm.Frac(yi, fm.Row("B", sp, Pn) if batched else Pn))
    plan.append(_Spec("B2a", "dL/dP", None, fm.eq(d(Pn), dLdP),
                      "F5 differentiated with respect to each probability: 0 wherever the "
                      "target is 0." + (" Each example carries the 1/B of the mean."
                                        if batched else ""), d("P")))
    Oj, Pj = fm.sym("O", sub=n + "j"), fm.sym("P", sub=n + "j")
    plan.append(_Spec("B1", "dP/dO", None, fm.eq(
        fm.partial(Pn, Oj), fm.Row(Pn, fm.Fenced(fm.Row(fm.sym("δ", sub="ij"), fm.op("−"), Pj)))),
        "The softmax Jacobian: raising one score raises its own probability and lowers all "
        "the others" + (" (one M × M matrix per example)." if batched else "."),
        fm.partial("P", "O")))
    pmy = fm.Row(Pj, fm.op("−"), fm.sym("y", sub=n + "j"))
    plan.append(_Spec("B2", "dL/dO", K, fm.eq(
        d(Oj), fm.Sum("i", fm.Row(fm.factor(d(Pn)), fm.factor(fm.partial(Pn, Oj)))),
        fm.Frac(pmy, "B") if batched else pmy),
        "The chain rule through the Jacobian collapses to P − y because the target sums to 1; "
        "the code computes P − y directly, never forming the Jacobian.", d("O")))
    # Down through the layers: B3, B4 for the output layer; B5, B6, B7 for each below.
    for l in range(K, 0, -1):
        grad_b, grad_W = ("B3", "B4") if l == K else ("B7", "B7")
        ex = "n" if batched else None  # the batch sums run over examples n
        plan.append(_Spec(grad_b, f"dL/db{l}", l, fm.eq(d(b(l)), batch_sum(d(q(l, ex)))),
                          "A bias moves its output one-for-one, so its gradient is the "
                          "output's gradient" + (", summed over the batch." if batched else ".")
                          + ("" if l == K else " (B3's pattern, one layer down).")))
        plan.append(_Spec(grad_W, f"dL/dW{l}", l, fm.eq(
            d(W(l)), batch_sum(fm.Row(fm.factor(d(q(l, ex))), sp, fm.transpose(h(l - 1, ex))))),
            "Each weight's gradient: the gradient at its output times the input it multiplies"
            + (", summed over the batch." if batched else ".")
            + ("" if l == K else " (B4's pattern, one layer down).")))
        if l == 1:
            break
        k = l - 1  # the hidden layer below
        plan.append(_Spec("B5", named("dL/dh", k), k, fm.eq(
            d(h(k)), fm.Row(fm.transpose(W(l)), sp, d(q(l)))),
            "The output gradient sent back through the weights to the hidden units."))
        da = {"relu": fm.Indicator(fm.Row(q(k), fm.op(">"), 0)),
              "tanh": fm.Row(1, fm.op("−"), fm.Scripts(h(k), sup=2)),
              "logistic": fm.Row(h(k), fm.op("⊙"), fm.Fenced(fm.Row(1, fm.op("−"), h(k)))),
              "identity": fm.Mn(1)}[activation]
        plan.append(_Spec("B6a", named("a", k), k, fm.eq(a(k), da),
                          ACTIVATION_NOTES[activation][1]))
        plan.append(_Spec("B6", named("dL/dQ", k), k, fm.eq(
            d(q(k)), fm.Row(d(h(k)), fm.op("⊙"), a(k))),
            "Through the activation: each unit's gradient times its derivative a"
            + (", so only the active units pass it on." if activation == "relu" else ".")))
    return plan


# --------------------------------------------------------------------------- #
# trace(): values from the model's layer functions, checks from independent code
# --------------------------------------------------------------------------- #


def trace(model, x, y, *, max_checks=MAX_CHECKS, tolerance=TOLERANCE, seed=0,
          description="", decimals=4):
    """Trace one example (or a small batch) through F1–F5 and B1–B7.

    ``x`` is one input row (D,) or a batch (B, D), already preprocessed as the model
    expects (``model.prepare`` turns raw images into rows); ``y`` a class index, a row of
    class probabilities (M,), or their batched forms (B,) / (B, M). Soft targets are
    rescaled to sum to exactly 1, as B2 assumes. Steps holding more than ``max_checks``
    entries have that many checked by finite differences (the largest ones and a random
    sample drawn with ``seed``); smaller steps are checked whole. Returns a :class:`Trace`.
    """
    if hasattr(model, "to_mlp") and not isinstance(model, _model.MLP):
        model = model.to_mlp()  # an estimator such as handgrad.MLPClassifier
    if not isinstance(model, _model.MLP):
        raise TypeError(f"trace needs a handgrad.MLP, got {type(model).__name__}")
    if not (isinstance(max_checks, int) and max_checks >= 1):
        raise ValueError(f"max_checks must be a positive integer, got {max_checks!r}")
    if not (isinstance(tolerance, (int, float)) and tolerance > 0):
        raise ValueError(f"tolerance must be a positive number, got {tolerance!r}")
    X, Y, labels, batched = _inputs(model, x, y)
    K = model.n_layers
    act = model.config.activation
    params = {k: v.astype(np.float64) for k, v in model.params.items()}  # exact for float32
    values, also = _values(params, X, Y, labels, K, act)
    ref = _Reference(params, X, Y, K, act)
    rng = np.random.default_rng(seed)
    checker = _Checker(ref, max_checks, tolerance, rng)
    steps = []
    for spec in _plan(K, act, batched):
        value = values[spec.name]
        check = checker.check(spec, value)
        if not batched and _per_example(spec):  # the derivation's vectors: no batch axis
            value = value[0]
            if check.value is not None and check.value.shape != value.shape:
                check.value = check.value.reshape(value.shape)
            if check.worst_index is not None and len(check.worst_index) > value.ndim:
                check.worst_index = check.worst_index[1:]
        step_also = {k: (v if batched else v[0]) for k, v in also.get(spec.name, {}).items()}
        steps.append(Step(spec.eq, spec.name, spec.layer, spec.formula, spec.note, value,
                          check, step_also, spec.symbol))
    return Trace(steps, network={"layer_sizes": list(model.config.layer_sizes),
                                 "activation": act, "dtype": model.config.dtype},
                 x=X if batched else X[0], y=Y if batched else Y[0], params=params,
                 description=description, classes=model.classes, tolerance=tolerance,
                 decimals=decimals, input_shape=_input_shape(model))


def _input_shape(model):
    """The shape of one raw example when the model's preprocessing records it."""
    prep = model.preprocessor
    shape = getattr(prep, "input_shape", None)
    if shape is None or math.prod(shape) != model.n_inputs:
        return None
    return tuple(shape)


def _per_example(spec):
    """Whether a step has a batch axis (not L, nor the parameters' gradients)."""
    return not (spec.name == "L" or spec.name.startswith(("dL/dW", "dL/db")))


def _inputs(model, x, y):
    """``(X (B, D), Y (B, M), labels (B,) or None, batched)`` in float64, validated."""
    x = np.asarray(x) if not hasattr(x, "ndim") else x
    if x.ndim not in (1, 2):
        raise ValueError(f"x must be one example (D,) or a batch (B, D), got shape {x.shape}")
    batched = x.ndim == 2
    X = model.check_X(x if batched else x[None, :], convert=False)
    if X.shape[0] > MAX_BATCH:
        raise ValueError(f"a trace takes at most {MAX_BATCH} examples, got {X.shape[0]}: "
                         f"pass a few rows")
    X = np.array(X, dtype=np.float64)  # (B, D)
    B, M = X.shape[0], model.n_classes
    y_arr = np.asarray(y)
    if not batched:
        if y_arr.ndim == 0:
            y_arr = y_arr[None]  # one label
        elif y_arr.ndim == 1 and y_arr.shape == (1,):
            pass  # one label in a list
        elif y_arr.ndim == 1 and y_arr.shape[0] == M:
            y_arr = y_arr[None, :].astype(np.float64)  # one row of class probabilities
        else:
            raise ValueError(f"y must be a class index or a row of {M} class probabilities "
                             f"for one example, got shape {y_arr.shape}")
    target = _model.check_targets(y_arr, B, M, np.float64)
    if target.ndim == 1:
        labels = target
        Y = np.zeros((B, M))  # (B, M) one-hot
        Y[np.arange(B), labels] = 1.0
    else:
        labels = None
        Y = target / target.sum(axis=1, keepdims=True)  # (B, M) rows summing to exactly 1
    return X, Y, labels, batched


def _values(params, X, Y, labels, K, act):
    """Every step's value from the model's own layer functions (``_model.*``).

    Returns ``({name: array with a batch axis}, {name: {label: array}})``.
    """
    B = X.shape[0]
    spec_net = K == 2
    hid = (lambda base, l: base) if spec_net else (lambda base, l: f"{base}{l}")
    values, also = {}, {}
    inputs, Qs, hs = [X], [], []  # inputs[ℓ-1] is layer ℓ's input; h⁰ = x
    for l in range(1, K + 1):
        W, b = params[f"W{l}"], params[f"b{l}"]
        Q = _model.linear_forward(inputs[-1], W, b, np.empty((B, W.shape[0])))  # (B, H) F1/F3
        Qs.append(Q)
        if l < K:
            h = _model.activation_forward(act, Q, np.empty_like(Q))  # (B, H)  F2
            hs.append(h)
            inputs.append(h)
            values[hid("Q", l)], values[hid("h", l)] = Q, h
    O = Qs[-1]  # (B, M)
    values["O"] = O
    M = O.shape[1]
    w = 1.0 / B  # the plain mean's weight, as the model's loss_and_grads uses
    target = labels if labels is not None else Y
    logP, P, row = np.empty((B, M)), np.empty((B, M)), np.empty((B, 1))
    L = _model.softmax_cross_entropy_forward(O, target, w, logP, P, row)  # F4–F5
    values["P"], values["L"] = P, np.array(L)
    # B2a: ∂L/∂P_ni = −w y_ni / P_ni, 0 where y_ni = 0 (even where P_ni underflowed to 0)
    dLdP = np.zeros((B, M))  # (B, M)
    with np.errstate(divide="ignore", over="ignore"):
        np.divide(-w * Y, P, out=dLdP, where=Y != 0)
    values["dL/dP"] = dLdP
    # B1: ∂P_i/∂O_j = P_i (δ_ij − P_j), one (M, M) matrix per example
    J = P[:, :, None] * (np.eye(M)[None, :, :] - P[:, None, :])  # (B, M, M)
    values["dP/dO"] = J
    G = _model.softmax_cross_entropy_backward(P, target, w, np.empty((B, M)))  # (B, M)  B2
    values["dL/dO"] = G
    with np.errstate(invalid="ignore", over="ignore"):
        chain = np.einsum("ni,nij->nj", dLdP, J)  # (B, M)  Σ_i (∂L/∂P_i)(∂P_i/∂O_j)
    also["dL/dO"] = {"Σᵢ (∂L/∂Pᵢ)(∂Pᵢ/∂Oⱼ)": chain}
    for l in range(K, 0, -1):
        W = params[f"W{l}"]
        dW, db = np.empty_like(W), np.empty(W.shape[0])  # (H, D), (H,)
        _model.linear_backward(G, inputs[l - 1], W, dW, db)  # B3/B4 (B7 below the output)
        values[f"dL/db{l}"], values[f"dL/dW{l}"] = db, dW
        if l == 1:
            break
        k = l - 1
        dh = np.empty((B, W.shape[1]))  # (B, H)
        _model.linear_backward(G, inputs[l - 1], W, None, None, dh)  # B5
        values[hid("dL/dh", k)] = dh
        scratch = np.ones(dh.shape, bool if act == "relu" else np.float64)  # (B, H)
        G = _model.activation_backward(act, dh.copy(), Qs[k - 1], hs[k - 1], scratch)  # B6
        values[hid("a", k)] = scratch.astype(np.float64)  # the derivative the code used
        values[hid("dL/dQ", k)] = G
    return values, also


# --------------------------------------------------------------------------- #
# The independent side: a reference forward and finite differences
# --------------------------------------------------------------------------- #


def _ref_activation(name, Q):
    """F2's activations, written independently of model.activation_forward."""
    if name == "relu":
        return np.where(Q > 0, Q, 0.0)
    if name == "tanh":
        return np.tanh(Q)
    if name == "logistic":
        with np.errstate(over="ignore"):
            e = np.exp(-np.abs(Q))
        return np.where(Q >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    if name == "identity":
        return Q.copy()
    raise AssertionError(f"unknown activation {name!r}")


def _ref_affine(A, W, b):
    """F1/F3 as a plain sum over the inputs: Q_nh = Σ_d W_hd A_nd + b_h."""
    return np.einsum("hd,nd->nh", W, A) + b  # (B, H): einsum's own loop, not the BLAS GEMM


def _ref_softmax(O):
    """F4 row-wise: exp(O − max) / Σ exp(O − max)."""
    e = np.exp(O - O.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _ref_loss(O, Y):
    """F4–F5 from the scores, accurate even when the loss is tiny.

    ``L_n = logsumexp(O_n) Σ_i y_ni − Σ_i y_ni O_ni`` with ``logsumexp = m + log1p(Σ_{k≠j}
    exp(O_k − m))``, ``m = O_j`` the largest score: for a confident, correct prediction the
    first two terms cancel exactly and the loss keeps its relative precision, so finite
    differences of it stay accurate where the gradient is small.
    """
    B = O.shape[0]
    rows = np.arange(B)
    j = np.argmax(O, axis=1)
    m = O[rows, j]  # (B,)
    t = np.exp(O - m[:, None])  # (B, M)
    t[rows, j] = 0.0
    sy = Y.sum(axis=1)  # (B,) 1 up to rounding
    per = (m * sy - np.einsum("nm,nm->n", Y, O)) + np.log1p(t.sum(axis=1)) * sy
    return float(per.sum() / B)


def _ref_loss_of_P(P, Y):
    """F5 alone, as a function of the probabilities: −(1/B) Σ_n Σ_i y_ni log P_ni."""
    with np.errstate(divide="ignore"):
        terms = np.where(Y != 0, Y * np.log(np.where(Y != 0, P, 1.0)), 0.0)
    return float(-terms.sum() / P.shape[0])


class _Reference:
    """The network's forward pass in independent code, from any layer up to the loss.

    Besides the activations at the traced point it keeps what the checks' noise estimates
    need: ``S[ℓ]`` (B, H), the sum of magnitudes ``Σ_k |W_jk| |A_k| + |b_j|`` whose
    rounding an evaluation of ``Q`` carries, and ``g[ℓ]`` (B, H), an upper bound on
    ``|∂L/∂Q|`` built from absolute values alone (``|P − y| / B`` pushed down through
    ``|W|``), so the estimates depend on nothing the trace is checking.
    """

    def __init__(self, params, X, Y, K, act):
        self.params, self.Y, self.K, self.act = params, Y, K, act
        self.inputs, self.Qs, self.S = [X], [], []  # the reference activations at the point
        for l in range(1, K + 1):
            W, b = params[f"W{l}"], params[f"b{l}"]
            Q = _ref_affine(self.inputs[-1], W, b)  # (B, H)
            self.Qs.append(Q)
            self.S.append(_ref_affine(np.abs(self.inputs[-1]), np.abs(W), np.abs(b)))  # (B, H)
            if l < K:
                self.inputs.append(_ref_activation(act, Q))
        O = self.Qs[-1]  # (B, M)
        B = O.shape[0]
        self.P = _ref_softmax(O)
        self.L = _ref_loss(O, Y)
        slope = 0.25 if act == "logistic" else 1.0  # the activation's largest derivative
        self.g = [None] * K
        self.g[K - 1] = np.abs(self.P - Y) / B  # (B, M)
        for l in range(K - 1, 0, -1):
            self.g[l - 1] = slope * (self.g[l] @ np.abs(params[f"W{l + 1}"]))  # (B, H)
        # The loss's own rounding: its terms, where they do not cancel exactly.
        rows = np.arange(B)
        m = O[rows, np.argmax(O, axis=1)]  # (B,)
        sy = Y.sum(axis=1)
        yO = np.einsum("nm,nm->n", Y, O)
        cancel = m * sy - yO == 0  # one-hot target on the largest score: exactly 0
        per = np.where(cancel, 0.0, np.abs(m * sy) + np.abs(yO))  # (B,)
        self.F_L = abs(self.L) + float(per.sum()) / B

    def loss_rounding(self, l, per_unit=False):
        """Rounding magnitude of the loss evaluated from layer ``l`` up (l = K + 1: from O).

        With ``per_unit``, an array (H,) for perturbing one unit's parameters in layer ``l``:
        the other units of that layer compute exactly as before, so only the unit's own
        rounding changes there, and every unit's above.
        """
        above = sum(float(np.sum(self.g[m - 1] * self.S[m - 1]))
                    for m in range(l + 1, self.K + 1))
        if l > self.K:
            return self.F_L
        own = np.sum(self.g[l - 1] * self.S[l - 1], axis=0)  # (H,)
        return self.F_L + above + (own if per_unit else float(own.sum()))

    def run(self, l, A, override=None, Q_in=None):
        """``(loss, pattern)`` with ``A`` fed into layer ``l`` (``l = K + 1``: ``A`` is O).

        ``override`` is ``(name, array)`` replacing one parameter; ``pattern`` lists which
        ReLU units are active (``Q > 0``) in every layer computed, and in ``Q_in`` when the
        input is its activation: a finite difference whose pattern changes crossed a kink.
        """
        relu = self.act == "relu"
        pattern = [Q_in > 0] if relu and Q_in is not None else []
        for k in range(l, self.K + 1):
            W, b = self.params[f"W{k}"], self.params[f"b{k}"]
            if override is not None:
                W = override[1] if override[0] == f"W{k}" else W
                b = override[1] if override[0] == f"b{k}" else b
            A = _ref_affine(A, W, b)
            if k < self.K:
                if relu:
                    pattern.append(A > 0)
                A = _ref_activation(self.act, A)
        return _ref_loss(A, self.Y), pattern


ROUNDING = 8 * np.finfo(np.float64).eps  # rounding of one evaluation, per unit of magnitude


class _Checker:
    """Each step's independent computation and its comparison with the step's value."""

    def __init__(self, ref, max_checks, tolerance, rng):
        self.ref, self.max_checks, self.tolerance, self.rng = ref, max_checks, tolerance, rng

    def check(self, spec, value):
        ref, K = self.ref, self.ref.K
        name, l = spec.name, spec.layer
        if spec.eq in ("F1", "F3"):  # the forward steps: the reference forward's own values
            noise = ROUNDING * ref.S[l - 1]
            return self._compare(value, ref.Qs[l - 1], noise, "reference forward")
        if spec.eq == "F2":
            noise = ROUNDING * (ref.S[l - 1] + np.abs(ref.inputs[l]))
            return self._compare(value, ref.inputs[l], noise, "reference forward")
        if name == "P":
            S = ref.S[K - 1]
            noise = ROUNDING * ref.P * (1 + S + 2 * S.max(axis=1, keepdims=True))
            return self._compare(value, ref.P, noise, "reference forward")
        if name == "L":
            return self._compare(value, np.array(ref.L), ROUNDING * ref.loss_rounding(K),
                                 "reference forward")
        if name == "dL/dP":
            return self._seed(value)
        if name == "dP/dO":
            return self._jacobian(value)
        if name == "dL/dO":
            O = ref.Qs[-1].copy()
            return self._finite(value, O, lambda O: ref.run(K + 1, O), np.full(O.shape, EPS),
                                ref.loss_rounding(K + 1))
        if spec.eq == "B5":  # ∂L/∂hˡ: hˡ feeds layer l + 1, through the columns of W^(l+1)
            h = ref.inputs[l].copy()
            reach = np.abs(ref.params[f"W{l + 1}"]).max(axis=0)  # (H,)
            return self._finite(value, h, lambda h: ref.run(l + 1, h),
                                _steps(h.shape, reach[None, :]), ref.loss_rounding(l + 1))
        if spec.eq == "B6a":
            return self._activation_derivative(value, ref.Qs[l - 1])
        if spec.eq == "B6":
            Q = ref.Qs[l - 1].copy()
            reach = np.abs(ref.params[f"W{l + 1}"]).max(axis=0)  # (H,)

            def loss(Q):
                return ref.run(l + 1, _ref_activation(ref.act, Q), Q_in=Q)

            return self._finite(value, Q, loss, _steps(Q.shape, reach[None, :]),
                                ref.loss_rounding(l + 1))
        if name.startswith(("dL/dW", "dL/db")):
            pname = name[4:]  # "W2", "b1"
            start = ref.params[pname].copy()
            size = ref.loss_rounding(l, per_unit=True)  # (H,): unit j's row of W, b_j
            if pname[0] == "W":  # W_jk moves Q_j by its input A_k
                reach = np.abs(ref.inputs[l - 1]).max(axis=0)  # (D,)
                steps = _steps(start.shape, reach[None, :])
                size = size[:, None]  # (H, 1)
            else:
                steps = np.full(start.shape, EPS)
            return self._finite(value, start,
                                lambda p: ref.run(l, ref.inputs[l - 1], (pname, p)),
                                steps, np.broadcast_to(size, start.shape))
        raise AssertionError(f"no check for step {name!r}")  # every planned step has one

    # -- the independent computations -----------------------------------------

    def _seed(self, value):
        """B2a: central differences of F5 alone, as a function of P, in steps relative to P."""
        ref = self.ref
        P = ref.P.copy()
        with np.errstate(divide="ignore", invalid="ignore"):
            size = float(np.sum(np.where(ref.Y != 0, np.abs(ref.Y * np.log(P)), 0.0)))
        size /= P.shape[0]
        steps = EPS * np.where(P > 0, P, 1.0)
        # Where P underflowed to 0, −y/P is its limit: −∞ where y > 0, else 0.
        limit = np.where(ref.Y != 0, -np.inf, 0.0)
        return self._finite(value, P, lambda P: (_ref_loss_of_P(P, ref.Y), []), steps, size,
                            fixed=P == 0, fixed_value=limit)

    def _finite(self, value, base, f, steps, size, fixed=None, fixed_value=None):
        """Central differences of ``f`` (returning ``(loss, pattern)``) around ``base``.

        ``steps`` (shaped like ``base``) are chosen so each moves the next pre-activation by
        about ``EPS``; ``size`` (a number, or an array shaped like ``base``) is the rounding
        magnitude of one evaluation of ``f`` when that entry moves. Where a
        ReLU unit changes state within a step, the step shrinks; a unit sitting exactly at
        its kink gets the one-sided difference from the side where it stays inactive, which
        is the derivative the convention ``a = 1[Q > 0]`` takes there. Entries where no
        difference stays on one side of every kink are left unchecked. Entries where
        ``fixed`` holds take ``fixed_value`` (a limit) instead of a difference.
        """
        idx = self._select(value)
        flat = base.reshape(-1)  # a view: f sees each perturbation
        step_flat = steps.reshape(-1)
        size_flat = np.broadcast_to(size, base.shape).reshape(-1)
        numeric = np.full(base.size, np.nan)
        noise = np.full(base.size, np.nan)
        centre, pattern0 = f(base)

        def at(i, old, e):
            flat[i] = old + e
            out = f(base)
            flat[i] = old
            return out

        def same(pattern):
            return all(np.array_equal(a, b) for a, b in zip(pattern, pattern0))

        fixed_flat = None if fixed is None else fixed.reshape(-1)
        for i in idx:
            if fixed_flat is not None and fixed_flat[i]:
                numeric[i], noise[i] = fixed_value.reshape(-1)[i], 0.0
                continue
            old = flat[i]
            for shrink in (1.0, 1e-2, 1e-4):
                e = step_flat[i] * shrink
                (plus, p_plus), (minus, p_minus) = at(i, old, e), at(i, old, -e)
                if same(p_plus) and same(p_minus):
                    numeric[i] = (plus - minus) / ((old + e) - (old - e))
                    noise[i] = ROUNDING * size_flat[i] / e
                    break
                for sign, (f1, p1) in ((1.0, (plus, p_plus)), (-1.0, (minus, p_minus))):
                    if same(p1):
                        f2, p2 = at(i, old, 2 * sign * e)
                        if same(p2):  # second-order one-sided difference
                            numeric[i] = sign * (4 * f1 - 3 * centre - f2) / (2 * e)
                            noise[i] = 4 * ROUNDING * size_flat[i] / e
                            break
                if not np.isnan(numeric[i]):
                    break
        checked = idx[~np.isnan(numeric[idx])]
        return self._compare(value, numeric.reshape(value.shape), noise.reshape(value.shape),
                             "central differences of L", checked)

    def _jacobian(self, value):
        """B1 by the numerical Jacobian of the reference softmax, column by column."""
        O = self.ref.Qs[-1].copy()  # (B, M)
        B, M = O.shape
        numeric = np.empty((B, M, M))
        for j in range(M):
            old = O[:, j].copy()
            O[:, j] = old + JACOBIAN_EPS
            plus = _ref_softmax(O)
            O[:, j] = old - JACOBIAN_EPS
            minus = _ref_softmax(O)
            O[:, j] = old
            numeric[:, :, j] = (plus - minus) / ((old + JACOBIAN_EPS)
                                                 - (old - JACOBIAN_EPS))[:, None]
        # P_i carries a relative rounding of about |O| (the shift by the largest score)
        span = 1 + 2 * np.abs(O).max(axis=1)  # (B,)
        noise = ROUNDING * self.ref.P * span[:, None] / JACOBIAN_EPS  # (B, M) for row i
        noise = np.broadcast_to(noise[:, :, None], (B, M, M))
        return self._compare(value, numeric, noise, "numerical Jacobian of softmax")

    def _activation_derivative(self, value, Q):
        """a by central differences of the reference activation, all entries at once."""
        act = self.ref.act
        e = EPS * np.maximum(1.0, np.abs(Q))  # (B, H)
        if act == "relu":  # never across the kink; the left difference at exactly 0
            e = np.where(Q != 0, np.minimum(e, np.abs(Q) / 2), e)
        plus = np.where((Q == 0) & (act == "relu"), Q, Q + e)
        minus = Q - e
        numeric = (_ref_activation(act, plus) - _ref_activation(act, minus)) / (plus - minus)
        noise = ROUNDING * (1 + np.abs(Q)) / (plus - minus)
        return self._compare(value, numeric, noise, "central differences of the activation")

    # -- comparison --------------------------------------------------------------

    def _select(self, value):
        """Flat indices to check: all, or the largest entries and a random sample."""
        n = value.size
        if n <= self.max_checks:
            return np.arange(n)
        flat = np.abs(np.nan_to_num(value.reshape(-1), nan=np.inf))
        n_top = self.max_checks // 4
        top = np.argpartition(flat, n - n_top)[n - n_top:]
        rest = np.setdiff1d(np.arange(n), top, assume_unique=True)
        sample = self.rng.choice(rest, size=self.max_checks - n_top, replace=False)
        return np.sort(np.concatenate([top, sample]))

    def _compare(self, value, numeric, noise, method, idx=None):
        """Worst ``|v − n| / max(|v|, |n|, floor)``, ``floor = noise / tolerance``.

        ``noise`` estimates the absolute rounding error of the independent value, so an
        entry whose size is down at that noise is judged on the noise's scale instead of
        its own: a mismatch passes only if it is within the noise (or relatively tiny).
        """
        value = np.asarray(value, dtype=np.float64)
        numeric = np.asarray(numeric, dtype=np.float64).reshape(value.shape)
        if idx is None:
            idx = np.arange(value.size)
        v, n = value.reshape(-1)[idx], numeric.reshape(-1)[idx]
        floors = np.maximum(np.broadcast_to(noise, value.shape).reshape(-1)[idx]
                            / self.tolerance, ABS_FLOOR)
        with np.errstate(invalid="ignore", over="ignore"):
            same = (v == n) | (np.isnan(v) & np.isnan(n))  # equal infinities count as equal
            err = np.abs(v - n) / np.maximum(np.maximum(np.abs(v), np.abs(n)), floors)
        err = np.where(same, 0.0, np.nan_to_num(err, nan=np.inf))
        worst = int(np.argmax(err)) if err.size else 0
        error = float(err[worst]) if err.size else 0.0
        shown = np.full(value.size, np.nan)
        shown[idx] = n
        where = None
        if value.ndim and err.size:
            where = tuple(int(i) for i in np.unravel_index(int(idx[worst]), value.shape))
        floor = float(floors.max()) if floors.size else ABS_FLOOR
        return Check(method, error, self.tolerance, floor, int(len(idx)), int(value.size),
                     where, shown.reshape(value.shape))


def _steps(shape, reach):
    """Steps moving the next layer's pre-activation by about EPS: EPS / max(1, reach)."""
    return np.broadcast_to(EPS / np.maximum(1.0, reach), shape).copy()


# --------------------------------------------------------------------------- #
# Orchestration for `handgrad explain`: the demonstration network, examples from files
# --------------------------------------------------------------------------- #


def demo(seed=DEMO_SEED):
    """``(model, x, y)``: a 3-4-3 ReLU network and one example, small enough to check by hand.

    Weights and inputs have one decimal, the biases are non-zero, and the example has one
    inactive hidden unit, so every part of the derivation has something to show.
    """
    rng = np.random.default_rng(seed)
    model = _model.MLP(3, 4, 3, activation="relu", dtype="float64")
    for l in (1, 2):
        W = model.params[f"W{l}"]
        W[...] = np.round(rng.normal(0.0, 0.8, W.shape), 1)
        model.params[f"b{l}"][...] = np.round(rng.normal(0.0, 0.3, W.shape[0]), 1)
    x = np.round(rng.normal(0.0, 1.0, 3), 1)  # (D,)
    y = 1
    return model, x, y


def explain(model=None, input=None, *, index=None, label=None, max_checks=MAX_CHECKS,
            tolerance=TOLERANCE, decimals=4):
    """The trace ``handgrad explain`` shows.

    - ``model`` None: the demonstration network of :func:`demo` and its example.
    - ``model`` (a model file's path or an :class:`~handgrad.MLP`) with ``input``: any file
      ``handgrad predict`` reads (:func:`handgrad.inputs.read_examples`): an image (prepared
      as MNIST's digits are), or a ``.npy``, CSV or IDX file of one example, or of several
      with ``index`` picking one; the label is ``label`` or, without it, the model's
      prediction.
    - ``model`` alone: example ``index`` (default 0) of the test set the model records it
      was trained on, with its recorded label unless ``label`` is given.

    ``label`` is a class index or one of the model's class names.
    """
    if model is None:
        if input is not None or index is not None or label is not None:
            raise TraceArgumentError("an INPUT, {index} or {label} needs a MODEL; without one "
                                     "the demonstration network is traced", index=None,
                                     label=None)
        net, x, y = demo()
        return trace(net, x, y, max_checks=max_checks, tolerance=tolerance, decimals=decimals,
                     description=f"the demonstration network (seed {DEMO_SEED}), one "
                                 f"example with label {y}")
    if isinstance(model, (str, Path)):
        from .serialization import load

        source = Path(model).name
        model = load(model)
    else:
        source = "the model"
    x_raw, y, description = _pick_example(model, input, index, label, source)
    try:
        x = model.prepare(x_raw)[0]  # (D,)
    except (ValueError, DataError) as exc:
        raise DataError(f"the example does not fit the model: {exc}") from None
    if y is None:
        y = int(model.predict(x[None, :])[0])
        description += f"; label {_class_name(model, y)} is the model's prediction " \
                       f"(another label can be given)"
    return trace(model, x, y, max_checks=max_checks, tolerance=tolerance, decimals=decimals,
                 description=description)


def _class_name(model, k):
    return model.classes[k] if model.classes and model.classes[k] != str(k) \
        else str(k)


def resolve_label(model, label):
    """A class index from an index or a class name of ``model``."""
    if label is None:
        return None
    classes = [str(c) for c in model.classes] if model.classes else None
    text = str(label).strip()
    if classes and text in classes:
        return classes.index(text)
    try:
        k = int(text)
    except ValueError:
        known = f" (classes: {', '.join(classes)})" if classes else ""
        raise TraceArgumentError(f"label {label!r} is neither a class index nor a class name"
                                 f"{known}", label=None) from None
    if not 0 <= k < model.n_classes:
        raise TraceArgumentError(f"label {k} is out of range: the model has "
                                 f"{model.n_classes} classes (0 to {model.n_classes - 1})",
                                 label=None)
    return k


def _pick_example(model, input, index, label, source):
    """``(raw example of shape (1, ...), label or None, description)``."""
    y = resolve_label(model, label)
    if index is not None and (isinstance(index, bool) or not isinstance(index, int)
                              or index < 0):
        raise TraceArgumentError(f"index must be 0 or more, got {index!r}", index=None)
    if input is not None:
        path = Path(input)
        _, raw = read_examples(path, model, reader="explain")  # as handgrad predict reads it
        if len(raw) > 1 and index is None:
            raise TraceArgumentError(f"{path} holds {len(raw)} examples; pick one with "
                                     f"{{index}}", index="N")
        i = 0 if index is None else index
        if i >= len(raw):
            raise TraceArgumentError(f"index {i} is out of range: {path} holds {len(raw)} "
                                     f"example{'s' if len(raw) != 1 else ''}", index=None)
        where = path.name if len(raw) == 1 else f"{path.name}[{i}]"
        description = f"{source} on {where}"
        if y is not None:
            description += f", label {_class_name(model, y)}"
        return np.asarray(raw[i:i + 1]), y, description
    from ._recorded import recorded_dataset

    # the recorded data set, read with the run's own label column, labels as the model's
    ds = recorded_dataset(model, source=source,
                          fix="give an INPUT (an image, or a .npy, CSV or IDX file) to trace")
    i = 0 if index is None else index
    if i >= len(ds.x_test):
        raise TraceArgumentError(f"index {i} is out of range: the test set of {ds.name} "
                                 f"has {len(ds.x_test)} examples", index=None)
    recorded = int(ds.y_test[i])
    description = (f"{source} on test example {i} of {ds.name} "
                   f"(label {_class_name(model, recorded)})")
    if y is not None and y != recorded:
        description += f", traced with label {_class_name(model, y)} instead"
    return ds.x_test[i:i + 1], (recorded if y is None else y), description
