"""One entry point for every data source the CLI's ``--dataset`` accepts.

``digits`` (embedded), ``mnist``, ``fashion-mnist``, ``kmnist``, a folder of
IDX files named as MNIST's, a CSV file, or an ``.npz`` file.

:func:`load_dataset` reads a whole data set; :func:`open_dataset` reads its labels and
leaves the examples to be read by row range (:class:`DataSource`), which is how each
worker of a distributed job reads only its shard.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .digits import load_digits
from .errors import DataError
from .mnist import DATASETS, PARTS, find_part, load_mnist, mnist_files
from .idx import idx_shape, load_idx
from .preprocess import stratified_split
from .tabular import LabelColumn, load_npz, read_csv

TEST_FRACTION = 0.2  # held out as the test set when a source has none
SPLIT_SEED = 0  # fixed, so the test set never depends on the training seed
NAMED = ("digits", *DATASETS)


@dataclass
class Dataset:
    """Train and test arrays with integer labels 0..M−1 and the class names."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray  # (N,) int
    x_test: np.ndarray
    y_test: np.ndarray
    classes: list = field(default_factory=list)
    feature_names: list | None = None
    # which CSV column held the labels and how it was chosen (None for other sources);
    # str() gives e.g. "'label' (0-based column 0 of 785, named like a label)"
    label_column: LabelColumn | None = None

    @property
    def n_classes(self):
        return len(self.classes)


def load_dataset(spec, *, root=None, label_column="auto", progress=True):
    """Load a data set by name or path (see the module docstring).

    ``label_column`` applies to CSV files (see :func:`~handgrad.datasets.read_csv`):
    ``"auto"`` takes a column named like a label, else the last one, and refuses one
    that does not look like labels; an index or header name overrides the guess. The
    column used is recorded as the returned :class:`Dataset`'s ``label_column``.
    """
    spec = str(spec)
    if spec == "digits":
        images, labels = load_digits()
        return _split("digits", images, labels, [str(i) for i in range(10)])
    if spec in DATASETS:
        (xtr, ytr), (xte, yte) = load_mnist(root, spec, progress=progress)
        return Dataset(spec, xtr, ytr.astype(np.int64), xte, yte.astype(np.int64),
                       list(DATASETS[spec].classes))
    path = Path(spec)
    if not path.exists():
        raise DataError(f"{spec}: no such file or folder, and not a known data set "
                        f"(known: {', '.join(NAMED)})")
    if path.is_dir():
        return _load_idx_folder(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        table = read_csv(path, label_column)
        if table.y is None:
            raise DataError(f"{path}: training needs a label column ({{label_column}} "
                            f"reads features only)", label_column=None)
        try:
            labels, classes = _encode(table.y)
        except DataError as exc:
            raise DataError(f"{path}: label column {table.label}: {exc}; name another with "
                            f"{{label_column}}", label_column="NAME_OR_INDEX") from None
        ds = _split(path.name, table.X, labels, classes, table.feature_names)
        ds.label_column = table.label
        return ds
    if suffix == ".npz":
        return _from_npz(path)
    raise DataError(f"{path}: unsupported data file; give an IDX folder, a .csv or an .npz")


def _encode(y):
    classes, labels = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise DataError(f"the labels hold a single class ({classes[0]!r}); need at least two")
    return labels.astype(np.int64), [str(c) for c in classes]


def _split(name, X, labels, classes, feature_names=None):
    train, test = stratified_split(labels, TEST_FRACTION, SPLIT_SEED)
    return Dataset(name, X[train], labels[train], X[test], labels[test], classes,
                   feature_names)


def _load_idx_folder(path):
    missing = [p for p in PARTS if find_part(path, p) is None]
    if missing:
        raise DataError(f"{path}: an IDX folder needs " + ", ".join(PARTS)
                        + " (each optionally .gz); missing " + ", ".join(missing))
    arrays = {p: load_idx(find_part(path, p)) for p in PARTS}
    xtr, ytr, xte, yte = (arrays[p] for p in PARTS)
    for images, labels, split in ((xtr, ytr, "train"), (xte, yte, "t10k")):
        if labels.ndim != 1 or images.shape[0] != labels.shape[0]:
            raise DataError(f"{path}: {split} images {images.shape} and labels "
                            f"{labels.shape} do not match")
        if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
            raise DataError(f"{path}: {split} labels must be non-negative integers")
    if xtr.shape[1:] != xte.shape[1:]:
        raise DataError(f"{path}: train images {xtr.shape[1:]} and test images "
                        f"{xte.shape[1:]} differ in shape")
    n = int(max(ytr.max(), yte.max())) + 1
    return Dataset(path.name, xtr, ytr.astype(np.int64), xte, yte.astype(np.int64),
                   [str(i) for i in range(n)])


def _from_npz(path):
    arrays = load_npz(path)
    keys = set(arrays)
    if {"x_train", "y_train", "x_test", "y_test"} <= keys:
        xtr, ytr, xte, yte = (arrays[k] for k in ("x_train", "y_train", "x_test", "y_test"))
        for x, y, split in ((xtr, ytr, "train"), (xte, yte, "test")):
            if y.ndim != 1 or x.ndim < 2 or x.shape[0] != y.shape[0]:
                raise DataError(f"{path}: x_{split} {x.shape} and y_{split} {y.shape} "
                                f"do not match (need x (N, ...) and y (N,))")
        all_labels, classes = _encode(np.concatenate([ytr, yte]))
        return Dataset(path.name, xtr, all_labels[:len(ytr)], xte, all_labels[len(ytr):],
                       classes)
    for xk, yk in (("X", "y"), ("x", "y")):
        if {xk, yk} <= keys:
            X, y = arrays[xk], arrays[yk]
            if y.ndim != 1 or X.ndim < 2 or X.shape[0] != y.shape[0]:
                raise DataError(f"{path}: {xk} {X.shape} and {yk} {y.shape} do not match")
            labels, classes = _encode(y)
            return _split(path.name, X, labels, classes)
    raise DataError(f"{path}: expected arrays x_train, y_train, x_test, y_test (or X and y); "
                    f"found {', '.join(sorted(keys)) or 'none'}")


@dataclass
class DataSource:
    """A data set whose labels are known and whose examples are read by row range.

    ``read_train(lo, hi)`` and ``read_test(lo, hi)`` return the examples of rows
    ``lo:hi``. IDX files (the MNIST family, IDX folders) are read by range from disk
    (a gzip file is inflated only up to ``hi``); other sources are loaded whole and
    sliced.
    """

    name: str
    classes: list
    y_train: np.ndarray  # (N,) int
    y_test: np.ndarray  # (N_test,) int
    read_train: Callable
    read_test: Callable
    label_column: LabelColumn | None = None  # as :class:`Dataset`'s

    @property
    def n_classes(self):
        return len(self.classes)

    @classmethod
    def from_dataset(cls, ds):
        """A source over the arrays of a loaded :class:`Dataset`."""
        return cls(ds.name, list(ds.classes), ds.y_train, ds.y_test,
                   lambda lo, hi: ds.x_train[lo:hi], lambda lo, hi: ds.x_test[lo:hi],
                   ds.label_column)


def open_dataset(spec, *, root=None, label_column="auto", progress=True, download_missing=True):
    """The :class:`DataSource` of ``spec`` (any name or path :func:`load_dataset` takes)."""
    spec = str(spec)
    folder = None
    if spec in DATASETS:
        folder = mnist_files(root, spec, download_missing=download_missing, progress=progress)
    elif Path(spec).is_dir() and all(find_part(Path(spec), p) for p in PARTS):
        folder = Path(spec)
    if folder is None:
        return DataSource.from_dataset(load_dataset(spec, root=root, label_column=label_column,
                                                    progress=progress))
    files = {p: find_part(folder, p) for p in PARTS}
    labels = {}
    for split in ("train", "t10k"):
        images = files[f"{split}-images-idx3-ubyte"]
        labels_path = files[f"{split}-labels-idx1-ubyte"]
        y = load_idx(labels_path)
        shape = idx_shape(images)  # the header's, no pixels read
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or (y.size and y.min() < 0):
            raise DataError(f"{labels_path}: labels must be non-negative integers (N,)")
        if len(shape) < 2 or shape[0] != len(y):
            raise DataError(f"{folder}: {split} images {shape} and labels {y.shape} do not "
                            f"match")
        labels[split] = y.astype(np.int64)
    if spec in DATASETS:
        classes, name = list(DATASETS[spec].classes), spec
    else:
        n = int(max(labels["train"].max(), labels["t10k"].max())) + 1
        classes, name = [str(i) for i in range(n)], Path(spec).name

    def reader(part):
        return lambda lo, hi: load_idx(files[part], rows=(lo, hi))

    return DataSource(name, classes, labels["train"], labels["t10k"],
                      reader("train-images-idx3-ubyte"), reader("t10k-images-idx3-ubyte"))
