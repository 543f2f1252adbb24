"""Atomic file writes (a temporary file in the same directory, fsync, rename), the
clean-up of temporaries a killed write left, and writability probes.

A crash or an error mid-write never leaves a half-written file at the target
path, and whatever was there before stays intact until the new file is complete.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_write(path, mode="wb"):
    """Yield a file object; on success its content replaces ``path`` atomically."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)


def _fsync_dir(directory):
    """Make the rename itself durable (where the platform allows it)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def remove_stale_temporaries(path):
    """Delete temporary files that an earlier, killed write to ``path`` left behind."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    removed = []
    for tmp in directory.glob(f".{path.name}.*.tmp"):
        with contextlib.suppress(OSError):
            tmp.unlink()
            removed.append(tmp)
    return removed


class NotWritableError(OSError):
    """An output file or folder cannot be written; ``path`` names it."""

    def __init__(self, path, message):
        super().__init__(message)
        self.path = path

    def __str__(self):
        return self.args[0]


def check_writable(path, what="file", *, create_folder=False):
    """Fail before a long computation, not after it, when an output cannot be written.

    ``what`` is ``"file"`` (``path`` is a file to write: its folder must exist, or be
    created with ``create_folder``) or ``"dir"`` (``path`` is a folder to write into,
    created as needed). Probes by creating and removing a file, which also catches
    read-only file systems and what permission bits would not tell root. Raises
    :class:`NotWritableError` saying what is wrong.
    """
    path = Path(path)
    directory = path if what == "dir" else (path.parent if str(path.parent) else Path("."))
    if what == "dir" or create_folder:
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise NotWritableError(directory, f"{directory}: cannot create folder: "
                                              f"{exc.strerror or exc}") from None
    if not directory.is_dir():
        raise NotWritableError(path, f"{path}: folder {directory} does not exist")
    if what == "file" and path.is_dir():
        raise NotWritableError(path, f"{path}: is a folder; give a file name such as "
                                     f"model.safetensors")
    try:
        fd, probe = tempfile.mkstemp(prefix=".handgrad-write-test.", dir=directory)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise NotWritableError(path, f"{path}: folder {directory} is not writable "
                                     f"({exc.strerror or exc})") from None
