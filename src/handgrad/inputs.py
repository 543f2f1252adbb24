"""Users' files of examples for a model: what ``handgrad predict`` and ``handgrad explain``
(and :func:`handgrad.tracing.explain`) read.

An input file is an image of a digit (prepared as MNIST's were, :mod:`handgrad.images`),
or a ``.npy``, CSV or IDX file of one example or several. Its format is told by the file
name's suffix, else by its first bytes; anything else is refused with the list of formats.

Shape key: N examples of a file, D inputs of the model.
"""

from __future__ import annotations

from pathlib import Path

from .datasets.errors import DataError

SUPPORTED = ("PNG/JPEG/BMP/GIF/TIFF/WebP images, .npy arrays, .csv tables, and IDX files "
             "(MNIST's format, plain or gzip-compressed)")
FORMATS = ("image", "npy", "csv", "idx")
# the first bytes of each image format PIL reads for us
IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM",
               b"II*\x00", b"MM\x00*")
IDX_SUFFIXES = (".idx", ".ubyte")  # MNIST's own names end -idx3-ubyte[.gz]


def input_format(path, reader="handgrad"):
    """``"image"``, ``"npy"``, ``"csv"`` or ``"idx"``: by the file name's suffix where it
    is one of those formats', else by the file's first bytes; :class:`DataError` listing
    the supported formats for anything else (``reader`` names who reads them: the
    command, in its messages)."""
    from .images import IMAGE_SUFFIXES

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix in (".npy", ".csv"):
        return suffix[1:]
    if suffix in IDX_SUFFIXES or path.name.lower().endswith(("-ubyte", "-ubyte.gz")):
        return "idx"
    try:
        with open(path, "rb") as f:
            head = f.read(16)
            if head[:2] == b"\x1f\x8b":  # gzip: what is inside?
                import gzip

                f.seek(0)
                try:
                    head = gzip.GzipFile(fileobj=f).read(4)
                except (OSError, EOFError):
                    head = b""
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder; {reader} reads {SUPPORTED}") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot open: {exc.strerror or exc}") from None
    from .datasets.idx import MAX_DIMS, TYPE_CODES

    if len(head) >= 4 and head[:2] == b"\x00\x00" and head[2] in TYPE_CODES \
            and 1 <= head[3] <= MAX_DIMS:
        return "idx"
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head.startswith(IMAGE_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        return "image"
    what = f"a {suffix} file" if suffix else "a file without a suffix"
    raise DataError(f"{path}: {what} that is none of the formats {reader} reads: {SUPPORTED}")


def example_shape(model):
    """The shape of one raw example of ``model``: its preprocessing's input shape, e.g.
    (28, 28), else (D,)."""
    prep = model.preprocessor
    return tuple(prep.input_shape) if prep is not None else (model.n_inputs,)


def read_examples(path, model, kind=None, *, mmap=False, reader="handgrad"):
    """``(names, raw examples (N, ...))`` of one input file for ``model``.

    ``kind`` is the file's format (:func:`input_format`, found when None). An image is
    one example, prepared as MNIST's digits were and scaled as the model's training
    data (÷ 16 digits: 0–16); an array or table holds one example (the model's example
    shape, or a flat row of its D inputs) or several (N of either). ``mmap`` maps a
    ``.npy`` file instead of reading it, for inputs larger than memory; ``names`` is
    then made on demand (``path[i]`` for row i), never a list of a million strings.
    """
    from .datasets import load_csv, load_idx, load_npy
    from .images import load_digit_image

    path = Path(path)
    if kind is None:
        kind = input_format(path, reader)
    shape = example_shape(model)
    if kind == "image":
        prep = model.preprocessor
        max_value = prep.scale if (prep is not None and prep.scaling == "divide"
                                   and prep.scale) else 255.0
        img = load_digit_image(path, shape if len(shape) == 2 else (28, 28), max_value)
        return [str(path)], img[None]  # (1, height, width)
    if kind == "npy":
        arr = load_npy(path, mmap=mmap)
    elif kind == "csv":
        arr, _, _ = load_csv(path, label_column=None)  # (N, columns)
    elif kind == "idx":
        arr = load_idx(path)
    else:
        raise ValueError(f"kind must be one of {FORMATS}, got {kind!r}")
    if arr.shape == shape or (arr.ndim == 1 and arr.shape[0] == model.n_inputs):
        arr = arr[None]  # one example
    elif arr.shape[1:] == shape or (arr.ndim == 2 and arr.shape[1] == model.n_inputs):
        pass  # N examples
    else:
        raise DataError(f"{path}: holds an array of shape {arr.shape}; the model takes "
                        f"examples of shape {shape} (or rows of {model.n_inputs} values), "
                        f"one or several")
    return IndexNames(str(path), len(arr)), arr


class IndexNames:
    """``path[i]`` for each row, made on demand (no list of a million strings)."""

    def __init__(self, path, n):
        self.path, self.n = path, n

    def __len__(self):
        return self.n

    def __getitem__(self, item):
        if isinstance(item, int):
            return f"{self.path}[{range(self.n)[item]}]"
        return [f"{self.path}[{i}]" for i in range(self.n)[item]]
