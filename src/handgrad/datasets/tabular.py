"""Users' own data: CSV files and NumPy ``.npy`` / ``.npz`` files (never pickle).

Shape key: N rows, D feature columns.
"""

from __future__ import annotations

import csv
import io
import math
import zipfile
from dataclasses import dataclass
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


# Header names taken for the label column when none is given, most telling first.
LABEL_NAMES = ("label", "target", "class", "y")
# Below this many rows, the number of distinct labels says little: not judged.
MIN_ROWS_TO_JUDGE = 20
MIN_ROWS_PER_CLASS = 3  # on average: more distinct "labels" than N / 3 look like a feature
# A guessed label column whose largest class outnumbers its smallest this many times over
# is more likely a feature (naming the column explicitly skips every check).
MAX_CLASS_IMBALANCE = 100


def column_words(index):
    """A column as messages name it: ``0-based column 3``, counted as ``label_column=``
    counts."""
    return f"0-based column {index}"


@dataclass(frozen=True)
class LabelColumn:
    """Which column of a CSV file holds the labels, and how it was chosen.

    ``index`` counts from 0, as ``label_column=`` (and ``--label-column``) do, and so does
    every message that names a column; ``name`` is its header (None without one); ``how``
    is ``"given"`` (``label_column=``), ``"named like a label"`` or ``"the last column"``.
    """

    index: int
    name: str | None
    how: str
    n_columns: int

    def __str__(self):
        where = f"{column_words(self.index)} of {self.n_columns}, {self.how}"
        return f"{self.name!r} ({where})" if self.name is not None else where


@dataclass
class CSVTable:
    """What :func:`read_csv` read: features, labels, names, and the label column."""

    X: np.ndarray  # (N, D) float64
    y: np.ndarray | None  # (N,) int64 or str
    feature_names: list | None
    label: LabelColumn | None


def load_csv(path, label_column="auto", *, header="auto", delimiter=",",
             max_bytes=DEFAULT_MAX_CSV_BYTES):
    """Read a CSV of numeric features and one label column: ``(X, y, feature_names)``.

    See :func:`read_csv`, which also says which column was taken for the labels.
    """
    table = read_csv(path, label_column, header=header, delimiter=delimiter,
                     max_bytes=max_bytes)
    return table.X, table.y, table.feature_names


def read_csv(path, label_column="auto", *, header="auto", delimiter=",",
             max_bytes=DEFAULT_MAX_CSV_BYTES):
    """Read a CSV of numeric features and one label column as a :class:`CSVTable`.

    ``label_column`` is a column index (negative counts from the end), a column
    name when the file has a header, None when every column is a feature (then
    ``y`` is None), or ``"auto"``: the column whose header is ``label``,
    ``target``, ``class`` or ``y`` (any case, in that order of preference), else
    the last column. A column chosen by "auto" must look like labels, or a
    :class:`DataError` says why not and how to name the right one: whole numbers
    or names, at most one distinct value per three rows, and whole numbers not
    scattered over a range much wider than their count (as pixel values are).
    ``header`` is True, False or "auto" (a first row with any non-numeric cell is
    a header). ``y`` is int64 when every label is a whole number and str otherwise;
    ``feature_names`` are the D column names (None without a header).
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
        label = None
    elif width < 2:
        raise DataError(f"{path}: need at least one feature column and a label column, "
                        f"found {width} column")
    elif isinstance(label_column, str) and label_column == "auto":
        label = _guess_label_column(names, width)
    else:
        index = _label_index(path, label_column, names, width)
        label = LabelColumn(index, None if names is None else names[index], "given", width)
    label_index = None if label is None else label.index
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
                col = names[c] if names else column_words(c)
                if label is None or label.how == "given":
                    raise DataError(f"{path}, line {line}, {col}: {cell.strip()!r} is not a "
                                    f"number") from None
                raise DataError(f"{path}, line {line}, {col}: {cell.strip()!r} is not a "
                                f"number; the labels were taken from {label}: if {col} holds "
                                f"them, name it with {{label_column}}",
                                label_column=_python_value(names, c)) from None
            if not math.isfinite(value):
                col = names[c] if names else column_words(c)
                raise DataError(f"{path}, line {line}, {col}: {cell.strip()!r} is not finite")
            X[r, j] = value
            j += 1
    y = None if label_index is None else _labels_array(labels)
    if label is not None and label.how != "given":
        problem = _not_like_labels(labels, y)
        if problem:
            raise _refusal(path, label, problem, records, names)
    feature_names = None if names is None else [nm for c, nm in enumerate(names)
                                                if c != label_index]
    return CSVTable(X, y, feature_names, label)


def _guess_label_column(names, width):
    if names is not None:
        lowered = [nm.strip().lower() for nm in names]
        for wanted in LABEL_NAMES:
            if wanted in lowered:
                index = lowered.index(wanted)
                return LabelColumn(index, names[index], "named like a label", width)
    return LabelColumn(width - 1, None if names is None else names[-1], "the last column",
                       width)


def _not_like_labels(cells, y):
    """Why the column of ``cells`` (parsed as ``y``) does not look like labels, or None."""
    numbers = []
    for cell in cells:
        try:
            numbers.append(float(cell))
        except ValueError:
            numbers = None
            break
    if numbers is not None:
        fractional = [c for c, v in zip(cells, numbers) if not (math.isfinite(v)
                                                                 and v == round(v))]
        if fractional:
            return (f"it holds numbers that are not whole, such as {fractional[0]!r}, and "
                    f"class labels are whole numbers or names")
    n, distinct = len(cells), np.unique(y)
    if n < MIN_ROWS_TO_JUDGE:
        return None
    if len(distinct) == 1:
        return f"all {n} rows hold the same value, {str(distinct[0])!r}"
    if len(distinct) > n / MIN_ROWS_PER_CLASS:
        return (f"it holds {len(distinct)} distinct values in {n} rows, too many for class "
                f"labels (fewer than {MIN_ROWS_PER_CLASS} rows per class)")
    if numbers is not None and len(distinct) >= 3:
        lo, hi = int(distinct.min()), int(distinct.max())
        if len(distinct) < (hi - lo + 1) / 2:
            return (f"its {len(distinct)} distinct whole numbers are scattered over {lo}..{hi}, "
                    f"as a feature's values are, not numbered as classes")
    values, counts = np.unique(y, return_counts=True)
    if counts.min() * MAX_CLASS_IMBALANCE < counts.max():  # e.g. a border pixel: mostly 0
        return (f"its values would be wildly unbalanced classes: {str(values[counts.argmax()])!r} "
                f"in {counts.max()} rows, {str(values[counts.argmin()])!r} in only "
                f"{counts.min()}, as a mostly constant feature's are")
    return None


def _python_value(names, index):
    """How to name column ``index`` to ``label_column=``."""
    return repr(names[index]) if names else str(index)


def _refusal(path, label, problem, records, names):
    """The :class:`DataError` refusing a guessed label column, with the way out."""
    msg = (f"{path}: the labels would be {label}, but that does not look like a label "
           f"column: {problem}. ")
    first = [cells[0].strip() for _, cells in records]
    if label.index != 0 and not _not_like_labels(first, _labels_array(first)):
        # the other usual place for labels
        what = column_words(0) + (f" ({names[0]!r})" if names else "")
        return DataError(msg + f"{what} does: if it holds the labels, pass {{label_column}}",
                         label_column=_python_value(names, 0))
    return DataError(msg + "Name the label column with {label_column} (an index counts from 0)",
                     label_column="NAME_OR_INDEX")


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
    _check_npy_header(path)  # NumPy's own errors would call any other file "pickled"
    try:
        return np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except ValueError as exc:
        raise DataError(f"{path}: not a valid .npy file ({exc})") from None
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot read as .npy ({exc})") from None


NPY_MAGIC = b"\x93NUMPY"


def _check_npy_header(path):
    """Refuse, naming what the file is instead, anything that is not a ``.npy`` file of
    plain values: another format (text, a safetensors model, a pickle, an archive) or an
    array of Python objects (which only unpickling could read)."""
    from numpy.lib import format as npy_format

    try:
        with open(path, "rb") as f:
            head = f.read(64)
            if not head.startswith(NPY_MAGIC):
                raise DataError(f"{path}: not a .npy file (NumPy's files begin with "
                                f"\\x93NUMPY); {_looks_like(head)}")
            f.seek(0)
            version = npy_format.read_magic(f)
            if version == (1, 0):
                _, _, dtype = npy_format.read_array_header_1_0(f)
            elif version == (2, 0):
                _, _, dtype = npy_format.read_array_header_2_0(f)
            else:  # a newer version: NumPy itself says whether it reads it
                return
    except DataError:
        raise
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{path}: a damaged .npy header ({exc})") from None
    if dtype.hasobject:
        raise DataError(f"{path}: holds pickled Python objects (dtype {dtype}), which "
                        f"handgrad never loads; save plain numeric arrays instead")


def _looks_like(head):
    """What the first bytes of a file that is not a ``.npy`` suggest it is."""
    if head.startswith(b"PK\x03\x04"):
        return "it is a zip archive (an .npz file? load it as .npz)"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "it is a Python pickle, which handgrad never loads"
    if len(head) > 9 and head[8:10] == b'{"':
        return "it looks like a safetensors file (a model file?)"
    if head.startswith(b"\x89PNG") or head.startswith(b"\xff\xd8\xff"):
        return "it is an image"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return "its content is of another format"
    if text and all(c.isprintable() or c in "\r\n\t" for c in text):
        return "it holds text (a CSV file? give it a .csv name)"
    return "its content is of another format"


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
