"""Background prefetch with exact resume positions (Caffe's BasePrefetchingDataLayer).

A *batch source* produces batches one after another and owns everything that
moves (cursor, epoch, shuffle and transform generators)::

    source.next_batch() -> tuple of numpy arrays   (one per top)
    source.state()      -> dict: where the *next* batch starts (plain Python values)
    source.set_state(d)
    source.release()    -> drop per-thread resources (open database transactions)

``Prefetcher`` runs ``next_batch`` on one daemon thread, ``depth`` batches ahead
(``data_param.prefetch``, default 4), so reading and decoding overlap the net's
compute. Every batch travels with the source state taken right after it was
made, so ``position()`` is the state after the last batch the net *consumed*:
batches prefetched but not yet used are not lost when a snapshot is taken, and
``set_position`` (resume) stops the thread, rewinds the source and starts again.
``depth=0`` produces synchronously on the caller's thread.

An error raised while producing (a corrupt record, a missing image) is re-raised
by ``next()`` on the caller's thread, with its original type and message.
"""

from __future__ import annotations

import queue
import threading
import weakref


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


def _produce(source, q: queue.Queue, stop: threading.Event) -> None:
    """Thread body: fill ``q`` with (batch, state after it) until ``stop`` is set."""
    try:
        while not stop.is_set():
            try:
                item = (source.next_batch(), source.state())
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
    finally:
        source.release()


def _shutdown(stop: threading.Event, q: queue.Queue, holder: list) -> None:
    stop.set()
    thread = holder[0] if holder else None
    while thread is not None and thread.is_alive():
        try:
            while True:
                q.get_nowait()
        except queue.Empty:
            pass
        thread.join(timeout=0.05)


class Prefetcher:
    """Runs ``source.next_batch`` ahead on a thread; tracks the consumed position.

    Args:
        source: a batch source (see module docstring).
        depth: batches to keep ready (0: no thread).
        name: thread name (for debuggers).
    """

    def __init__(self, source, depth: int = 4, name: str = "prefetch"):
        self.source = source
        self.depth = max(int(depth), 0)
        self.name = name
        self._position = None  # state after the last consumed batch
        self._thread_box: list = []
        self._stop = None
        self._queue = None
        self._finalizer = None

    # ------------------------------------------------------------------ running
    @property
    def running(self) -> bool:
        return bool(self._thread_box) and self._thread_box[0].is_alive()

    def _start(self) -> None:
        if self._position is None:
            self._position = self.source.state()
        self._stop = threading.Event()
        self._queue = queue.Queue(maxsize=self.depth)
        self._thread_box = []
        thread = threading.Thread(
            target=_produce, args=(self.source, self._queue, self._stop), name=self.name, daemon=True
        )
        self._thread_box.append(thread)
        # Stop the thread when this object is collected (the thread holds only the source).
        self._finalizer = weakref.finalize(self, _shutdown, self._stop, self._queue, self._thread_box)
        thread.start()

    def next(self) -> tuple:
        """The next batch (a tuple of arrays), in production order."""
        if self.depth == 0:
            batch = self.source.next_batch()
            self._position = self.source.state()
            return batch
        if self._queue is None:
            self._start()
        item = self._queue.get()
        if isinstance(item, _Failure):
            self.stop()  # rewind: a retry starts again at the last consumed position
            raise item.exc
        batch, self._position = item
        return batch

    def stop(self, rewind: bool = True) -> None:
        """Stop the thread and drop prefetched batches; the source is rewound to ``position()``."""
        if self._finalizer is not None:
            self._finalizer()  # joins the thread
            self._finalizer = None
        elif self.depth == 0:
            self.source.release()
        self._queue = None
        self._thread_box = []
        if rewind and self._position is not None:
            self.source.set_state(self._position)

    close = stop

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
