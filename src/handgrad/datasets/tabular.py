"""Users' own data: CSV files and NumPy ``.npy`` / ``.npz`` files (never pickle).

Shape key: N rows, D feature columns.
"""

from __future__ import annotations

import csv
import io
import math
import zipfile
from pathlib import Path

import numpy as np

from .errors import DataError

DEFAULT_MAX_CSV_BYTES = 1 << 30  # 1 GiB
DEFAULT_MAX_NPY_BYTES = 4 << 30


def _open_checked(path, max_bytes, what):
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if not path.is_file():
        raise DataError(f"{path}: not a regular file, expected a {what} file")
    size = path.stat().st_size
    if size > max_bytes:
        raise DataError(f"{path}: {size:,} bytes, over the {what} size limit of "
                        f"{max_bytes:,} (pass max_bytes to load larger files)")
    return path


def _is_number(cell):
    try:
        float(cell)
    except ValueError:
        return False
    return True


def load_csv(path, label_column=-1, *, header="auto", delimiter=",",
             max_bytes=DEFAULT_MAX_CSV_BYTES):
    """Read a CSV of numeric features and one label column.

    ``label_column`` is a column index (negative counts from the end), a
    column name when the file has a header, or None when every column is a
    feature (then the returned ``y`` is None). ``header`` is True, False or "auto"
    (a first row with any non-numeric cell is a header). Returns
    ``(X, y, feature_names)``: float64 (N, D), labels (N,) as int64 when every
    label is a whole number and as str otherwise, and the D column names
    (None without a header).
    """
    path = _open_checked(path, max_bytes, "CSV")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start}); is it a CSV file?") from None
    rows = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        records = [(i, r) for i, r in enumerate(rows, start=1) if r and any(c.strip() for c in r)]
    except csv.Error as exc:
        raise DataError(f"{path}: malformed CSV: {exc}") from None
    if not records:
        raise DataError(f"{path}: the file holds no rows")
    first_line, first = records[0]
    if header == "auto":
        header = not all(_is_number(c) for c in first)
    names = None
    if header:
        names = [c.strip() for c in first]
        records = records[1:]
        if not records:
            raise DataError(f"{path}: the file holds a header but no data rows")
    width = len(records[0][1]) if names is None else len(names)
    if label_column is None:
        label_index = None
    elif width < 2:
        raise DataError(f"{path}: need at least one feature column and a label column, "
                        f"found {width} column")
    else:
        label_index = _label_index(path, label_column, names, width)
    n = len(records)
    X = np.empty((n, width - (label_index is not None)))  # (N, D)
    labels = []
    for r, (line, cells) in enumerate(records):
        if len(cells) != width:
            raise DataError(f"{path}, line {line}: {len(cells)} columns, expected {width} "
                            f"(a ragged row)")
        if label_index is not None:
            labels.append(cells[label_index].strip())
        j = 0
        for c, cell in enumerate(cells):
            if c == label_index:
                continue
            try:
                value = float(cell)
            except ValueError:
                col = names[c] if names else f"column {c + 1}"
                raise DataError(f"{path}, line {line}, {col}: {cell.strip()!r} is not a "
                                f"number") from None
            if not math.isfinite(value):
                col = names[c] if names else f"column {c + 1}"
                raise DataError(f"{path}, line {line}, {col}: {cell.strip()!r} is not finite")
            X[r, j] = value
            j += 1
    y = None if label_index is None else _labels_array(labels)
    feature_names = None if names is None else [nm for c, nm in enumerate(names)
                                                if c != label_index]
    return X, y, feature_names


def _label_index(path, label_column, names, width):
    if isinstance(label_column, str):
        if names is None:
            raise DataError(f"{path}: label column {label_column!r} given by name, but the "
                            f"file has no header row; give its index instead")
        if label_column not in names:
            raise DataError(f"{path}: no column named {label_column!r}; columns are "
                            + ", ".join(names))
        return names.index(label_column)
    if not isinstance(label_column, (int, np.integer)) or not -width <= label_column < width:
        raise DataError(f"{path}: label column {label_column!r} is out of range for "
                        f"{width} columns")
    return int(label_column) % width


def _labels_array(labels):
    try:
        values = np.array([float(v) for v in labels])
    except ValueError:
        return np.array(labels, dtype=str)
    if np.all(np.isfinite(values)) and np.all(values == np.round(values)):
        return values.astype(np.int64)
    return np.array(labels, dtype=str)


def load_npy(path, max_bytes=DEFAULT_MAX_NPY_BYTES, mmap=False):
    """One array from a ``.npy`` file; object (pickled) arrays are refused.

    ``mmap=True`` maps the file read-only instead of reading it (no size limit
    then): for inputs larger than memory, processed in chunks by the caller.
    """
    path = _open_checked(path, float("inf") if mmap else max_bytes, ".npy")
    try:
        return np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "pickle" in str(exc).lower():
            raise DataError(f"{path}: holds pickled objects, which handgrad never loads; "
                            f"save plain numeric arrays instead") from None
        raise DataError(f"{path}: not a valid .npy file ({exc})") from None
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot read as .npy ({exc})") from None


def load_npz(path, max_bytes=DEFAULT_MAX_NPY_BYTES):
    """All arrays of a ``.npz`` file as a dict; object (pickled) arrays are refused."""
    path = _open_checked(path, max_bytes, ".npz")
    try:
        with np.load(path, allow_pickle=False) as archive:
            if not isinstance(archive, np.lib.npyio.NpzFile):
                raise DataError(f"{path}: a .npy file, not a .npz archive")
            total = 0
            for info in archive.zip.infolist():
                total += info.file_size
                if total > max_bytes:
                    raise DataError(f"{path}: its arrays hold over {max_bytes:,} bytes "
                                    f"uncompressed (pass max_bytes to load larger files)")
            return {k: archive[k] for k in archive.files}
    except DataError:
        raise
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise DataError(f"{path}: holds pickled objects, which handgrad never loads; "
                            f"save plain numeric arrays instead") from None
        raise DataError(f"{path}: not a valid .npz file ({exc})") from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise DataError(f"{path}: cannot read as .npz ({exc})") from None
