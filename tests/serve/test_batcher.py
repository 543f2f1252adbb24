"""The dynamic batcher: stacking, bounds, delay, overload, failures and shutdown."""

import asyncio
import threading
import time

import numpy as np
import pytest

from handgrad.serve.batcher import DynamicBatcher, Overloaded, Stopped


class Recorder:
    """A stand-in model: remembers each batch's rows; output row = input row × 2."""

    def __init__(self, pause=0.0, fail=False):
        self.batches, self.pause, self.fail = [], pause, fail
        self.threads = set()

    def __call__(self, X):
        self.threads.add(threading.get_ident())
        self.batches.append(X.shape[0])
        if self.pause:
            time.sleep(self.pause)
        if self.fail:
            raise RuntimeError("the model broke")
        return X * 2


def run(coro):
    return asyncio.run(coro)


def rows(n, start=0):
    return np.arange(start, start + n, dtype=np.float32).reshape(n, 1)  # (n, 1)


def test_concurrent_requests_share_one_pass_and_get_their_own_rows():
    rec = Recorder(pause=0.05)

    async def main():
        b = DynamicBatcher(rec, max_batch_size=64)
        await b.start()
        # the first request starts a pass; the next 20 arrive while it runs
        results = await asyncio.gather(*(b.submit(rows(1 + i % 3, 10 * i)) for i in range(21)))
        await b.stop()
        return results

    results = run(main())
    for i, r in enumerate(results):
        np.testing.assert_array_equal(r, rows(1 + i % 3, 10 * i) * 2)
    assert sum(rec.batches) == sum(1 + i % 3 for i in range(21))
    assert len(rec.batches) < 21 and max(rec.batches) > 3  # stacked, not one by one
    assert len(rec.threads) == 1  # only the batcher's own thread ever runs the model


def test_batches_never_exceed_max_batch_size():
    rec = Recorder(pause=0.01)

    async def main():
        b = DynamicBatcher(rec, max_batch_size=8)
        await b.start()
        await asyncio.gather(*(b.submit(rows(3)) for _ in range(20)))
        await b.stop()

    run(main())
    assert max(rec.batches) <= 8 and sum(rec.batches) == 60


def test_a_request_larger_than_the_batch_runs_alone():
    rec = Recorder()

    async def main():
        b = DynamicBatcher(rec, max_batch_size=4)
        await b.start()
        out = await b.submit(rows(10))
        await b.stop()
        return out

    assert run(main()).shape == (10, 1) and rec.batches == [10]


def test_max_batch_size_one_is_unbatched():
    rec = Recorder(pause=0.005)

    async def main():
        b = DynamicBatcher(rec, max_batch_size=1)
        await b.start()
        await asyncio.gather(*(b.submit(rows(1)) for _ in range(10)))
        await b.stop()

    run(main())
    assert rec.batches == [1] * 10


def test_delay_gathers_requests_that_arrive_apart():
    rec = Recorder()

    async def main(delay):
        b = DynamicBatcher(rec, max_batch_size=64, max_delay=delay)
        await b.start()

        async def later(i):
            await asyncio.sleep(0.01 * i)
            return await b.submit(rows(1))

        await asyncio.gather(*(later(i) for i in range(5)))
        await b.stop()

    run(main(0.2))
    assert rec.batches == [5]  # all five waited for each other
    rec.batches.clear()
    run(main(0.0))
    assert len(rec.batches) == 5  # no delay: each ran as it came


def test_a_full_queue_refuses_at_once():
    rec = Recorder(pause=0.2)

    async def main():
        b = DynamicBatcher(rec, max_batch_size=4, max_queue=8)
        await b.start()
        first = asyncio.ensure_future(b.submit(rows(4)))
        await asyncio.sleep(0.05)  # the first pass is running; the queue is empty
        queued = [asyncio.ensure_future(b.submit(rows(4))) for _ in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(Overloaded, match="queue of 8"):
            await b.submit(rows(1))
        await asyncio.gather(first, *queued)
        await b.stop()

    run(main())


def test_a_model_failure_reaches_every_caller_of_the_batch():
    rec = Recorder(fail=True)

    async def main():
        b = DynamicBatcher(rec, max_batch_size=8)
        await b.start()
        results = await asyncio.gather(*(b.submit(rows(1)) for _ in range(3)),
                                       return_exceptions=True)
        rec.fail = False  # the worker lives on and serves the next request
        after = await b.submit(rows(1, 5))
        await b.stop()
        return results, after

    results, after = run(main())
    assert all(isinstance(r, RuntimeError) and "broke" in str(r) for r in results)
    np.testing.assert_array_equal(after, [[10]])


def test_callers_that_gave_up_are_dropped_from_the_batch():
    rec = Recorder(pause=0.1)

    async def main():
        b = DynamicBatcher(rec, max_batch_size=64)
        await b.start()
        first = asyncio.ensure_future(b.submit(rows(1)))
        await asyncio.sleep(0.02)
        impatient = asyncio.ensure_future(b.submit(rows(5)))
        patient = asyncio.ensure_future(b.submit(rows(2)))
        await asyncio.sleep(0.01)
        impatient.cancel()
        await first
        out = await patient
        await b.stop()
        return out

    assert run(main()).shape == (2, 1)
    assert rec.batches == [1, 2]


def test_stop_finishes_queued_work_then_refuses():
    rec = Recorder(pause=0.05)

    async def main():
        b = DynamicBatcher(rec, max_batch_size=2)
        await b.start()
        pending = [asyncio.ensure_future(b.submit(rows(2))) for _ in range(3)]
        await asyncio.sleep(0.01)
        await b.stop()
        assert all(p.done() and p.exception() is None for p in pending)
        with pytest.raises(Stopped):
            await b.submit(rows(1))

    run(main())
    assert rec.batches == [2, 2, 2]


@pytest.mark.parametrize("kwargs, words", [
    ({"max_batch_size": 0}, "max_batch_size"),
    ({"max_delay": -1}, "max_delay"),
    ({"max_batch_size": 8, "max_queue": 4}, "max_queue"),
])
def test_settings_are_checked(kwargs, words):
    with pytest.raises(ValueError, match=words):
        DynamicBatcher(lambda X: X, **kwargs)
