"""The one thread that writes a sync's batches; on SQLite, batches that follow closely share a commit.

Why share: SQLite's WAL logs whole pages, and a batch of random sids touches nearly every leaf
page of the primary keys (``reservations.sid``, the history's ``(sid, status, date_updated)``)
once the tables hold a few hundred thousand rows, so a commit per 10k-row batch writes those
pages out again for every batch: the write cost per row grows with the table. Measured with a
bare model of the two tables (sqlite3, 16 KiB pages, 1.5M random sids, 10k-row statements): a
commit per batch 43.5 s, a commit per 50k rows 24.0 s, per 150k 19.2 s; at 100k rows 0.8 vs 0.7 s.
PostgreSQL and MySQL/MariaDB log rows, not pages, and a transaction that a deadlock aborts must
be replayed whole from memory, so there every batch keeps its own transaction
(``run_in_transaction``).

When a shared transaction commits: once it has been open ``COMMIT_AFTER_S``; as soon as the
writer has waited ``IDLE_COMMIT_S`` for the next batch (a sync bound by the API, the usual case,
still commits every batch as it lands, and never holds the write lock while it waits on the
network); and when the writer closes. Other SQLite writers wait at most about that long (their
busy timeout is a minute); readers are never blocked (WAL).

Failure: a batch whose write fails rolls back its open transaction, the batches before it in the
same transaction included (the next sync reads them again, as it reads every worker), and every
later submission fails with the same error. Closing the writer because the *caller* failed
commits what was written: nothing already written is lost.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Generic, TypeVar

from sqlalchemy.engine import Connection, Engine, RootTransaction

from warehouse.engine import run_in_transaction

log = logging.getLogger(__name__)
T = TypeVar("T")

COMMIT_AFTER_S = 2.0
IDLE_COMMIT_S = 0.2
# False: every batch commits on its own on SQLite too (benchmarks compare the two).
SHARE_COMMITS_ON_SQLITE = True


class PendingWrite(Generic[T]):
    """What ``BatchWriter.submit`` returns: ``result()`` waits for the batch's statements."""

    def __init__(self) -> None:
        self._done = threading.Event()
        self._value: Any = None
        self._error: BaseException | None = None

    def result(self) -> T:
        self._done.wait()
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[no-any-return]

    def _settle(self, value: Any = None, error: BaseException | None = None) -> None:
        self._value, self._error = value, error
        self._done.set()


_CLOSE = object()


class BatchWriter:
    """Runs ``work(conn)`` callables one after another on its own thread and connection.

    Use as a context manager. ``commits`` counts the transactions committed, ``busy_seconds``
    the writer's time in statements and commits (not its waits for work).
    """

    def __init__(self, engine: Engine, *, what: str = "warehouse batch",
                 commit_after_s: float = COMMIT_AFTER_S, idle_commit_s: float = IDLE_COMMIT_S) -> None:
        self.engine, self.what = engine, what
        self.commit_after_s, self.idle_commit_s = commit_after_s, idle_commit_s
        self.shares_commits = engine.dialect.name == "sqlite" and SHARE_COMMITS_ON_SQLITE
        self.commits = 0
        self.busy_seconds = 0.0
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._failure: BaseException | None = None  # the first failed write or commit
        self._closing_error: BaseException | None = None  # a failed commit nobody has been told of
        self._conn: Connection | None = None
        self._transaction: RootTransaction | None = None
        self._opened = 0.0
        self._thread = threading.Thread(target=self._run, name="writer", daemon=True)
        self._thread.start()

    def submit(self, work: Callable[[Connection], T]) -> PendingWrite[T]:
        pending: PendingWrite[T] = PendingWrite()
        self._queue.put((work, pending))
        return pending

    def close(self) -> None:
        """Commit what was written and stop the thread (after the batches queued before).

        Raises the final commit's error; a batch's own error went to its ``result()``.
        """
        if self._thread.is_alive():
            self._queue.put(_CLOSE)
            self._thread.join()
        if self._closing_error is not None:
            error, self._closing_error = self._closing_error, None
            raise error

    def __enter__(self) -> BatchWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    # -- the writer thread --------------------------------------------------------------------
    def _run(self) -> None:
        while (item := self._next_item()) is not _CLOSE:
            work, pending = item
            del item
            if self._failure is not None:
                pending._settle(error=self._failure)
                self._closing_error = None  # told now
                continue
            started = time.perf_counter()
            try:
                pending._settle(self._write(work))
            except BaseException as error:  # noqa: BLE001 - handed to the caller
                self._failure, self._closing_error = error, None  # told through its result
                self._rollback()
                pending._settle(error=error)
            finally:
                self.busy_seconds += time.perf_counter() - started
            del work, pending  # the batch's rows are not kept while the writer waits
        self._commit_open()

    def _next_item(self) -> Any:
        if self._transaction is None:
            return self._queue.get()
        try:
            return self._queue.get(timeout=self.idle_commit_s)
        except queue.Empty:  # nothing to write right now: let the rows land
            self._commit_open()
            return self._queue.get()

    def _write(self, work: Callable[[Connection], T]) -> T:
        if not self.shares_commits:
            result = run_in_transaction(self.engine, work, what=self.what)
            self.commits += 1
            return result
        if self._transaction is None:
            self._conn = self.engine.connect()
            self._transaction = self._conn.begin()
            self._opened = time.monotonic()
        assert self._conn is not None
        result = work(self._conn)
        if time.monotonic() - self._opened >= self.commit_after_s:
            self._commit_open(timed=False)  # the caller times this write, commit included
            if self._failure is not None:  # this batch was in the transaction that failed
                raise self._failure
        return result

    def _commit_open(self, timed: bool = True) -> None:
        """Commit the shared transaction; a failure is kept for the next submission or ``close``."""
        if self._transaction is None:
            return
        started = time.perf_counter()
        try:
            self._transaction.commit()
            self.commits += 1
        except BaseException as error:  # noqa: BLE001 - reported by the next submission or close
            log.warning("%s: commit failed, its batches are rolled back: %s", self.what,
                        type(error).__name__)
            self._failure = self._closing_error = error
            self._rollback()
        finally:
            if timed:
                self.busy_seconds += time.perf_counter() - started
            self._release()

    def _rollback(self) -> None:
        if self._transaction is not None:
            try:
                self._transaction.rollback()
            except Exception:  # noqa: BLE001 - the write's own error is the one to report
                log.exception("%s: rollback after a failed write failed too", self.what)
        self._release()

    def _release(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = self._transaction = None
