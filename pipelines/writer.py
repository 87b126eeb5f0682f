"""Where a sync's write transactions run: a thread of this process, or a writer process.

A full load spends most of its CPU in the warehouse half of each batch (binding, classifying,
SQL), and in one process that half shares the GIL with the reader threads and the screening:
measured on 100k reservations, the writer thread waited ~1.6 s of its 4.1 s for the GIL, and
every short statement paid a GIL hand-back of up to the 5 ms switch interval. A writer
*process* has a GIL of its own, so the two halves really run on two cores; batches cross as
pickles of the already-normalized frames (~16 ms per 10k rows, measured), never as raw dicts.

``SYNC_WRITER`` chooses:
- ``thread`` (the default): batches are written by one thread of the sync's process.
- ``auto``: the sync starts on the thread; the first batch with many rows to write (an initial
  load, a new workspace) starts the process, with ``spawn`` (no fork of a threaded process).
  The thread keeps writing while the process imports the warehouse code (~0.5 s); once it is
  up, the queued thread batches finish and the rest go to the process. A steady-state sync,
  which writes a few rows per batch, never pays for a process.
- ``process``: the process from the first batch.
Either way batches commit one at a time, in order, through the same ``write_batch``; the
process opens its own engine from the same URL and, on SQLite, moves WAL checkpoints off the
commit path (``warehouse.checkpoints``).

Why the thread is the default (``benchmarks/run.py``, same run): the process makes a 100k-row
initial load ~25% faster, but costs ~180 MB more resident memory (a second interpreter with
pandas and SQLAlchemy), and at 1.5M rows, where SQLite's own B-tree work bounds the load, it
saves nothing. Steady-state syncs write too little for it to matter.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from typing import TYPE_CHECKING

from sqlalchemy.engine import Engine

from warehouse.checkpoints import BackgroundCheckpoints, is_sqlite_file

if TYPE_CHECKING:
    from pipelines.loading import BatchResult, PreparedBatch

log = logging.getLogger(__name__)
WRITER_MODES = ("auto", "process", "thread")
# auto: a process for syncs of at least this many workers, once a batch has this many rows to
# write (screened-out unchanged records do not count).
PROCESS_MIN_WORKERS = 200
HEAVY_BATCH_ROWS = 2000
PARENT_CHECK_S = 0.25

_child_engine: Engine | None = None
_child_checkpoints: BackgroundCheckpoints | None = None


DEFAULT_WRITER_MODE = "thread"


def writer_mode(raw: str | None = None) -> str:
    mode = (raw if raw is not None else os.environ.get("SYNC_WRITER", "")).strip().lower()
    mode = mode or DEFAULT_WRITER_MODE
    if mode not in WRITER_MODES:
        raise ValueError(f"SYNC_WRITER={mode!r}: expected one of {', '.join(WRITER_MODES)}")
    return mode


def can_use_process(engine: Engine) -> bool:
    """Another process can open the same database (not an in-memory SQLite)."""
    return engine.url.get_backend_name() != "sqlite" or is_sqlite_file(engine)


def _exit_with(parent: int) -> None:
    """The writer process ends when the sync does, even a SIGKILLed one (its work queue never
    reports end-of-file: the process holds both ends of that pipe). A batch it was writing is
    then rolled back by the database, as any interrupted transaction: nothing committed is lost."""
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_S)
    os._exit(70)


def _start_child(url: str, parent: int) -> None:
    """Runs in the writer process: its own engine (on SQLite with checkpoints off the commit
    path), and the sync's memory and GC settings."""
    global _child_engine, _child_checkpoints
    from pipelines.memory import fewer_collections, limit_malloc_arenas
    from warehouse.engine import create_warehouse_engine

    threading.Thread(target=_exit_with, args=(parent,), name="exit-with-sync", daemon=True).start()
    limit_malloc_arenas()
    fewer_collections().__enter__()  # for the life of the process
    _child_engine = create_warehouse_engine(url)
    if is_sqlite_file(_child_engine):
        _child_checkpoints = BackgroundCheckpoints(_child_engine).install()


def _ready() -> int:
    import pipelines.loading  # noqa: F401 - imported while the thread still writes

    return os.getpid()


def _write_in_child(prepared: PreparedBatch) -> BatchResult:
    from pipelines.loading import write_batch

    assert _child_engine is not None
    result = write_batch(_child_engine, prepared)
    if _child_checkpoints is not None:
        _child_checkpoints.request()
    result.counts.written_rows = None  # the caller needs the counts, not the frame
    return result


def _finish_child() -> float:
    """The last checkpoint; returns the process's peak RSS in MB (for the sync's figures)."""
    import resource

    if _child_checkpoints is not None:
        _child_checkpoints.finish()
    if _child_engine is not None:
        _child_engine.dispose()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def rows_to_write(prepared: PreparedBatch) -> int:
    return len(prepared.rows.rows)


class BatchWriter:
    """Commits prepared batches one at a time, in submission order (see the module docstring)."""

    def __init__(self, engine: Engine, workers: int, mode: str) -> None:
        self.mode = mode
        self.engine = engine
        self.thread = ThreadPoolExecutor(1, thread_name_prefix="writer")
        self.process: ProcessPoolExecutor | None = None
        self._process_ready: Future[int] | None = None
        self._thread_futures: list[Future[BatchResult]] = []
        self.using_process = False
        self.process_peak_rss_mb = 0.0  # the writer process's, once it has finished
        self.may_use_process = mode != "thread" and can_use_process(self.engine) and (
            mode == "process" or workers >= PROCESS_MIN_WORKERS)
        if mode == "process" and self.may_use_process:
            self._start_process()

    def _start_process(self) -> None:
        url = self.engine.url.render_as_string(hide_password=False)  # crosses a pipe, never logged
        self.process = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                           initializer=_start_child,
                                           initargs=(url, os.getpid()))
        self._process_ready = self.process.submit(_ready)
        log.info("writing batches in a writer process from now on (many rows to write)")

    def _switch_to_process(self) -> None:
        assert self._process_ready is not None
        error = self._process_ready.exception()
        if error is not None:  # e.g. no way to start a process here: the thread carries on
            log.warning("writer process failed to start (%s); batches stay on the thread",
                        type(error).__name__)
            self._process_ready = None
            self.may_use_process = False
            return
        for earlier in self._thread_futures:  # commits stay in submission order
            earlier.exception()
        self._thread_futures.clear()
        self.using_process = True

    def submit(self, prepared: PreparedBatch) -> Future[BatchResult]:
        if (self.may_use_process and self.process is None
                and rows_to_write(prepared) >= HEAVY_BATCH_ROWS):
            self._start_process()
        if not self.using_process and self._process_ready is not None and self._process_ready.done():
            self._switch_to_process()
        if self.using_process:
            assert self.process is not None
            return self.process.submit(_write_in_child, prepared)
        from pipelines.loading import write_batch

        future = self.thread.submit(write_batch, self.engine, prepared)
        self._thread_futures = [f for f in self._thread_futures if not f.done()] + [future]
        return future

    def close(self) -> None:
        """Wait for the submitted batches; then the writer process's last WAL checkpoint (which
        never fails the sync: it is housekeeping)."""
        self.thread.shutdown(wait=True)
        if self.process is None:
            return
        try:
            if self._process_ready is not None:
                self.process_peak_rss_mb = self.process.submit(_finish_child).result(timeout=120)
        except Exception as error:  # noqa: BLE001
            log.info("writer process did not finish cleanly: %s", type(error).__name__)
        finally:
            self.process.shutdown(wait=True, cancel_futures=True)


@contextmanager
def batch_writer(engine: Engine, workers: int, mode: str | None = None) -> Iterator[BatchWriter]:
    """A writer for one sync; leaving the block waits for the batches already submitted."""
    writer = BatchWriter(engine, workers, writer_mode(mode))
    try:
        yield writer
    finally:
        writer.close()
