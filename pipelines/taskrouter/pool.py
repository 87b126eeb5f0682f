"""The reader threads of one ``TaskRouterClient.read_reservations`` call (``read_all``)."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from pipelines.taskrouter.reads import WorkerRead
from pipelines.taskrouter.retry import budget


class _Failed:
    """An exception raised by a reader, carried to the consuming thread."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_STOP = object()


def read_all(read: Callable[[str], WorkerRead], worker_sids: Iterable[str], concurrency: int,
             max_threads: int) -> Iterator[WorkerRead]:
    """``read`` each worker on a ``ReaderPool``, yielding each read as it finishes.

    At most ``8 x concurrency`` workers are being read or waiting to be consumed, so memory
    stays flat however many workers there are; closing the iterator stops the readers.
    """
    window = 8 * concurrency
    sids = iter(worker_sids)
    pool = ReaderPool(read, concurrency, max_threads)
    outstanding = 0
    exhausted = False
    try:
        while True:
            while not exhausted and outstanding < window:
                sid = next(sids, None)
                if sid is None:
                    exhausted = True
                    break
                pool.submit(sid)
                outstanding += 1
            if not outstanding:
                return
            result = pool.next_result()
            outstanding -= 1
            yield result
    finally:
        pool.close()


class ReaderPool:
    """Reader threads for one ``read_reservations`` call.

    ``concurrency`` readers take worker SIDs from a queue and put each result on another (O(1)
    per worker, no waiting over a set of futures). While a reader backs off before a retry it
    has given its in-flight slot up; if that leaves fewer than ``concurrency`` readers able to
    use the slots, another reader is started (``max_threads`` in all), and once the backoff is
    over the first reader to find more active readers than slots retires. So the slots are kept
    busy during backoffs, as with a fixed pool of ``max_threads``, without that many threads
    contending for the GIL when nothing backs off.
    """

    def __init__(
        self, read: Callable[[str], WorkerRead], concurrency: int, max_threads: int
    ) -> None:
        self._read = read
        self.concurrency = concurrency
        self.max_threads = max(concurrency, max_threads)
        self._todo: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._done: queue.SimpleQueue[WorkerRead | _Failed] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: set[threading.Thread] = set()  # readers started and not exited
        self._started = 0
        self._live = 0  # readers started and not retired
        self._backing_off = 0  # of those, how many are sleeping before a retry
        self._closing = False

    # -- consumer side -----------------------------------------------------------------------
    def submit(self, sid: str) -> None:
        self._todo.put(sid)
        if self._live < self.concurrency:
            with self._lock:
                if self._live < self.concurrency and not self._closing:
                    self._start_reader()

    def next_result(self) -> WorkerRead:
        result = self._done.get()
        if isinstance(result, _Failed):
            raise result.exc
        return result

    def close(self) -> None:
        """No new worker is started; reads in progress finish; every reader has exited."""
        with self._lock:
            self._closing = True
            threads = list(self._threads)
        for _ in threads:
            self._todo.put(_STOP)
        for thread in threads:
            thread.join()

    # -- reader side -------------------------------------------------------------------------
    def backoff_begins(self) -> None:
        with self._lock:
            self._backing_off += 1
            if (
                not self._closing
                and self._live - self._backing_off < self.concurrency
                and self._live < self.max_threads
            ):
                # no thread to spare (RuntimeError): the slot idles during this backoff
                with contextlib.suppress(RuntimeError):
                    self._start_reader()

    def backoff_ends(self) -> None:
        with self._lock:
            self._backing_off -= 1

    def _start_reader(self) -> None:  # with self._lock held
        self._started += 1
        thread = threading.Thread(
            target=self._run, name=f"taskrouter-reader-{self._started}", daemon=True
        )
        self._live += 1
        self._threads.add(thread)
        try:
            thread.start()
        except BaseException:
            self._live -= 1
            self._threads.discard(thread)
            raise

    def _run(self) -> None:
        budget.pool = self
        retired = False
        try:
            while True:
                sid = self._todo.get()
                if sid is _STOP or self._closing:
                    break
                try:
                    result: WorkerRead | _Failed = self._read(sid)
                except BaseException as exc:  # carried to the consumer, raised there
                    result = _Failed(exc)
                self._done.put(result)
                if self._backing_off or self._live > self.concurrency:
                    with self._lock:
                        if self._live - self._backing_off > self.concurrency:
                            self._live -= 1
                            retired = True
                            break
        finally:
            budget.pool = None
            with self._lock:
                if not retired:
                    self._live -= 1
                self._threads.discard(threading.current_thread())
