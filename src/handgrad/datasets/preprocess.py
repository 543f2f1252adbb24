"""Preprocessing that travels with the model, and a stratified split.

Shape key: N rows, D features (pixels after flattening).

A :class:`Preprocessor` is fitted on the training set, stored in the model file
as JSON (:meth:`Preprocessor.to_dict`), and applied again at prediction time, so
``predict`` on raw uint8 images gives the same answer as during training.
"""

from __future__ import annotations

import math

import numpy as np

from .errors import DataError

SCALINGS = ("divide", "standardize", "none")
FORMAT = "handgrad-preprocessing"
VERSION = 1


class Preprocessor:
    """Flatten each example to a row, then scale it.

    ``scaling="divide"``: ``x / scale`` (``scale`` defaults to the training set's
    largest absolute value: 255 for MNIST, 16 for the 8×8 digits); ``"standardize"``:
    ``(x − mean) / std`` per feature with training-set statistics (features with
    zero variance are only centred); ``"none"``: no scaling.
    """

    def __init__(self, scaling="divide", scale=None):
        if scaling not in SCALINGS:
            raise ValueError(f"unknown scaling {scaling!r}; choose one of {', '.join(SCALINGS)}")
        if scale is not None and not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be a positive number, got {scale!r}")
        self.scaling = scaling
        self.scale = scale
        self.input_shape = None  # shape of one example before flattening
        self.mean = None  # (D,)
        self.std = None  # (D,)

    @property
    def fitted(self):
        return self.input_shape is not None

    @property
    def n_features(self):
        return math.prod(self.input_shape)

    def fit(self, X, reduce=None):
        """Fit to the training examples ``X``.

        When the training set is split between workers (each holding some rows, possibly
        none), each passes its rows and ``reduce(value, op)``, which combines a statistic
        over all of them (``op`` is ``"sum"`` or ``"max"``); every worker then ends with
        the statistics of the whole set (see :func:`handgrad.distributed.fit_preprocessor`).
        """
        X = _as_numeric(X, "training data")
        if X.ndim < 2 or (X.shape[0] == 0 and reduce is None):
            raise DataError(f"training data must have shape (n_samples, ...), got {X.shape}")
        if reduce is None:
            def reduce(value, op):
                return value
        self.input_shape = tuple(int(d) for d in X.shape[1:])
        flat = X.reshape(X.shape[0], -1)
        if self.scaling == "divide" and self.scale is None:
            peak = reduce(float(np.abs(flat).max()) if flat.size else 0.0, "max")
            self.scale = peak if peak > 0 else 1.0
        if self.scaling == "standardize":
            n = reduce(float(flat.shape[0]), "sum")
            self.mean = reduce(flat.sum(axis=0, dtype=np.float64), "sum") / n  # (D,)
            sq = reduce(((flat - self.mean) ** 2).sum(axis=0), "sum")  # (D,) about the mean
            std = np.sqrt(sq / n)  # (D,)
            self.std = np.where(std > 0, std, 1.0)  # (D,)
        return self

    def transform(self, X, dtype="float32"):
        """Rows of ``dtype`` (N, D) from examples shaped like the training data."""
        if not self.fitted:
            raise RuntimeError("Preprocessor.transform called before fit")
        X = _as_numeric(X, "input")
        if X.shape[1:] != self.input_shape:
            if X.ndim == 2 and X.shape[1] == self.n_features:
                pass  # already flattened rows
            else:
                raise DataError(
                    f"input examples have shape {X.shape[1:]}, expected {self.input_shape} "
                    f"(or rows of {self.n_features} features)"
                )
        out = X.reshape(X.shape[0], -1).astype(dtype)  # (N, D)
        if self.scaling == "divide":
            out /= np.asarray(self.scale, dtype=dtype)
        elif self.scaling == "standardize":
            out -= self.mean.astype(dtype)
            out /= self.std.astype(dtype)
        return out

    def to_dict(self):
        if not self.fitted:
            raise RuntimeError("cannot save an unfitted Preprocessor")
        return {
            "format": FORMAT, "version": VERSION, "scaling": self.scaling,
            "scale": self.scale, "input_shape": list(self.input_shape),
            "mean": None if self.mean is None else self.mean.tolist(),
            "std": None if self.std is None else self.std.tolist(),
        }

    @classmethod
    def from_dict(cls, d):
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise DataError("preprocessing metadata is missing or not handgrad's")
        if d.get("version") != VERSION:
            raise DataError(f"preprocessing version {d.get('version')!r} is not supported "
                            f"(this handgrad reads version {VERSION}); upgrade handgrad")
        try:
            p = cls(d["scaling"], d["scale"])
            p.input_shape = tuple(int(v) for v in d["input_shape"])
            if any(v <= 0 for v in p.input_shape):
                raise ValueError("non-positive dimension")
            if d["scaling"] == "standardize":
                p.mean = np.asarray(d["mean"], dtype=np.float64)
                p.std = np.asarray(d["std"], dtype=np.float64)
                D = p.n_features
                if p.mean.shape != (D,) or p.std.shape != (D,) or not (
                        np.all(np.isfinite(p.mean)) and np.all(p.std > 0)):
                    raise ValueError("mean/std do not match the input shape or are not finite")
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"preprocessing metadata is damaged: {exc}") from None
        return p

    def __repr__(self):
        return f"Preprocessor(scaling={self.scaling!r}, input_shape={self.input_shape})"


def _as_numeric(X, what):
    X = np.asarray(X)
    if not (np.issubdtype(X.dtype, np.integer) or np.issubdtype(X.dtype, np.floating)
            or X.dtype == bool):
        raise DataError(f"{what} must be numeric, got dtype {X.dtype}")
    if np.issubdtype(X.dtype, np.floating) and not np.all(np.isfinite(X)):
        raise DataError(f"{what} contains NaN or infinite values")
    return X


def stratified_split(y, fraction, seed=None):
    """Indices ``(train, val)``: ``fraction`` of each class goes to validation.

    Every class with at least two examples keeps one on each side; the split
    depends only on ``y``, ``fraction`` and ``seed``.
    """
    if not (0 < fraction < 1):
        raise ValueError(f"validation fraction must lie strictly between 0 and 1, got {fraction!r}")
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"labels must be 1-D for a stratified split, got shape {y.shape}")
    rng = np.random.default_rng(seed)
    train, val = [], []
    for cls in np.unique(y):
        idx = np.flatnonzero(y == cls)
        rng.shuffle(idx)
        n_val = int(round(len(idx) * fraction))
        if len(idx) >= 2:
            n_val = min(max(n_val, 1), len(idx) - 1)
        else:
            n_val = 0
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    train = np.sort(np.concatenate(train))
    val = np.sort(np.concatenate(val))
    return train, val
