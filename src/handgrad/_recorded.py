"""The data set a model file records it was trained on, loaded as it was then.

``handgrad evaluate``, ``report`` and ``explain`` without an input all read a model's
test set again: from the data set its training summary records (a named set, or the
absolute path of a file or folder), with the label column the run used, and with its
labels matched to the model's classes by name, never silently by position.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .config import ARRAYS, TrainConfig
from .datasets import NAMED, DataError, load_dataset


def dataset_spec(spec):
    """What a model records as its data set: a named set as is, a file or folder as an
    absolute path (so that the model can be evaluated from any folder)."""
    spec = str(spec)
    if spec in NAMED or spec == ARRAYS or not Path(spec).exists():
        return spec
    return os.path.abspath(spec)


def recorded_dataset(model, dataset=None, *, source="the model", fix=None, progress=True):
    """The :class:`~handgrad.datasets.Dataset` to evaluate ``model`` on: ``dataset``, or
    the one its training summary records; read with the recorded label column; its
    labels the indices of ``model.classes`` (:func:`match_classes`).

    ``source`` names the model in messages (its file name); ``fix`` is what a message
    says to do when no recorded data set can be read (by default: pass ``dataset``).
    """
    training = model.training if isinstance(model.training, dict) else {}
    try:
        config = TrainConfig.from_training(training)
    except ValueError:  # settings of a newer handgrad: read with the defaults
        config = None
    column = _label_column(config.label_column) if config is not None else "auto"
    if dataset is None:
        way_out = {"dataset": "DATA"} if fix is None else {}
        fix = "give the data set with {dataset}" if fix is None else fix
        dataset = training.get("dataset")
        if dataset is None or dataset == ARRAYS:
            raise DataError(f"{source} does not record the data set it was trained on; {fix}",
                            **way_out)
        dataset = str(dataset)
        if dataset not in NAMED and not Path(dataset).exists():
            where = "" if Path(dataset).is_absolute() else f" (relative to {os.getcwd()})"
            raise DataError(f"{source} records that it was trained on {dataset}, which is "
                            f"not there{where}; {fix}", **way_out)
    ds = load_dataset(dataset, label_column=column, progress=progress)
    return match_classes(model, ds, source)


def match_classes(model, ds, source="the model"):
    """``ds`` with its labels as indices of ``model.classes``, matched by name.

    A data set whose classes are the model's, or some of them, is relabelled to the
    model's order; one labelled by index alone (``"0"``, ``"1"``... as IDX files are)
    is taken by position; any other (other names, or more classes than the model has)
    is refused naming both sets of classes.
    """
    mine = [str(c) for c in model.classes] if model.classes else None
    theirs = [str(c) for c in ds.classes]
    if mine is None or theirs == mine or theirs == [str(i) for i in range(len(theirs))]:
        if len(theirs) > model.n_classes:
            raise DataError(f"data set {ds.name} has {len(theirs)} classes, {source} "
                            f"{model.n_classes}")
        return ds
    unknown = [c for c in theirs if c not in mine]
    if unknown:
        raise DataError(f"data set {ds.name} has classes {_names(theirs)}, but {source} "
                        f"knows {_names(mine)} ({_names(unknown)} unknown to it); evaluate "
                        f"on data labelled with the model's classes")
    index = np.array([mine.index(c) for c in theirs], dtype=np.int64)  # data's → model's
    ds.y_train, ds.y_test = index[ds.y_train], index[ds.y_test]
    ds.classes = list(mine)
    return ds


def _names(classes, limit=12):
    shown = ", ".join(classes[:limit])
    return shown + (f" and {len(classes) - limit} more" if len(classes) > limit else "")


def _label_column(text):
    """A recorded label column: an index, a header name, or ``auto``."""
    try:
        return int(text)
    except (TypeError, ValueError):
        return text
