"""Per-visitor copies of a model for the page's "learn from this": bounded and expiring.

A visitor (a browser, known by a random cookie) who presses "learn from this"
gets a private copy of the served model, and each press is one SGD step on that
copy. The served model and its file are never changed. The copies are held in
memory under three bounds: a number of copies, a number of bytes, and an idle
time after which a copy expires. When a new copy would break a bound, the least
recently used copies go first; their visitors start again from the served model.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass, field


@dataclass
class VisitorCopy:
    model: object  # the visitor's own MLP
    nbytes: int
    steps: int = 0
    last_used: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)  # one step or look at a time


class VisitorCopies:
    """An LRU of ``(visitor, model name) → VisitorCopy`` with count, byte and time bounds."""

    def __init__(self, max_copies=64, max_bytes=512 << 20, ttl=900.0, clock=time.monotonic):
        if not (isinstance(max_copies, int) and max_copies >= 0):
            raise ValueError(f"max_copies must be a non-negative integer, got {max_copies!r}")
        if not (isinstance(max_bytes, int) and max_bytes >= 0):
            raise ValueError(f"max_bytes must be a non-negative integer, got {max_bytes!r}")
        if not (isinstance(ttl, (int, float)) and ttl > 0):
            raise ValueError(f"ttl must be a positive number of seconds, got {ttl!r}")
        self.max_copies = max_copies
        self.max_bytes = max_bytes
        self.ttl = float(ttl)
        self.clock = clock
        self._copies = collections.OrderedDict()  # least recently used first
        self._bytes = 0
        self._lock = threading.Lock()
        self.evicted = 0  # copies dropped to make room
        self.expired = 0  # copies dropped for idleness

    def __len__(self):
        return len(self._copies)

    @property
    def nbytes(self):
        return self._bytes

    def _drop(self, key):
        entry = self._copies.pop(key)
        self._bytes -= entry.nbytes

    def sweep(self):
        """Drop the copies idle for longer than ``ttl``; returns how many went."""
        with self._lock:
            return self._sweep(self.clock())

    def _sweep(self, now):
        gone = 0
        while self._copies:
            key, entry = next(iter(self._copies.items()))
            if now - entry.last_used <= self.ttl:
                break
            self._drop(key)
            gone += 1
        self.expired += gone
        return gone

    def get(self, visitor, name):
        """The visitor's copy of model ``name``, or None (never had one, or it expired)."""
        with self._lock:
            now = self.clock()
            self._sweep(now)
            entry = self._copies.get((visitor, name))
            if entry is not None:
                entry.last_used = now
                self._copies.move_to_end((visitor, name))
            return entry

    def get_or_create(self, visitor, name, make, nbytes):
        """The visitor's copy, made by ``make()`` when there is none.

        Returns None when a copy of ``nbytes`` can never fit the bounds.
        """
        with self._lock:
            now = self.clock()
            self._sweep(now)
            key = (visitor, name)
            entry = self._copies.get(key)
            if entry is not None:
                entry.last_used = now
                self._copies.move_to_end(key)
                return entry
            if self.max_copies == 0 or nbytes > self.max_bytes:
                return None
            while self._copies and (len(self._copies) >= self.max_copies
                                    or self._bytes + nbytes > self.max_bytes):
                self._drop(next(iter(self._copies)))
                self.evicted += 1
            entry = VisitorCopy(make(), nbytes, last_used=now)
            self._copies[key] = entry
            self._bytes += nbytes
            return entry

    def discard(self, visitor, name):
        """Forget the visitor's copy of ``name`` (the page's "reset"); True if there was one."""
        with self._lock:
            if (visitor, name) in self._copies:
                self._drop((visitor, name))
                return True
            return False
