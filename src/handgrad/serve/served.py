"""A model as the server offers it: a name, its tensors' metadata, its inputs checked.

Shape key: N examples of a request, B rows of a batch, D inputs (pixels after
flattening), H hidden units of a layer, M classes.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from ..model import MLP, activation_forward, log_softmax, logistic_output
from .protocol import NAMES, ProtocolError

INPUT = "input"  # the one input of every model, as in handgrad's ONNX export
OUTPUTS = ("probabilities", "label")
CLASSIFIER_OUTPUTS = ("softmax", "logistic")  # the model outputs that give both
VERSION = "1"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_name(name):
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ValueError(f"model name {name!r} must be 1–64 letters, digits, '_', '.' or '-', "
                         f"starting with a letter or digit")
    return name


def name_from_path(path):
    """A model name from a file name: ``runs/mnist.safetensors`` → ``mnist``."""
    stem = re.sub(r"[^A-Za-z0-9_.-]", "-", Path(path).stem).lstrip("-_.")[:64]
    return stem or "model"


class ServedModel:
    """One :class:`~handgrad.MLP` behind the protocol.

    ``example_shape`` is the shape of one raw example as the model was trained on
    it (e.g. (28, 28)); requests send ``[N, *example_shape]`` or ``[N, D]``.
    """

    def __init__(self, name, model, path=None):
        if not isinstance(model, MLP):
            raise TypeError(f"expected a handgrad.MLP, got {type(model).__name__}")
        self.name = check_name(name)
        reason = unservable(model)
        if reason is not None:
            raise ValueError(f"model {name!r}: {reason}")
        self.model = model
        self.path = None if path is None else str(path)
        self.version = VERSION
        prep = model.preprocessor
        self.example_shape = tuple(prep.input_shape) if prep is not None else (model.n_inputs,)
        self.n_inputs = model.n_inputs
        # a binary classifier (scikit-learn's: one logistic output, the probability of
        # the second class) is served as two classes, as its predict_proba gives them
        self.binary = model.config.output == "logistic" and model.n_classes == 1
        # a multilabel classifier (one logistic output per label): its label output is the
        # indicator of the labels that apply, [N, M] BOOL, as its predict gives them
        self.multilabel = model.config.output == "logistic" and model.n_classes > 1
        self.n_classes = 2 if self.binary else model.n_classes
        self.classes = (list(model.classes) if model.classes and len(model.classes) ==
                        self.n_classes else _saved_classes(model, self.n_classes))
        self.datatype = NAMES[model.dtype]

    @property
    def is_image(self):
        """Whether the page can draw for it: examples are 2-D (height, width) images."""
        return len(self.example_shape) == 2 and min(self.example_shape) >= 4

    @property
    def nbytes(self):
        """Memory of one copy of the model (weights and gradients)."""
        return 2 * self.model.param_buffer.nbytes

    def metadata(self):
        """The protocol's model metadata: inputs, outputs, datatypes, shapes."""
        return {
            "name": self.name,
            "versions": [self.version],
            "platform": "handgrad",
            "inputs": [{"name": INPUT, "datatype": self.datatype,
                        "shape": [-1, *self.example_shape]}],
            "outputs": [{"name": "probabilities", "datatype": self.datatype,
                         "shape": [-1, self.n_classes]},
                        {"name": "label", "datatype": self.label_datatype,
                         "shape": [-1, self.n_classes] if self.multilabel else [-1]}],
            "parameters": {"classes": self.classes,
                           "layer_sizes": list(self.model.config.layer_sizes),
                           "activation": self.model.config.activation},
        }

    @property
    def label_datatype(self):
        """``BOOL`` for a multilabel model's indicator rows, else ``INT64`` class indices."""
        return "BOOL" if self.multilabel else "INT64"

    def labels(self, P):
        """The ``label`` output of probabilities ``P`` (B, M), as ``predict`` decides:
        a multilabel model's (B, M) indicator, a label on where its probability exceeds ½
        (scikit-learn's threshold); otherwise the (B,) index of the most likely class."""
        if self.multilabel:
            return P > 0.5  # (B, M) bool
        return np.argmax(P, axis=1).astype(np.int64)  # (B,)

    def config(self, max_batch_size):
        """Triton's model configuration (tritonclient's ``get_model_config``)."""
        return {
            "name": self.name, "platform": "handgrad", "max_batch_size": max_batch_size,
            "input": [{"name": INPUT, "data_type": f"TYPE_{self.datatype}",
                       "dims": list(self.example_shape)}],
            "output": [{"name": "probabilities", "data_type": f"TYPE_{self.datatype}",
                        "dims": [self.n_classes]},
                       {"name": "label", "data_type": f"TYPE_{self.label_datatype}",
                        "dims": [self.n_classes] if self.multilabel else []}],
            "dynamic_batching": {"max_queue_delay_microseconds": 0} if max_batch_size > 1
            else None,
        }

    def check_input_names(self, header):
        """Refuse a request's JSON ``header`` naming an input this model lacks, before its
        tensors are decoded: a wrong name says more than what its data then gets wrong."""
        inputs = header.get("inputs")
        for t in inputs if isinstance(inputs, list) else ():
            name = t.get("name") if isinstance(t, dict) else None
            if isinstance(name, str) and name and name != INPUT:
                raise self._no_input(name)

    def _no_input(self, name):
        return ProtocolError(400, f"model {self.name!r} has no input {name!r}; "
                                  f"its one input is {INPUT!r}")

    def rows(self, request):
        """The request's one input as raw rows (N, D) in the model's dtype, checked."""
        inputs = request.inputs
        names = [t.name for t in inputs]
        unknown = [n for n in names if n != INPUT]
        if unknown:
            raise self._no_input(unknown[0])
        if len(inputs) != 1:
            raise ProtocolError(400, f"input {INPUT!r} is given {len(inputs)} times")
        t = inputs[0]
        shape = t.shape
        flat_ok = len(shape) == 2 and shape[1] == self.n_inputs
        if not (flat_ok or shape[1:] == self.example_shape) or len(shape) < 2:
            raise ProtocolError(400, f"input {INPUT!r} has shape {list(shape)}; model "
                                     f"{self.name!r} takes [N, {', '.join(map(str, self.example_shape))}]"
                                     f" or [N, {self.n_inputs}]")
        if shape[0] == 0:
            raise ProtocolError(400, f"input {INPUT!r} has no examples (N = 0)")
        for name, binary in request.outputs or ():
            if name not in OUTPUTS:
                raise ProtocolError(400, f"model {self.name!r} has no output {name!r}; its "
                                         f"outputs are {', '.join(map(repr, OUTPUTS))}")
        data = t.data
        if data.dtype.kind == "f":
            finite = np.isfinite(data)
            if not finite.all():
                n, *where = np.unravel_index(int(np.argmin(finite)), data.shape)
                raise ProtocolError(422, f"input {INPUT!r} holds NaN or infinity (first at "
                                         f"example {n}, position {list(map(int, where))})")
        rows = data.reshape(shape[0], self.n_inputs)  # (N, D)
        if rows.dtype == self.model.dtype:
            return rows  # no copy: the batch's stacking or preprocessing makes the new array
        with np.errstate(over="ignore"):
            X = rows.astype(self.model.dtype)  # (N, D)
        if data.dtype.kind == "f" and data.dtype.itemsize > X.dtype.itemsize \
                and not np.isfinite(X).all():
            raise ProtocolError(422, f"input {INPUT!r} has values too large for "
                                     f"{self.model.dtype.name}")
        return X

    def predict_proba(self, X):
        """Probabilities (B, M) of raw rows (B, D): stored preprocessing, then F1–F4.

        The same network as :meth:`MLP.predict_proba`, evaluated for the few rows of a
        served batch: the layers run transposed, on activations (H, B) with one
        column per example, so each layer's product is ``W Aᵀ`` with the weights
        (H, D) as stored. For a few rows (B from 2 to about 64) OpenBLAS multiplies
        that orientation much faster than the training forward's ``X Wᵀ`` (a
        transposed view of the weights); an unbatched request (B = 1) takes the same
        matrix-vector product either way. The activations are fresh arrays per pass,
        not a workspace: a batcher's B changes from pass to pass.
        """
        model = self.model
        output = model.config.output
        A = model.prepare(X).T  # (D, B) view of the preprocessed rows (B, D)
        K = model.n_layers
        for l in range(1, K + 1):
            Q = model.params[f"W{l}"] @ A  # (H, B) = (H, D) @ (D, B)   F1 / F3: Qᵀ = W Aᵀ
            Q += model.params[f"b{l}"][:, None]  # (H, B) + (H, 1)       F1 / F3: + b
            if l < K:
                activation_forward(model.config.activation, Q, Q)  # (H, B)  F2 in place
            A = Q
        O = A.T  # (B, M) view stored column by column: the softmax's fast layout
        P = np.empty(O.shape, model.dtype)  # (B, M) row by row: each request's rows contiguous
        if output == "softmax":
            logP = np.empty_like(O)  # (B, M), column by column like O
            log_softmax(O, logP, np.empty((O.shape[0], 1), model.dtype))  # F4 in log space
            np.exp(logP, out=P)  # (B, M)  F4: P = softmax(O)
        elif self.binary:  # (B, 2): σ(−O) = 1 − σ(O) and σ(O), neither by a subtraction
            P = np.empty((O.shape[0], 2), model.dtype)  # (B, 2)
            logistic_output(-O, P[:, :1], np.empty_like(O))
            logistic_output(O, P[:, 1:], np.empty_like(O))
        else:
            logistic_output(O, P, np.empty_like(O))  # (B, M)  F4ℓ: P = σ(O)
        return P

    def outputs(self, request, P):
        """``[(name, array, binary)]`` for the response, in the order asked for."""
        names = [n for n, _ in request.outputs] if request.outputs else list(OUTPUTS)
        out = []
        for name in names:
            arr = P if name == "probabilities" else self.labels(P)  # (N, M) or (N,)
            out.append((name, arr, request.wants_binary(name)))
        return out


def unservable(model):
    """Why ``model`` cannot be served (a regression output: no class probabilities, no
    label), or None."""
    if model.config.output in CLASSIFIER_OUTPUTS:
        return None
    return (f"handgrad serve answers with class probabilities and a label, and this model's "
            f"output is {model.config.output!r} (a regression model, not a classifier): it "
            f"cannot be served")


def _saved_classes(model, n):
    """The class names an estimator's file keeps (``handgrad.save`` of an MLPClassifier
    writes them in ``training``), else ``"0"``…``"n-1"``."""
    saved = (model.training or {}).get("classes") if isinstance(model.training, dict) else None
    values = saved.get("values") if isinstance(saved, dict) else None
    if isinstance(values, list) and len(values) == n:
        return [str(v) for v in values]
    return [str(i) for i in range(n)]


def grid_shape(n):
    """Rows and columns of a near-square grid holding ``n`` cells."""
    cols = math.ceil(math.sqrt(n))
    return math.ceil(n / cols), cols
