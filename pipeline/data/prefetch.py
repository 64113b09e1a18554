"""Background prefetch with exact resume positions (Caffe's BasePrefetchingDataLayer).

A *batch source* produces batches one after another and owns everything that
moves (cursor, epoch, shuffle and transform generators)::

    source.next_batch() -> tuple of numpy arrays   (one per top)
    source.state()      -> dict: where the *next* batch starts (plain Python values)
    source.set_state(d)
    source.release()    -> drop per-thread resources (open database transactions)
    source.plan_batch() -> BatchPlan               (optional: see "Workers" below)

``Prefetcher`` runs the source on one daemon thread, ``depth`` batches ahead
(``data_param.prefetch``, default 4), so reading and decoding overlap the net's
compute. Every batch travels with the source state taken right after it was
made, so ``position()`` is the state after the last batch the net *consumed*:
batches prefetched but not yet used are not lost when a snapshot is taken, and
``set_position`` (resume) stops the thread, rewinds the source and starts again.
``depth=0`` produces synchronously on the caller's thread.

Workers. A source with ``plan_batch()`` splits a batch in two: the *plan*, made
in order on the producer thread, does everything sequential — reads the records,
advances the position, draws the batch's random words (Caffe's order), allocates
the output — and its ``fill(i)`` does the rest for item i: decode, crop, mirror,
mean, scale, each item on its own. With ``workers=1`` the producer fills the
items itself. With ``workers=k > 1`` the items are filled in chunks by a pool of
``k`` threads (Pillow's decoder and numpy's loops release the GIL), and the
producer goes on planning the next batches while they run; batches still come
out in order. The random words and the records of a batch are fixed before any
worker touches it, so the batches — and the positions — are bit for bit those of
one worker. Threads, not processes: about three quarters of an item's time is
spent in calls that release the GIL (libjpeg's decode, numpy's copy, cast and
subtract loops; cProfile on 256×256 raw and JPEG records), and threads write
straight into the batch, where processes would need shared memory and a copy of
the reader each. The part that holds the GIL (parsing, bookkeeping) bounds the
gain at a few cores; tools/bench_data.py measures it.

Batch arrays are recycled (``BatchBuffers``): a batch the consumer has let go of
(no reference left anywhere) is refilled instead of allocating fresh memory,
whose page faults cost as much as the transform of a raw record.

An error raised while producing (a corrupt record, a missing image) is re-raised
by ``next()`` on the caller's thread, with its original type and message; with
several workers it is the error of the batch's first failing item, as with one.
"""

from __future__ import annotations

import math
import queue
import sys
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor

import numpy as np


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


class BatchPlan:
    """One batch's work, planned in order; its items can be filled on any threads.

    Args:
        n: items in the batch.
        fill: ``fill(i)`` computes item i into ``outputs`` (it must not touch the
            source: the producer thread goes on with the next batch).
        outputs: the batch (a tuple of arrays, one per top), complete once every
            item is filled.
    """

    def __init__(self, n: int, fill, outputs: tuple):
        self.n, self.fill, self.outputs = int(n), fill, tuple(outputs)

    def run(self, start: int = 0, stop: int | None = None) -> tuple:
        """Fill items ``start``..``stop`` in order (all by default); returns ``outputs``."""
        for i in range(start, self.n if stop is None else stop):
            self.fill(i)
        return self.outputs

    def chunks(self, workers: int) -> list[tuple[int, int]]:
        """[start, stop) ranges in item order, about two per worker (balance without much overhead)."""
        size = max(1, math.ceil(self.n / (2 * max(int(workers), 1))))
        return [(a, min(a + size, self.n)) for a in range(0, self.n, size)]


class BatchBuffers:
    """Batch output arrays, reused once nothing but this pool references them.

    ``empty(shape, dtype)`` hands out an array of that shape whose previous batch
    has been dropped everywhere (its reference count is back to the pool's own),
    else a new one. A torch tensor made with ``torch.from_numpy`` and numpy views
    hold references, so an array is never refilled while any of them lives. At
    most ``keep`` arrays are tracked; arrays under ``min_bytes`` are not.
    """

    def __init__(self, keep: int = 8, min_bytes: int = 1 << 20):
        self.keep, self.min_bytes = int(keep), int(min_bytes)
        self._arrays: list = []
        self._arrays.append(np.empty(1))
        self._free_refs = self._refs(0)  # the count when only this list holds the array
        self._arrays.clear()

    def _refs(self, i: int) -> int:
        return sys.getrefcount(self._arrays[i])

    def empty(self, shape, dtype) -> np.ndarray:
        shape, dtype = tuple(int(d) for d in shape), np.dtype(dtype)
        spare = None  # a free array of another shape, replaced when the pool is full
        for i in range(len(self._arrays)):
            a = self._arrays[i]
            same = a.shape == shape and a.dtype == dtype
            del a
            if self._refs(i) == self._free_refs:
                if same:
                    return self._arrays[i]
                spare = i if spare is None else spare
        out = np.empty(shape, dtype)
        if out.nbytes >= self.min_bytes:
            if len(self._arrays) < self.keep:
                self._arrays.append(out)
            elif spare is not None:  # batches changed shape (no crop, images of several sizes)
                self._arrays[spare] = out
        return out


class _Pending:
    """A planned batch whose chunks run on a pool; ``result()`` waits for them in order."""

    def __init__(self, plan: BatchPlan, pool: ThreadPoolExecutor, workers: int):
        self.plan = plan
        self.futures = [pool.submit(plan.run, a, b) for a, b in plan.chunks(workers)]

    def result(self) -> tuple:
        # Chunks cover the items in order and each stops at its first error, so the
        # first chunk that failed holds the batch's first failing item.
        for f in self.futures:
            f.result()
        return self.plan.outputs


def _make(source, pool, workers: int):
    """The next batch (a tuple of arrays), or a ``_Pending`` batch running on ``pool``."""
    if pool is None or not hasattr(source, "plan_batch"):
        return source.next_batch()
    return _Pending(source.plan_batch(), pool, workers)


def _produce(source, q: queue.Queue, stop: threading.Event, pool, workers: int) -> None:
    """Thread body: fill ``q`` with (batch, state after it) until ``stop`` is set.

    The source is released by ``_Runtime.shutdown`` once the workers are done too
    (they may read the database's memory map until then).
    """
    while not stop.is_set():
        try:
            item = (_make(source, pool, workers), source.state())
        except BaseException as e:  # noqa: BLE001 - any failure is handed to the consumer, raised there
            item = _Failure(e)
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                break
            except queue.Full:
                continue
        if isinstance(item, _Failure):
            return


class _Runtime:
    """The producer thread, its queue and the worker pool; stopped by ``Prefetcher.stop``
    or, when the Prefetcher is collected, by a finalizer (this holds no reference to it)."""

    def __init__(self, source):
        self.source = source
        self.stop_event = None
        self.queue = None
        self.thread = None
        self.pool = None

    def shutdown(self) -> None:
        """Stop the producer, then the workers (running items finish), then release the source."""
        ran = self.thread is not None or self.pool is not None
        if self.stop_event is not None:
            self.stop_event.set()
        thread = self.thread
        while thread is not None and thread.is_alive():
            try:
                while True:
                    self.queue.get_nowait()
            except queue.Empty:
                pass
            thread.join(timeout=0.05)
        self.thread = self.queue = self.stop_event = None
        if self.pool is not None:  # after the producer: it submits to the pool
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None
        if ran:
            self.source.release()


class Prefetcher:
    """Runs the source ahead on a thread (and its items on ``workers`` threads); tracks the consumed position.

    Args:
        source: a batch source (see module docstring).
        depth: batches to keep ready (0: no producer thread; the caller's thread plans).
        name: thread name (for debuggers).
        workers: threads that fill a planned batch's items (1: the producer itself).
            Sources without ``plan_batch`` ignore it.
    """

    def __init__(self, source, depth: int = 4, name: str = "prefetch", workers: int = 1):
        self.source = source
        self.depth = max(int(depth), 0)
        self.name = name
        self.workers = max(int(workers), 1)
        self._position = None  # state after the last consumed batch
        self._rt = _Runtime(source)
        # Stop the threads when this object is collected (they hold only the source and plans).
        self._finalizer = weakref.finalize(self, self._rt.shutdown)

    # ------------------------------------------------------------------ running
    @property
    def running(self) -> bool:
        return self._rt.thread is not None and self._rt.thread.is_alive()

    def _pool(self):
        if self.workers <= 1 or not hasattr(self.source, "plan_batch"):
            return None
        if self._rt.pool is None:
            self._rt.pool = ThreadPoolExecutor(self.workers, thread_name_prefix=f"{self.name}:worker")
        return self._rt.pool

    def _start(self) -> None:
        if self._position is None:
            self._position = self.source.state()
        rt = self._rt
        rt.stop_event = threading.Event()
        rt.queue = queue.Queue(maxsize=self.depth)
        rt.thread = threading.Thread(
            target=_produce,
            args=(self.source, rt.queue, rt.stop_event, self._pool(), self.workers),
            name=self.name,
            daemon=True,
        )
        rt.thread.start()

    def next(self) -> tuple:
        """The next batch (a tuple of arrays), in production order."""
        if self.depth == 0:
            before = self._position if self._position is not None else self.source.state()
            try:
                batch = _make(self.source, self._pool(), self.workers)
                if isinstance(batch, _Pending):
                    batch = batch.result()
            except BaseException:
                self.source.set_state(before)  # a retry reads this batch again
                raise
            self._position = self.source.state()
            return batch
        if self._rt.thread is None:
            self._start()
        item = self._rt.queue.get()
        if isinstance(item, _Failure):
            self.stop()  # rewind: a retry starts again at the last consumed position
            raise item.exc
        batch, position = item
        if isinstance(batch, _Pending):
            try:
                batch = batch.result()
            except BaseException:
                self.stop()
                raise
        self._position = position
        return batch

    def stop(self, rewind: bool = True) -> None:
        """Stop the threads and drop prefetched batches; the source is rewound to ``position()``."""
        self._rt.shutdown()
        if self.depth == 0:
            self.source.release()
        if rewind and self._position is not None:
            self.source.set_state(self._position)

    close = stop

    def set_workers(self, workers: int) -> None:
        """Use ``workers`` threads from the next batch on (prefetched batches are remade; same batches)."""
        workers = max(int(workers), 1)
        if workers != self.workers:
            self.stop()
            self.workers = workers

    # ----------------------------------------------------------------- position
    def position(self) -> dict:
        """Where the next batch the consumer receives starts (the source's state format)."""
        if self._position is None:
            if self.running:  # pragma: no cover - _start always records a position
                raise RuntimeError("prefetch position unknown")
            return self.source.state()
        return self._position

    def set_position(self, state: dict) -> None:
        """Resume from ``state`` (from ``position()``): prefetched batches are dropped."""
        self.stop(rewind=False)
        self.source.set_state(state)
        self._position = self.source.state()
