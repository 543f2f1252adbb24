"""The IDX format of the MNIST family: a hardened reader and a writer.

An IDX file is two zero bytes, a type code, the number of dimensions ``n``,
then ``n`` big-endian uint32 sizes and the big-endian data in C order. Files
may be gzip-compressed; compression is recognised by content, not by name.

The reader trusts nothing: the header is validated and the declared size is
checked against a limit before anything is allocated; the payload is read
(and, for gzip, inflated) only up to the declared size plus one byte, so a
file with trailing data, a truncated file and a gzip bomb are all rejected
without inflating more than the declared payload.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from .._atomic import atomic_write
from .errors import DataError

# type code -> big-endian dtype, as in the format's definition
TYPE_CODES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
CODE_OF_KIND = {(dt.kind, dt.itemsize): code for code, dt in TYPE_CODES.items()}
GZIP_MAGIC = b"\x1f\x8b"
MAX_DIMS = 16
DEFAULT_MAX_BYTES = 4 << 30  # 4 GiB: the largest payload load_idx allocates by default
READ_CHUNK = 1 << 22


def load_idx(path, max_bytes=DEFAULT_MAX_BYTES, rows=None):
    """Read an IDX file (plain or gzip) into an array of its header's shape.

    Returns native-byte-order uint8, int8, int16, int32, float32 or float64.
    ``rows=(start, stop)`` reads only those entries of the first dimension: a plain
    file seeks straight to them, a gzip file is inflated only up to ``stop`` (so a
    rank of a distributed job reads its shard, not the whole file).
    Raises :class:`DataError` naming the file for anything malformed.
    """
    return _open(path, lambda stream, path, compressed, size: _read_idx(
        stream, path, compressed, max_bytes, size, rows))


def _open(path, read):
    """Open ``path`` (plain or gzip) and call ``read(stream, path, compressed, file size)``,
    turning every failure into a :class:`DataError` naming the file."""
    path = Path(path)
    try:
        raw = open(path, "rb")
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected an IDX file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot open: {exc.strerror or exc}") from None
    with raw:
        compressed = raw.read(2) == GZIP_MAGIC
        raw.seek(0)
        stream = gzip.GzipFile(fileobj=raw, mode="rb") if compressed else raw
        try:
            return read(stream, path, compressed,
                        None if compressed else os.fstat(raw.fileno()).st_size)
        except (gzip.BadGzipFile, zlib.error, EOFError) as exc:
            raise DataError(f"{path}: corrupt gzip data ({exc})") from None
        except OSError as exc:
            raise DataError(f"{path}: cannot read: {exc}") from None


def idx_shape(path, max_bytes=DEFAULT_MAX_BYTES):
    """The shape an IDX file's header declares (checked as :func:`load_idx` checks it),
    reading no data."""
    return _open(path, lambda stream, path, compressed, size: _read_header(
        stream, path, compressed, max_bytes, size)[0])


def _read_header(stream, path, compressed, max_bytes, file_size):
    """Parse and check the header: ``(shape, dtype, header_size, n_bytes)``."""
    header = stream.read(4)
    if len(header) < 4:
        raise DataError(f"{path}: too short to be an IDX file ({len(header)} bytes)")
    if header[:2] != b"\x00\x00":
        hint = " (is it gzip-compressed twice, or not an IDX file?)" if not compressed else ""
        raise DataError(f"{path}: bad magic number {header.hex()}: an IDX file starts "
                        f"with two zero bytes{hint}")
    code, ndim = header[2], header[3]
    if code not in TYPE_CODES:
        raise DataError(f"{path}: unknown IDX type code 0x{code:02x}; valid codes are "
                        + ", ".join(f"0x{c:02x}" for c in TYPE_CODES))
    if not 1 <= ndim <= MAX_DIMS:
        raise DataError(f"{path}: {ndim} dimensions declared; handgrad reads 1 to {MAX_DIMS}")
    dims_raw = stream.read(4 * ndim)
    if len(dims_raw) < 4 * ndim:
        raise DataError(f"{path}: truncated header: {ndim} dimensions declared but the "
                        f"file ends after {len(dims_raw) // 4}")
    shape = struct.unpack(f">{ndim}I", dims_raw)
    dtype = TYPE_CODES[code]
    n_bytes = math.prod(shape) * dtype.itemsize
    if n_bytes > max_bytes:
        raise DataError(f"{path}: header declares shape {shape} of {dtype.name} = "
                        f"{n_bytes:,} bytes, over the limit of {max_bytes:,} "
                        f"(pass max_bytes to load larger files)")
    header_size = 4 + 4 * ndim
    if file_size is not None and file_size != header_size + n_bytes:
        what = "truncated" if file_size < header_size + n_bytes else "has trailing bytes"
        raise DataError(f"{path}: {what}: shape {shape} needs {header_size + n_bytes:,} bytes, "
                        f"the file has {file_size:,}")
    return shape, dtype, header_size, n_bytes


def _read_idx(stream, path, compressed, max_bytes, file_size, rows=None):
    shape, dtype, header_size, n_bytes = _read_header(stream, path, compressed, max_bytes,
                                                      file_size)
    if rows is not None:
        return _read_rows(stream, path, shape, dtype, rows, header_size, compressed)
    out = np.empty(shape, dtype)  # bounded by max_bytes above
    view = memoryview(out.reshape(-1).view(np.uint8))
    got = 0
    while got < n_bytes:
        chunk = stream.readinto(view[got:got + READ_CHUNK])
        if not chunk:
            raise DataError(f"{path}: truncated: shape {shape} needs {n_bytes:,} data bytes, "
                            f"only {got:,} present")
        got += chunk
    if stream.read(1):
        raise DataError(f"{path}: has trailing bytes after the {n_bytes:,} bytes of "
                        f"data that its header declares")
    return out.astype(dtype.newbyteorder("="), copy=False)


def _read_rows(stream, path, shape, dtype, rows, header_size, compressed):
    start, stop = rows
    if not 0 <= start <= stop <= shape[0]:
        raise DataError(f"{path}: rows {start}:{stop} out of range for {shape[0]} entries")
    row_bytes = math.prod(shape[1:]) * dtype.itemsize
    if compressed:
        skip = start * row_bytes
        while skip:  # inflate and discard the rows before ours, a chunk at a time
            got = len(stream.read(min(skip, READ_CHUNK)))
            if not got:
                raise DataError(f"{path}: truncated before row {start}")
            skip -= got
    else:
        stream.seek(header_size + start * row_bytes)
    n_bytes = (stop - start) * row_bytes
    data = stream.read(n_bytes)
    if len(data) != n_bytes:
        raise DataError(f"{path}: truncated: rows {start}:{stop} need {n_bytes:,} bytes, "
                        f"{len(data):,} present")
    out = np.frombuffer(data, dtype).reshape((stop - start, *shape[1:]))
    return out.astype(dtype.newbyteorder("="))


def save_idx(path, array):
    """Write ``array`` as an IDX file, gzip-compressed if ``path`` ends in ``.gz``.

    The write is atomic: a temporary file in the same directory, then a rename.
    """
    a = np.asarray(array)
    code = CODE_OF_KIND.get((a.dtype.kind, a.dtype.itemsize))
    if code is None or a.dtype.kind not in "uif":
        raise ValueError(f"IDX has no type for dtype {a.dtype}; use uint8, int8, int16, "
                         f"int32, float32 or float64")
    if not 1 <= a.ndim <= MAX_DIMS:
        raise ValueError(f"IDX holds 1 to {MAX_DIMS} dimensions, got {a.ndim}")
    if any(d >= 1 << 32 for d in a.shape):
        raise ValueError(f"IDX dimensions must be below 2^32, got shape {a.shape}")
    payload = struct.pack(f">BBBB{a.ndim}I", 0, 0, code, a.ndim, *a.shape)
    payload += np.ascontiguousarray(a, dtype=TYPE_CODES[code]).tobytes()
    path = Path(path)
    if path.suffix == ".gz":
        buf = io.BytesIO()
        with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz:
            gz.write(payload)
        payload = buf.getvalue()
    with atomic_write(path) as f:
        f.write(payload)
    return path
