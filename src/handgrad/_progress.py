"""A live progress bar on stderr: tqdm when installed, a small built-in one otherwise."""

from __future__ import annotations

import sys
import time


class _PlainBar:
    """Redraws one line on a terminal; silent when stderr is not a terminal."""

    def __init__(self, total, desc, unit, stream):
        self.total, self.desc, self.unit, self.stream = total, desc, unit, stream
        self.n = 0
        self.postfix = ""
        self.enabled = stream.isatty()
        self._last = 0.0

    def update(self, n=1):
        self.n += n
        now = time.monotonic()
        if self.enabled and (now - self._last > 0.1 or self.n >= (self.total or 0)):
            self._last = now
            frac = self.n / self.total if self.total else 0.0
            bar = "#" * int(30 * frac)
            self.stream.write(f"\r{self.desc} [{bar:<30}] {self.n}/{self.total or '?'} "
                              f"{self.unit} {self.postfix}")
            self.stream.flush()

    def set_postfix_str(self, text):
        self.postfix = text

    def close(self):
        if self.enabled:
            self.stream.write("\r" + " " * 79 + "\r")
            self.stream.flush()


def progress_bar(total, desc="", unit="it", enabled=True, stream=None):
    """A bar with ``update(n)``, ``set_postfix_str(s)`` and ``close()``; transient."""
    stream = sys.stderr if stream is None else stream
    if not enabled:
        return _PlainBar(total, desc, unit, _Null())
    try:
        from tqdm import tqdm
    except ImportError:
        return _PlainBar(total, desc, unit, stream)
    return tqdm(total=total, desc=desc, unit=unit, leave=False, file=stream,
                dynamic_ncols=True, disable=not stream.isatty(),
                unit_scale=unit == "B", unit_divisor=1024)


class _Null:
    def isatty(self):
        return False

    def write(self, _):
        pass

    def flush(self):
        pass
