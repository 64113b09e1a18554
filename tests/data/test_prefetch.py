"""Prefetcher with worker threads on a toy planned source; batch-array recycling."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from pipeline.data.prefetch import BatchBuffers, BatchPlan, Prefetcher


class Counting:
    """Batches of ``n`` items: item i of batch b is b * n + i (as float32), slowly, on any thread.

    ``fail_at``: items whose fill raises ValueError naming them. The plan draws nothing
    random; its state is the batch counter.
    """

    def __init__(self, n=6, fail_at=(), delay=0.0):
        self.n, self.fail_at, self.delay = n, set(fail_at), delay
        self.batch = 0
        self.threads = set()
        self.released = 0

    def plan_batch(self):
        b, n = self.batch, self.n
        self.batch += 1
        out = np.full(n, -1.0, np.float32)

        def fill(i):
            self.threads.add(threading.current_thread().name)
            time.sleep(self.delay * ((n - i) % 3))  # later items of a chunk may finish first
            if b * n + i in self.fail_at:
                raise ValueError(f"item {b * n + i}")
            out[i] = b * n + i

        return BatchPlan(n, fill, (out,))

    def next_batch(self):
        return self.plan_batch().run()

    def state(self):
        return {"batch": self.batch}

    def set_state(self, state):
        self.batch = state["batch"]

    def release(self):
        self.released += 1


@pytest.mark.parametrize("depth", [0, 3])
@pytest.mark.parametrize("workers", [1, 3])
def test_batches_come_in_order_with_positions(depth, workers):
    src = Counting(delay=0.001)
    p = Prefetcher(src, depth, name="toy", workers=workers)
    for b in range(5):
        (out,) = p.next()
        np.testing.assert_array_equal(out, np.arange(6 * b, 6 * b + 6, dtype=np.float32))
        assert p.position() == {"batch": b + 1}
    if workers > 1:
        assert any(t.startswith("toy:worker") for t in src.threads)
    p.set_position({"batch": 1})
    np.testing.assert_array_equal(p.next()[0], np.arange(6, 12))
    p.stop()


@pytest.mark.parametrize("depth", [0, 2])
@pytest.mark.parametrize("workers", [1, 2, 6])
def test_first_failing_item_wins_and_a_retry_starts_over(depth, workers):
    src = Counting(fail_at={9, 10, 11}, delay=0.002)
    p = Prefetcher(src, depth, workers=workers)
    p.next()
    for _ in range(2):
        with pytest.raises(ValueError, match="^item 9$"):
            p.next()
        assert p.position() == {"batch": 1}
    src.fail_at.clear()
    np.testing.assert_array_equal(p.next()[0], np.arange(6, 12))
    p.stop()


def test_set_workers_keeps_the_stream_and_collection_stops_threads():
    src = Counting()
    p = Prefetcher(src, 2, name="gc-toy", workers=2)
    p.next()
    p.set_workers(4)
    np.testing.assert_array_equal(p.next()[0], np.arange(6, 12))
    assert p.workers == 4
    del p
    deadline = time.time() + 5
    while time.time() < deadline and any(t.name.startswith("gc-toy") for t in threading.enumerate()):
        time.sleep(0.01)
    assert not any(t.name.startswith("gc-toy") for t in threading.enumerate())


def test_chunks_cover_the_batch_in_order():
    plan = BatchPlan(10, lambda i: None, ())
    for w in (1, 2, 3, 20):
        chunks = plan.chunks(w)
        assert [i for a, b in chunks for i in range(a, b)] == list(range(10))
        assert len(chunks) <= 2 * w


def test_batch_arrays_are_reused_only_once_released():
    pool = BatchBuffers(keep=3, min_bytes=0)
    a = pool.empty((4, 5), np.float32)
    t = torch.from_numpy(a)  # a tensor over the array holds it
    del a
    b = pool.empty((4, 5), np.float32)
    assert b.ctypes.data != t.data_ptr()
    view = b[1:]
    del b
    c = pool.empty((4, 5), np.float32)
    assert c.ctypes.data not in (t.data_ptr(), view.ctypes.data - 20)
    del t, view
    d = pool.empty((4, 5), np.float32)  # the first array is free again
    e = pool.empty((4, 5), np.float32)
    assert {d.ctypes.data, e.ctypes.data} <= {x.ctypes.data for x in pool._arrays}
    assert pool.empty((2, 2), np.float32).shape == (2, 2)  # another shape: a new array
    assert len(pool._arrays) == 3
    del c, d, e
    other = pool.empty((4, 5), np.float64)  # pool full: a free array of another shape makes room
    assert other.dtype == np.float64 and any(other is x for x in pool._arrays) and len(pool._arrays) == 3
    held = [pool.empty((4, 5), np.float64) for _ in range(3)]  # nothing free: handed out, not tracked
    assert sum(any(h is x for x in pool._arrays) for h in held) == 2
