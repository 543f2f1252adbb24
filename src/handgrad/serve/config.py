"""The batching and safety settings of a server (no web framework needed to read them)."""

from __future__ import annotations

from dataclasses import dataclass

from .._errors import ParameterError

MAX_LR = 10.0  # the largest learning rate the page's "learn from this" accepts


@dataclass(frozen=True)
class ServeConfig:
    """Batching and safety settings of a server (every one has a command-line flag)."""

    max_batch_size: int = 64  # rows per forward pass; 1 turns dynamic batching off
    batch_delay: float = 0.0  # seconds a batch waits for more rows once it has one
    max_queue: int = 4096  # rows waiting per model before requests are refused (503)
    max_body_bytes: int = 16 << 20  # request bodies beyond this are refused (413)
    request_timeout: float = 30.0  # seconds before a request is answered 504
    max_concurrency: int = 256  # requests handled at once; more are refused (503)
    max_visitors: int = 64  # per-visitor model copies held for the page
    max_visitor_bytes: int = 512 << 20  # memory of all those copies together
    visitor_ttl: float = 900.0  # seconds of idleness before a copy expires
    page_lr: float = 0.005  # the page's default learning rate for "learn from this"
    access_log: bool = True
    # BLAS threads for the forward passes (None: leave the library's own choice). One
    # keeps the cores for the event loop: a small network's pass is short, and threads
    # that spin while the loop parses requests cost more than they save.
    blas_threads: int | None = 1

    def __post_init__(self):
        def positive_int(name, low=1):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"{name} must be an integer of at least {low}, got {v!r}")

        def seconds(name, low, high, open_low=False):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (
                    (low < v if open_low else low <= v) and v <= high):
                raise ValueError(f"{name} must be a number of seconds in "
                                 f"{'(' if open_low else '['}{low:g}, {high:g}], got {v!r}")

        for name in ("max_batch_size", "max_queue", "max_body_bytes", "max_concurrency"):
            positive_int(name)
        positive_int("max_visitors", 0)
        positive_int("max_visitor_bytes", 0)
        if self.max_queue < self.max_batch_size:
            raise ParameterError("{max_queue} must be at least {max_batch_size}",
                                 max_queue=self.max_queue, max_batch_size=self.max_batch_size)
        if self.blas_threads is not None:
            positive_int("blas_threads")
        seconds("batch_delay", 0, 10)
        seconds("request_timeout", 0, 24 * 3600, open_low=True)
        seconds("visitor_ttl", 0, 7 * 24 * 3600, open_low=True)
        if not (isinstance(self.page_lr, (int, float)) and 0 < self.page_lr <= MAX_LR):
            raise ValueError(f"page_lr must be in (0, {MAX_LR:g}], got {self.page_lr!r}")
