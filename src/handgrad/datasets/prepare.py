"""A data set made ready for training: train, validation and test rows from one call.

:func:`prepare_data` is what ``handgrad train`` does with its data flags, for Python:
load any source :func:`~handgrad.datasets.load_dataset` takes (a named set, an IDX folder,
a CSV or ``.npz`` file), then hold out a stratified, seeded validation split of the
training rows. The distributed counterpart, which reads only one rank's rows, is
:func:`handgrad.distributed.prepare_shard`; both return a :class:`PreparedData` and
split alike (:func:`validation_split`).

The rows are raw (as stored): the scaling is the model's (:class:`Preprocessor`, fitted
on ``x_train``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._errors import ParameterError
from .preprocess import stratified_split
from .registry import load_dataset
from .tabular import LabelColumn


@dataclass
class PreparedData:
    """Raw train, validation and test rows of a data set, with its class names.

    ``x_val``/``y_val`` are None without a validation split. ``n_train`` counts the
    training rows of the whole run: ``len(x_train)`` in one process, all ranks' rows
    together where each holds a shard. ``label_column`` says which CSV column held the
    labels (None for other sources).
    """

    name: str
    classes: list
    x_train: np.ndarray  # (n, ...) raw
    y_train: np.ndarray  # (n,) int
    x_val: np.ndarray | None
    y_val: np.ndarray | None
    x_test: np.ndarray
    y_test: np.ndarray
    n_train: int
    label_column: LabelColumn | None = None

    @property
    def n_classes(self):
        return len(self.classes)


def validation_split(y, val_fraction, seed=None):
    """``(train indices, validation indices or None)`` of the labels ``y``: a stratified
    split (:func:`stratified_split`) seeded by ``seed``; ``val_fraction`` 0 holds out
    nothing. Raises :class:`~handgrad._errors.ParameterError` (on ``val_fraction``) when
    the fraction leaves no validation row."""
    if not val_fraction:
        return np.arange(len(y)), None
    train, val = stratified_split(y, val_fraction, seed)
    if len(val) == 0:
        raise ParameterError("{val_fraction} leaves no validation rows; use a larger "
                             "fraction or 0", val_fraction=val_fraction)
    return train, val


def prepare_data(spec, *, label_column="auto", val_fraction=0.0, seed=None, root=None,
                 progress=True):
    """Load ``spec`` and split off validation rows: a :class:`PreparedData`.

    ``spec`` and ``label_column`` are :func:`~handgrad.datasets.load_dataset`'s (``root``
    the folder of the named sets, ``progress`` whether a download shows its progress);
    ``val_fraction`` of each class's training rows is held out for validation, chosen by
    ``seed`` (:func:`validation_split`). The test rows are the source's own (or its fixed
    hold-out, for sources without one).
    """
    ds = load_dataset(spec, root=root, label_column=label_column, progress=progress)
    train, val = validation_split(ds.y_train, val_fraction, seed)
    x_train, y_train = ds.x_train, ds.y_train
    x_val = y_val = None
    if val is not None:
        x_train, y_train, x_val, y_val = x_train[train], y_train[train], x_train[val], \
            y_train[val]
    return PreparedData(ds.name, list(ds.classes), x_train, y_train, x_val, y_val,
                        ds.x_test, ds.y_test, len(x_train), ds.label_column)
