"""Dynamic batching: concurrent requests stacked into one forward pass.

As Triton's dynamic batcher does, requests for a model wait in a queue; a worker
takes the first one, waits at most ``max_delay`` seconds for more rows while the
batch is below ``max_batch_size``, stacks everything it took into one array and
runs the model once on it, in a thread of its own (NumPy's matrix products
release the GIL, so the event loop keeps accepting requests meanwhile). While
that pass runs, the next batch gathers in the queue, so under load batches fill
up even with ``max_delay = 0``. ``max_batch_size = 1`` turns batching off: one
forward pass per request, through the same path.

The queue is bounded (``max_queue`` rows): a request that would overflow it is
refused at once with :class:`Overloaded` (the app answers 503) instead of
waiting without bound. A request whose caller gave up (timed out, disconnected)
is dropped from its batch before the pass.

Shape key: N rows of one request, B rows of a batch, D inputs, M classes.
"""

from __future__ import annotations

import asyncio
import collections
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np


class Overloaded(Exception):
    """The queue is full: the request is refused rather than queued without bound."""


class Stopped(Exception):
    """The batcher has been stopped (the server is shutting down)."""


class DynamicBatcher:
    """Stack concurrent calls of ``run(X (B, D)) -> (B, M)`` into batches.

    ``on_batch(rows, seconds)`` is called after every pass (for metrics). Only the
    batcher's own thread ever calls ``run``, so a model that is not thread-safe
    (its reusable workspaces) can be served as it is.
    """

    def __init__(self, run, *, max_batch_size=64, max_delay=0.0, max_queue=4096,
                 name="model", on_batch=None):
        if not (isinstance(max_batch_size, int) and max_batch_size >= 1):
            raise ValueError(f"max_batch_size must be a positive integer, got {max_batch_size!r}")
        if not (isinstance(max_delay, (int, float)) and 0 <= max_delay <= 10):
            raise ValueError(f"max_delay must be between 0 and 10 seconds, got {max_delay!r}")
        if not (isinstance(max_queue, int) and max_queue >= max_batch_size):
            raise ValueError(f"max_queue must be an integer of at least max_batch_size "
                             f"({max_batch_size}), got {max_queue!r}")
        self.run = run
        self.max_batch_size = max_batch_size
        self.max_delay = float(max_delay)
        self.max_queue = max_queue
        self.name = name
        self.on_batch = on_batch
        self._queue = collections.deque()  # (X (N, D), future)
        self._queued_rows = 0
        self._arrived = None  # asyncio.Event: set when the queue gains an entry
        self._worker = None
        self._executor = None
        self._stopping = False
        self._busy = False  # a pass is running

    @property
    def queued_rows(self):
        return self._queued_rows

    @property
    def running(self):
        """Whether requests are taken: started and not stopping."""
        return self._worker is not None and not self._stopping

    async def start(self):
        if self._worker is not None:
            return
        self._arrived = asyncio.Event()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"handgrad-batch-{self.name}")
        self._stopping = False
        self._worker = asyncio.get_running_loop().create_task(self._work())

    async def submit(self, X):
        """Run ``X`` (N, D) in the next batch with room for it; returns its rows (N, M)."""
        if self._worker is None or self._stopping:
            raise Stopped(f"model {self.name!r} is not accepting requests (shutting down)")
        n = X.shape[0]
        if self._queued_rows + n > self.max_queue:
            raise Overloaded(f"model {self.name!r} has {self._queued_rows} rows queued; "
                             f"a queue of {self.max_queue} cannot take {n} more")
        future = asyncio.get_running_loop().create_future()
        self._queue.append((X, future))
        self._queued_rows += n
        self._arrived.set()
        return await future

    def _take(self):
        """Pop entries for one batch: at least one, then while their rows fit."""
        taken, rows = [], 0
        while self._queue:
            X, future = self._queue[0]
            if taken and rows + X.shape[0] > self.max_batch_size:
                break
            self._queue.popleft()
            self._queued_rows -= X.shape[0]
            if future.done():  # the caller gave up: nothing to compute
                continue
            taken.append((X, future))
            rows += X.shape[0]
        return taken, rows

    async def _work(self):
        loop = asyncio.get_running_loop()
        while True:
            while not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
            if self.max_delay > 0 and self._queued_rows < self.max_batch_size:
                deadline = loop.time() + self.max_delay
                while self._queued_rows < self.max_batch_size and not self._stopping:
                    left = deadline - loop.time()
                    if left <= 0:
                        break
                    self._arrived.clear()
                    try:
                        await asyncio.wait_for(self._arrived.wait(), left)
                    except asyncio.TimeoutError:
                        break
            taken, rows = self._take()
            if not taken:
                continue
            X = taken[0][0] if len(taken) == 1 else np.concatenate([x for x, _ in taken])  # (B, D)
            start = time.perf_counter()
            self._busy = True
            try:
                P = await loop.run_in_executor(self._executor, self.run, X)  # (B, M)
            except Exception as exc:  # the model failed: every caller in the batch hears it
                for _, future in taken:
                    if not future.done():
                        future.set_exception(exc)
                continue
            finally:
                self._busy = False
            if self.on_batch is not None:
                self.on_batch(rows, time.perf_counter() - start)
            at = 0
            for x, future in taken:
                n = x.shape[0]
                if not future.done():
                    future.set_result(P[at:at + n])  # (N, M)
                at += n

    async def stop(self, timeout=30.0):
        """Refuse new requests, finish the queued ones (up to ``timeout``), then end."""
        if self._worker is None:
            return
        self._stopping = True
        self._arrived.set()
        deadline = time.monotonic() + timeout
        while (self._queue or self._busy) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        self._worker.cancel()
        try:
            await self._worker
        except (asyncio.CancelledError, Exception):
            pass
        for _, future in self._queue:
            if not future.done():
                future.set_exception(Stopped(f"model {self.name!r} stopped"))
        self._queue.clear()
        self._queued_rows = 0
        self._executor.shutdown(wait=True)
        self._worker = None
