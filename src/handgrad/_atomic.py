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


class OutputPathError(NotWritableError):
    """The output path itself is wrong, whatever the permissions: a regular file where a
    folder is needed (``notes.txt/model.safetensors``) or the reverse, a device, or a
    folder on a virtual file system (``/proc``, ``/sys``) that holds no ordinary files."""


class OverwriteRefusedError(OutputPathError, FileExistsError):
    """The output path holds a file that the write would destroy and that is not of the
    kind being written (a data set where a model is to go, a PNG where an ONNX file is).

    ``path`` names it, ``what`` says what it is; ``option`` is the caller's way to
    overwrite it on purpose (``overwrite=True`` in Python): :meth:`format` words the
    message with another (the command line's ``--force``), or without any where
    overwriting is never allowed (``option`` None: the training data itself).
    """

    def __init__(self, path, what, option="overwrite=True"):
        self.path, self.what, self.option = path, what, option
        super().__init__(path, self.format(option))

    def format(self, option=None):
        """The message, naming ``option`` (default: this error's own) as the way to
        overwrite on purpose."""
        option = self.option if option is None else option
        fix = "give another path" if self.option is None else \
            f"give another path, or pass {option} to replace it"
        return f"{self.path}: refusing to overwrite {self.what}; {fix}"


def check_overwrite(path, kind, is_kind, *, overwrite=False):
    """Raise :class:`OverwriteRefusedError` if ``path`` holds a file that ``is_kind(path)``
    says is not a ``kind`` file (a model file's writer passes the handgrad model check),
    unless ``overwrite``. Nothing there, or a file of that kind: no error (replacing a
    previous model of the same path is how a model is retrained)."""
    path = Path(path)
    if overwrite or not path.is_file():
        return
    if not is_kind(path):
        raise OverwriteRefusedError(path, f"an existing file that is not {kind}")


# File systems of the kernel's own objects: they exist, but files cannot be made in them.
VIRTUAL_FILE_SYSTEMS = frozenset({
    "proc", "sysfs", "cgroup", "cgroup2", "debugfs", "tracefs", "securityfs", "configfs",
    "pstore", "bpf", "efivarfs", "fusectl", "binfmt_misc", "mqueue", "devpts", "autofs",
})


def check_writable(path, what="file", *, create_folder=False):
    """Fail before a long computation, not after it, when an output cannot be written.

    ``what`` is ``"file"`` (``path`` is a file to write: its folder must exist, or be
    created with ``create_folder``) or ``"dir"`` (``path`` is a folder to write into,
    created as needed). Probes by creating and removing a file, which also catches
    read-only file systems and what permission bits would not tell root. Raises
    :class:`OutputPathError` when the path cannot work whatever the permissions (a file
    in the way of a folder or the reverse, a device, a virtual file system such as
    ``/proc``), else :class:`NotWritableError` saying what is wrong.
    """
    path = Path(path)
    directory = path if what == "dir" else (path.parent if str(path.parent) else Path("."))
    _check_path_shape(path, what)
    if what == "dir" or create_folder:
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            _check_virtual(path, directory)
            raise NotWritableError(directory, f"{directory}: cannot create folder: "
                                              f"{exc.strerror or exc}") from None
    if not directory.is_dir():
        _check_virtual(path, directory)
        # a folder that is not there is a wrong path (the command line's usage error), not
        # a permission problem
        raise OutputPathError(path, f"{path}: folder {directory} does not exist; create it "
                                    f"first or give a path in an existing folder")
    try:
        fd, probe = create_temporary(directory / "handgrad-write-test")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        _check_virtual(path, directory)
        raise NotWritableError(path, f"{path}: folder {directory} is not writable "
                                     f"({exc.strerror or exc})") from None


def _check_path_shape(path, what):
    """Raise :class:`OutputPathError` if a regular file stands where a folder is needed
    (``path`` itself for ``"dir"``, any folder above it), ``path`` is a folder where a file
    is needed, or something other than a regular file (a device, a pipe)."""
    if what == "file":
        if path.is_dir():
            raise OutputPathError(path, f"{path}: is a folder; give a file name such as "
                                        f"model.safetensors")
        if path.exists() and not path.is_file():
            raise OutputPathError(path, f"{path}: is not a regular file (a device, pipe or "
                                        f"socket); give the name of a file to write")
    elif path.exists() and not path.is_dir():
        raise OutputPathError(path, f"{path}: is a file, not a folder; give a folder to "
                                    f"write into")
    for folder in (path.parent, *path.parent.parents):
        if folder.exists():
            if not folder.is_dir():
                raise OutputPathError(path, f"{path}: {folder} is a file, not a folder, so "
                                            f"nothing can be written under it")
            return


def _check_virtual(path, directory):
    """Raise :class:`OutputPathError` if ``directory`` (or the nearest folder above it that
    exists) is on a virtual file system such as ``/proc``."""
    existing = next((d for d in (directory, *directory.parents) if d.exists()), None)
    kind = None if existing is None else _file_system_type(existing)
    if kind in VIRTUAL_FILE_SYSTEMS:
        raise OutputPathError(path, f"{path}: {existing} is on the kernel's virtual {kind} "
                                    f"file system, which holds no ordinary files; choose "
                                    f"another folder")


def _file_system_type(folder):
    """The type of the file system holding ``folder`` (``"proc"``, ``"ext4"``...), from
    ``/proc/self/mounts`` (Linux); None where that cannot be read."""
    try:
        with open("/proc/self/mounts", encoding="utf-8", errors="replace") as f:
            mounts = [line.split()[1:3] for line in f if len(line.split()) >= 3]
    except OSError:
        return None
    real = os.path.realpath(folder)
    best, kind = "", None
    for point, fstype in mounts:
        point = point.replace("\\040", " ")
        if (real == point or real.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
            best, kind = point, fstype
    return kind
