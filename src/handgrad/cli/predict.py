"""``handgrad predict MODEL INPUT...``: classify images or IDX/CSV/NPY files of examples."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from ..datasets import DataError
from ..model import PREDICT_CHUNK
from ..serialization import load
from ._common import ExitCode, add_subparser, positive_int


def add_parser(subparsers):
    p = add_subparser(subparsers, "predict", help="classify images or IDX/CSV/NPY files")
    p.add_argument("model", type=Path, help="a model file written by handgrad train --out")
    p.add_argument("inputs", nargs="+", type=Path, metavar="INPUT",
                   help="PNG/JPEG images, or IDX, CSV or .npy files of examples (recognised "
                        "by suffix, else by content; other files are refused)")
    p.add_argument("--top", type=positive_int, default=1, help="show the top K classes")
    p.add_argument("--json", action="store_true", help="print the predictions as JSON")
    return p


def run(args):
    """Prints as it goes: memory stays bounded however many rows the inputs hold."""
    model = load(args.model)
    kinds = [input_format(path) for path in args.inputs]  # refuse a bad one before printing
    classes = model.classes or [str(i) for i in range(model.n_classes)]
    first = True
    if args.json:
        sys.stdout.write("[")
    for path, kind in zip(args.inputs, kinds):
        names, raw = _read_inputs(path, kind, model)
        for start in range(0, len(raw), PREDICT_CHUNK):
            P = model.predict_proba(model.prepare(raw[start:start + PREDICT_CHUNK]))  # (B, M)
            chunk_names = names[start:start + PREDICT_CHUNK]
            width = max(len(n) for n in chunk_names)
            for name, p in zip(chunk_names, P):
                top = np.argsort(-p)[:args.top]
                if args.json:
                    item = {"input": name, "class": classes[top[0]],
                            "probability": float(p[top[0]]),
                            "top": [{"class": classes[k], "probability": float(p[k])}
                                    for k in top]}
                    sys.stdout.write(("\n " if first else ",\n ") + json.dumps(item))
                else:
                    extra = "".join(f"  {classes[k]} {p[k]:.4f}" for k in top[1:])
                    print(f"{name:<{width}}  {classes[top[0]]}  {p[top[0]]:.4f}{extra}")
                first = False
    if args.json:
        sys.stdout.write("\n]\n")
    return ExitCode.OK


SUPPORTED = ("PNG/JPEG/BMP/GIF/TIFF/WebP images, .npy arrays, .csv tables, and IDX files "
             "(MNIST's format, plain or gzip-compressed)")
# the first bytes of each image format PIL reads for us
IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM",
               b"II*\x00", b"MM\x00*")
IDX_SUFFIXES = (".idx", ".ubyte")  # MNIST's own names end -idx3-ubyte[.gz]


def input_format(path):
    """``"image"``, ``"npy"``, ``"csv"`` or ``"idx"``: by the file name's suffix where it
    is one of those formats', else by the file's first bytes; :class:`DataError` listing
    the supported formats for anything else."""
    from ..images import IMAGE_SUFFIXES

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
        raise DataError(f"{path}: is a folder; predict reads {SUPPORTED}") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot open: {exc.strerror or exc}") from None
    from ..datasets.idx import MAX_DIMS, TYPE_CODES

    if len(head) >= 4 and head[:2] == b"\x00\x00" and head[2] in TYPE_CODES \
            and 1 <= head[3] <= MAX_DIMS:
        return "idx"
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head.startswith(IMAGE_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        return "image"
    what = f"a {suffix} file" if suffix else "a file without a suffix"
    raise DataError(f"{path}: {what} that is none of the formats predict reads: {SUPPORTED}")


def _read_inputs(path, kind, model):
    """``(names, raw examples)`` from one input file of format ``kind``
    (:func:`input_format`), shaped as the model expects."""
    from ..datasets import load_csv, load_idx, load_npy
    from ..images import load_digit_image

    prep = model.preprocessor
    shape = prep.input_shape if prep is not None else (model.n_inputs,)
    if kind == "image":
        max_value = prep.scale if (prep is not None and prep.scaling == "divide") else 255.0
        img = load_digit_image(path, shape if len(shape) == 2 else (28, 28), max_value)
        return [str(path)], img[None]
    if kind == "npy":
        arr = load_npy(path, mmap=True)  # read chunk by chunk, however large
    elif kind == "csv":
        arr, _, _ = load_csv(path, label_column=None)
    else:
        arr = load_idx(path)
    if arr.shape[1:] == tuple(shape) or (arr.ndim == 2 and arr.shape[1] == model.n_inputs):
        pass
    elif arr.shape == tuple(shape):
        arr = arr[None]
    else:
        raise DataError(f"{path}: examples of shape {arr.shape[1:]}, the model takes "
                        f"{tuple(shape)} (or rows of {model.n_inputs} values)")
    return _IndexNames(str(path), len(arr)), arr


class _IndexNames:
    """``path[i]`` for each row, made on demand (no list of a million strings)."""

    def __init__(self, path, n):
        self.path, self.n = path, n

    def __len__(self):
        return self.n

    def __getitem__(self, item):
        return [f"{self.path}[{i}]" for i in range(self.n)[item]]
