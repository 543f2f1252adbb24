"""Downloads with mirrors, checksums and atomic writes.

A file is streamed into a temporary file next to its destination, verified,
and only then renamed into place: an interrupted or failed download leaves
nothing half-written, and the cache only ever holds complete, verified files.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .._atomic import create_temporary
from .._progress import progress_bar
from .errors import DataError

CHUNK = 1 << 16
USER_AGENT = "handgrad (https://pypi.org/project/handgrad/)"


@dataclass(frozen=True)
class Checksums:
    """Accepted digests of a file: of its bytes as served, or of its gzip payload.

    The MNIST mirrors publish the MD5 of the ``.gz`` files; a recompressed copy
    differs there but has the same decompressed content, which ``raw_sha256``
    identifies. A file passes if any digest given here matches.
    """

    md5: str | None = None
    sha256: str | None = None
    raw_sha256: str | None = None

    def matches(self, path):
        if self.md5 and _digest(path, "md5") == self.md5:
            return True
        if self.sha256 and _digest(path, "sha256") == self.sha256:
            return True
        if self.raw_sha256:
            try:
                return _digest(path, "sha256", decompress=True) == self.raw_sha256
            except (OSError, EOFError):
                return False
        return False

    def describe(self):
        parts = [f"{k} {v}" for k, v in (("md5", self.md5), ("sha256", self.sha256),
                                         ("sha256 of the decompressed data", self.raw_sha256))
                 if v]
        return " or ".join(parts)


def _digest(path, algorithm, decompress=False):
    h = hashlib.new(algorithm)
    with open(path, "rb") as raw:
        stream = gzip.GzipFile(fileobj=raw) if decompress else raw
        while chunk := stream.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


class DownloadError(DataError):
    """No mirror served the file; ``failures`` holds ``(url, reason)`` for each one tried."""

    def __init__(self, dest, failures):
        self.dest, self.failures = Path(dest), list(failures)
        super().__init__(f"could not download {self.dest.name}:\n"
                         + "\n".join(f"  {url}: {reason}" for url, reason in self.failures))


def download(urls, dest, checksums, *, timeout=30.0, progress=True):
    """Fetch the first of ``urls`` that serves a file matching ``checksums`` into ``dest``.

    Returns ``dest``. Raises :class:`DownloadError` listing every mirror's failure.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    failures = []
    for url in urls:
        try:
            _fetch_verified(url, dest, checksums, timeout, progress)
            return dest
        except _MirrorFailed as exc:
            failures.append((url, str(exc)))
    raise DownloadError(dest, failures)


class _MirrorFailed(Exception):
    pass


def _fetch_verified(url, dest, checksums, timeout, progress):
    fd, tmp = create_temporary(dest, suffix=".part")  # the mode a file the user creates gets
    try:
        with os.fdopen(fd, "wb") as out:
            _stream(url, out, timeout, progress, dest.name)
            out.flush()
            os.fsync(out.fileno())
        if not checksums.matches(tmp):
            raise _MirrorFailed(f"checksum mismatch (expected {checksums.describe()})")
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _stream(url, out, timeout, progress, name):
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        raise _MirrorFailed(f"HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise _MirrorFailed(f"cannot connect ({reason})") from None
    with response:
        length = response.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        got = 0
        bar = progress_bar(expected, desc=f"downloading {name}", unit="B", enabled=progress)
        try:
            while True:
                try:
                    chunk = response.read(CHUNK)
                except (OSError, ValueError) as exc:  # includes http.client.IncompleteRead
                    raise _MirrorFailed(f"connection lost after {got:,} bytes ({exc!r})") from None
                if not chunk:
                    break
                out.write(chunk)
                got += len(chunk)
                bar.update(len(chunk))
        finally:
            bar.close()
    if expected is not None and got != expected:
        raise _MirrorFailed(f"connection lost after {got:,} of {expected:,} bytes")
