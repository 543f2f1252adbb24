"""Atomic file writes (a temporary file in the same directory, fsync, rename), the
clean-up of temporaries a killed write left, and writability probes.

A crash or an error mid-write never leaves a half-written file at the target
path, and whatever was there before stays intact until the new file is complete.

The file that arrives at the target has the permissions any file the user creates
gets: ``0666 & ~umask`` for a new file (``tempfile.mkstemp`` would give ``0600``,
and the temporary file's mode survives the rename), and the previous file's mode
when an existing file is replaced, as writing it in place would leave it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path

_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) \
    | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_ATTEMPTS = 100


def create_temporary(path, suffix=".tmp"):
    """Create ``.<name>.<random><suffix>`` next to ``path``: ``(fd, temporary path)``.

    Opened with mode ``0o666``, so the kernel applies the umask (and any default
    ACL) exactly as for a file the user creates; if ``path`` already exists, the
    temporary file takes its permission bits instead. ``O_EXCL`` and a random name
    make it safe against races and symlinks as ``mkstemp`` is.
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    for _ in range(_ATTEMPTS):
        tmp = directory / f".{path.name}.{secrets.token_hex(4)}{suffix}"
        try:
            fd = os.open(tmp, _CREATE_FLAGS, 0o666)
        except FileExistsError:
            continue
        try:
            existing = os.stat(path)
        except OSError:
            pass  # a new file: 0666 & ~umask, already applied by the kernel
        else:
            with contextlib.suppress(OSError):  # a file system without modes
                os.fchmod(fd, stat.S_IMODE(existing.st_mode))
        return fd, str(tmp)
    raise FileExistsError(f"cannot create a temporary file next to {path}: "
                          f"{_ATTEMPTS} random names were all taken")


@contextlib.contextmanager
def atomic_write(path, mode="wb"):
    """Yield a file object; on success its content replaces ``path`` atomically."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp = create_temporary(path)
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
        fd, probe = create_temporary(directory / "handgrad-write-test")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise NotWritableError(path, f"{path}: folder {directory} is not writable "
                                     f"({exc.strerror or exc})") from None
