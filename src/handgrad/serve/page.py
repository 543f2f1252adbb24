"""What the page computes: a drawing made into the model's input, the network's view of
it, one SGD step on a visitor's copy, and the derivation's numbers (``handgrad.trace``).

Shape key: D inputs (pixels), H units of a hidden layer, M classes.
"""

from __future__ import annotations

import base64
import binascii
import math

import numpy as np

from ..datasets.errors import DataError
from ..optim import SGD
from .config import MAX_LR
from .protocol import ProtocolError
from .served import grid_shape

MAX_SIDE = 1024  # the largest drawing accepted, in pixels per side
TOP_UNITS = 8  # first-layer weight images shown for the most active units
FULL_VALUES = 64  # trace values with at most this many entries are sent whole


def _field(body, key, kind):
    value = body.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        noun = "an integer" if kind is int else "a string"
        raise ProtocolError(400, f"the drawing needs {key!r} as {noun}")
    return value


def drawing(body):
    """The grayscale drawing (height, width) of a page request: ``pixels`` base64, ``width``,
    ``height``."""
    width, height = _field(body, "width", int), _field(body, "height", int)
    if not (8 <= width <= MAX_SIDE and 8 <= height <= MAX_SIDE):
        raise ProtocolError(400, f"a drawing must be 8 to {MAX_SIDE} pixels a side, "
                                 f"got {width}×{height}")
    pixels = _field(body, "pixels", str)
    try:
        raw = base64.b64decode(pixels, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError(400, "'pixels' must be base64 (one byte of gray per pixel)") from None
    if len(raw) != width * height:
        raise ProtocolError(400, f"'pixels' holds {len(raw)} bytes; a {width}×{height} "
                                 f"drawing has {width * height}")
    return np.frombuffer(raw, np.uint8).reshape(height, width).astype(np.float64)  # (height, width)


def max_value(served):
    """The pixel value of full ink in the model's training data (255 MNIST, 16 digits)."""
    prep = served.model.preprocessor
    return prep.scale if (prep is not None and prep.scaling == "divide") else 255.0


def example(served, gray):
    """The drawing as one raw example of the model, prepared as ``handgrad predict`` does
    with an image file: cropped to the ink, fitted in a box, centred by mass, resized."""
    from ..images import digit_input

    if not served.is_image:
        raise ProtocolError(422, f"model {served.name!r} takes examples of shape "
                                 f"{list(served.example_shape)}, not images: the page cannot "
                                 f"draw for it (the /v2 protocol can still be used)")
    try:
        return digit_input(gray, served.example_shape, max_value(served))  # example_shape
    except DataError as exc:
        raise ProtocolError(422, f"the drawing cannot be read as a digit: {exc}") from None


def _round(a, decimals=4):
    return np.round(np.asarray(a, dtype=np.float64), decimals).tolist()


def look(served, model, x):
    """Probabilities, hidden activations and the most active units' weights for ``x``."""
    X = model.prepare(x[None])  # (1, D)
    ws = model.workspace(1)
    model.forward(X, ws)
    hidden = [np.array(h[0]) for h in ws.h]  # [(H,)] per hidden layer, copied out of ws
    P = model.predict_proba(X)[0]  # (M,)
    k = int(np.argmax(P))
    W1 = model.params["W1"]  # (H, D): row j is unit j's weights over the pixels
    if hidden:
        order = np.argsort(-hidden[0], kind="stable")[:TOP_UNITS]
        units = [{"unit": int(j), "label": f"unit {int(j)}", "activation": float(hidden[0][j]),
                  "weights": _round(W1[j].reshape(served.example_shape)),
                  "scale": float(np.abs(W1[j]).max())} for j in order]
    else:  # no hidden layer: W1 maps pixels to classes directly
        order = np.argsort(-P, kind="stable")[:TOP_UNITS]
        units = [{"unit": int(j), "label": f"class {served.classes[j]}", "activation": float(P[j]),
                  "weights": _round(W1[j].reshape(served.example_shape)),
                  "scale": float(np.abs(W1[j]).max())} for j in order]
    peak = max_value(served)
    return {
        "input": _round(np.asarray(x) / peak, 3),
        "probabilities": _round(P, 6),
        "prediction": k,
        "class": served.classes[k],
        "classes": served.classes,
        "hidden": [{"layer": l, "units": int(h.size), "grid": list(grid_shape(h.size)),
                    "values": _round(h, 4), "max": float(h.max()),
                    "active": int(np.count_nonzero(h > 0))}
                   for l, h in enumerate(hidden, start=1)],
        "units": units,
    }


def label_of(served, body):
    label = body.get("label")
    if not isinstance(label, int) or isinstance(label, bool) or not 0 <= label < served.n_classes:
        raise ProtocolError(400, f"'label' must be a class index from 0 to "
                                 f"{served.n_classes - 1}, got {str(label)[:20]!r}")
    return label


def learning_rate(body, default):
    lr = body.get("lr", default)
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not (
            math.isfinite(lr) and 0 < lr <= MAX_LR):
        got = "null (no number)" if lr is None else repr(str(lr)[:20])
        raise ProtocolError(400, f"'lr' must be a number in (0, {MAX_LR:g}], got {got}")
    return float(lr)


def learn(model, x, label, lr):
    """One SGD step (B1–B7, then ``p ← p − lr ∂L/∂p``) on ``model`` with the example
    ``x`` and its true ``label``; returns the loss before the step."""
    X = model.prepare(x[None])  # (1, D)
    loss, grads = model.loss_and_grads(X, np.array([label]))
    SGD(lr).step(model.params, grads)
    return float(loss)


def loss_of(model, x, label):
    X = model.prepare(x[None])  # (1, D)
    P = model.predict_proba(X)[0]  # (M,)
    return max(0.0, -math.log(max(float(P[label]), np.finfo(np.float64).tiny)))  # F5


def trace(model, x, label):
    """The derivation's steps (``handgrad.trace``) for ``x`` with true ``label``, for the page.

    Small values (P − y, a bias gradient of a few classes) go whole; larger ones as
    their norm, extremes and first entries, since a W¹ gradient has D × H entries.
    """
    from .. import trace as derive  # the public function handgrad.trace

    X = model.prepare(x[None])  # (1, D)
    t = derive(model, X[0], label)  # one example: the derivation's vectors (D,), (H,), (M,)
    steps = []
    for step in t.steps:
        value = np.asarray(step.value, dtype=np.float64)
        error = step.check_error
        item = {"eq": step.eq, "name": step.name, "formula": step.text,
                "shape": list(value.shape),
                "check_error": float(error) if error is not None and math.isfinite(error)
                else None,
                "passed": None if step.check is None else step.check.passed}
        flat = value.ravel()
        if flat.size <= FULL_VALUES:
            item["value"] = [float(f"{v:.5g}") for v in flat]  # row-major, 5 significant digits
        else:
            item["summary"] = {"norm": float(np.linalg.norm(flat)), "min": float(flat.min()),
                               "max": float(flat.max()),
                               "nonzero": int(np.count_nonzero(flat))}
        steps.append(item)
    return {"label": label, "steps": steps}
