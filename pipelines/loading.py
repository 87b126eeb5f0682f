"""The sync itself, as plain functions: list workers, page reservations, upsert, report.

No Dagster here, so the Dagster assets, the headless ``make sync``, the demo and the
benchmarks all run exactly this code path. The TaskRouter client fetches workers' pages on a
bounded thread pool (by default in a child process: ``pipelines.taskrouter.reader_process``)
while this thread normalizes and upserts, in batches of a few thousand
rows, each committed on its own: memory stays flat as the number of workers grows, and a
failure loses nothing that was already committed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Connection, Engine

from pipelines.figures import SyncFigures
from pipelines.memory import fewer_collections, limit_malloc_arenas, release_free_memory
from pipelines.taskrouter import TaskRouterClient, WorkerRead
from warehouse.deletions import clear_deleted, mark_deleted, mark_missing_workers
from warehouse.engine import run_in_transaction
from warehouse.history import record_status_changes
from warehouse.initial_load import indexes_deferred_if_first_load
from warehouse.normalize import Normalized, Rejected, normalize_reservations, normalize_workers
from warehouse.quarantine import quarantine
from warehouse.screen import StoredVersions, read_stored_versions, screen_records
from warehouse.upsert import UpsertCounts, upsert_reservations, upsert_workers

log = logging.getLogger(__name__)
DEFAULT_BATCH_ROWS = 10_000
PROGRESS_EVERY_S = 5.0
MAX_WORKERS_PER_BATCH = 2000  # workers with no reservations still need their deletions checked


ProgressCallback = Callable[[str], None]


def resolve_workspaces(client: TaskRouterClient, workspace_sids: Iterable[str] | None) -> list[str]:
    return [w["sid"] for w in client.list_workspaces(list(workspace_sids or []))]


def load_workers(
    client: TaskRouterClient, engine: Engine, workspace_sids: list[str]
) -> tuple[SyncFigures, dict[str, list[str]]]:
    """Upsert every worker of every workspace; returns the figures and the worker sids per workspace."""
    started = time.monotonic()
    figures = SyncFigures(workspaces=len(workspace_sids))
    listing: dict[str, list[str]] = {}
    before = client.stats.snapshot()
    for ws in workspace_sids:
        records = client.list_workers(ws)
        normalized = normalize_workers(records)
        figures.rejected += len(normalized.rejected)

        def work(conn: Connection, normalized: Normalized = normalized,
                 ws: str = ws) -> tuple[UpsertCounts, int, int]:
            now = datetime.now(UTC)
            counts = upsert_workers(conn, normalized.rows, now)
            quarantined = quarantine(conn, normalized.rejected, now, entity="worker")
            # the listing is complete: known workers missing from it are gone, reservations too
            gone = mark_missing_workers(conn, ws, normalized.rows["sid"].tolist(), now)
            return counts, quarantined, gone

        counts, quarantined, gone = run_in_transaction(engine, work, what="worker upsert")
        figures.add_counts(counts)
        figures.quarantined += quarantined
        figures.deleted_upstream += gone
        listing[ws] = normalized.rows["sid"].tolist()
        figures.workers += len(listing[ws])
        figures.rows_seen += len(records)
    _add_client_figures(figures, client, before)
    figures.seconds = time.monotonic() - started
    return figures, listing


def _add_client_figures(figures: SyncFigures, client: TaskRouterClient, before: dict[str, float]) -> None:
    after = client.stats.snapshot()
    figures.pages += int(after["pages"] - before["pages"])
    figures.requests += int(after["requests"] - before["requests"])
    figures.retries += int(after["retries"] - before["retries"])


class _Progress:
    """Logs a progress line every few seconds: workers, rows, requests, retries, rate, time left."""

    def __init__(self, total_workers: int, client: TaskRouterClient, emit: ProgressCallback | None,
                 every: float | None = None) -> None:
        self.total, self.client, self.emit = total_workers, client, emit
        self.every = PROGRESS_EVERY_S if every is None else every
        self.started = self.last = time.monotonic()
        self.before = client.stats.snapshot()

    def tick(self, figures: SyncFigures, force: bool = False) -> None:
        now = time.monotonic()
        if self.emit is None or (not force and now - self.last < self.every):
            return
        self.last = now
        elapsed = max(now - self.started, 1e-6)
        done = figures.workers_read
        rate = figures.rows_seen / elapsed
        eta = f"~{(elapsed / done) * (self.total - done):,.0f}s left" if done else "ETA unknown"
        stats = self.client.stats.snapshot()
        requests = int(stats["requests"] - self.before["requests"])
        retries = int(stats["retries"] - self.before["retries"])
        self.emit(
            f"progress: workers {done}/{self.total}, rows {figures.rows_seen} "
            f"(+{figures.inserted} new, {figures.updated} updated), requests {requests}, "
            f"retries {retries}, {rate:,.0f} rows/s, {eta}"
        )


class _Batch:
    """Records of whole workers, and the bookkeeping ``prepare_batch`` needs for deletions."""

    __slots__ = ("records", "complete", "vanished_sids")

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        # read to the last page, or 404: their stored reservations the reads miss are gone
        self.complete: list[str] = []
        # the records read from workers that then answered 404: gone upstream with the worker
        self.vanished_sids: list[str] = []


def _batches(reads: Iterator[WorkerRead], batch_rows: int, figures: SyncFigures,
             meter: _Progress | None = None) -> Iterator[_Batch]:
    """Group worker reads into batches of about ``batch_rows`` records, recording outcomes.

    A worker never spans two batches. A worker deleted while its pages were read (404 after
    page 1) keeps what was read: those records can never be fetched again, so they are loaded
    like any other, then marked deleted upstream with the rest of the worker's reservations
    (``prepare_batch``); the worker is listed as skipped.
    """
    batch = _Batch()
    for read in reads:
        figures.workers_read += 1
        if read.outcome != "failed":
            figures.rows_seen += len(read.records)
        if meter is not None:
            meter.tick(figures)
        if read.outcome == "failed":
            figures.workers_failed.append(read.worker_sid)
            figures.worker_failures[read.worker_sid] = (read.failure(), read.attempts)
            log.warning("worker %s could not be read: %s", read.worker_sid, read.error)
            continue
        if read.outcome == "not_found":
            figures.workers_skipped.append(read.worker_sid)
            if read.records:
                log.info("worker %s vanished while its reservations were read: the %d read "
                         "before the 404 are loaded, and all its reservations are marked deleted "
                         "upstream", read.worker_sid, len(read.records))
            else:
                log.info("worker %s vanished before its reservations were read: its stored "
                         "reservations are marked deleted upstream", read.worker_sid)
            batch.vanished_sids.extend(
                sid for r in read.records if type(r) is dict and type(sid := r.get("sid")) is str)
        batch.records.extend(read.records)
        batch.complete.append(read.worker_sid)
        if len(batch.records) >= batch_rows or len(batch.complete) >= MAX_WORKERS_PER_BATCH:
            yield batch
            batch = _Batch()
    if batch.records or batch.complete:
        yield batch


@dataclass
class BatchResult:
    counts: UpsertCounts
    rejected: list[Rejected]
    quarantined: int = 0
    history_rows: int = 0
    deleted_upstream: int = 0
    returned_upstream: int = 0
    write_seconds: float = 0.0  # the transaction's wall time in the writer


@dataclass
class PreparedBatch:
    """A batch screened and normalized, ready for its write transaction (``write_batch``)."""

    rows: Normalized
    unchanged: int
    returned_sids: list[str]
    gone: list[str]
    expect_new: bool = False  # a first load's batch: nothing stored to compare with (screen=False)


def prepare_batch(engine: Engine, records: list[Any], complete_workers: list[str] | None = None,
                  *, screen: bool = True, vanished_sids: list[str] | None = None) -> PreparedBatch:
    """The Python half of a batch: screen against the stored versions, then normalize the rest.

    The screen reads the stored versions outside the write transaction, so the transaction
    only writes what can change something.

    Args:
        records: the batch's reservation records, as read.
        complete_workers: the workers whose full lists ``records`` hold (None when the reads
            were filtered or partial): their stored reservations missing from ``records`` are
            gone upstream.
        screen: False for a first load (its screen index is deferred and nothing is stored):
            skips the read; the upsert still classifies every row exactly.
        vanished_sids: records whose worker then answered 404 (deleted upstream): stored, then
            marked deleted with the worker's other reservations, since no sync can read them
            again.
    """
    stored = StoredVersions()
    if screen:
        workers = complete_workers if complete_workers is not None else sorted(
            {w for r in records if isinstance(r, dict) and isinstance(w := r.get("worker_sid"), str)})
        with engine.connect() as conn:
            stored = read_stored_versions(conn, workers)
    screened = screen_records(records, stored)
    gone = stored.gone(screened.seen_sids) if complete_workers is not None else []
    if vanished_sids and complete_workers is not None:
        gone.extend(vanished_sids)  # marked after the upsert that stores them (``write_batch``)
    return PreparedBatch(normalize_reservations(screened.pending), screened.unchanged,
                         screened.returned_sids, gone, expect_new=not screen)


def write_batch(engine: Engine, prepared: PreparedBatch, now: datetime | None = None) -> BatchResult:
    """The database half: upsert, status history, quarantine and deletions in ONE transaction
    under the writer lock; replayed whole if the database aborts it as a deadlock."""
    normalized = prepared.rows

    def work(conn: Connection) -> BatchResult:
        stamp = now or datetime.now(UTC)
        counts = upsert_reservations(conn, normalized.rows, stamp, expect_new=prepared.expect_new)
        counts.unchanged += prepared.unchanged
        result = BatchResult(counts, normalized.rejected)
        result.history_rows = record_status_changes(conn, counts.written_rows, stamp)
        result.quarantined = quarantine(conn, normalized.rejected, stamp)
        returned = set(prepared.returned_sids) | set(counts.returned_sids)
        if returned:
            result.returned_upstream = clear_deleted(conn, returned)
        if prepared.gone:
            result.deleted_upstream = mark_deleted(conn, prepared.gone, stamp)
        return result

    started = time.perf_counter()
    result = run_in_transaction(engine, work, what="reservation batch")
    result.write_seconds = time.perf_counter() - started
    return result


def load_batch(engine: Engine, records: list[Any], complete_workers: list[str] | None = None,
               now: datetime | None = None) -> BatchResult:
    """Screen, normalize and load one batch: upsert, status history, quarantine, and (for
    ``complete_workers``, whose full reservation lists ``records`` hold) upstream deletions.
    Pass ``complete_workers=None`` when the reads were filtered or partial."""
    return write_batch(engine, prepare_batch(engine, records, complete_workers), now)


def load_reservations(
    client: TaskRouterClient,
    engine: Engine,
    workers_by_workspace: dict[str, list[str]],
    *,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    status: str | None = None,
    progress: ProgressCallback | None = None,
    on_rejects: Callable[[list[Rejected]], None] | None = None,
) -> SyncFigures:
    """Read every listed worker's reservations and upsert them batch by batch.

    Returns the figures; workers that vanished (404) are listed as skipped (the records read
    before the 404 are loaded, and all their reservations marked deleted upstream), workers
    that could not be read are listed too (the caller decides to fail the run after everything
    else loaded). Each batch also writes the status history, quarantines rejects and, for
    workers read completely (or 404), marks reservations TaskRouter no longer returns.
    """
    started = time.monotonic()
    before = client.stats.snapshot()
    total = sum(len(v) for v in workers_by_workspace.values())
    figures = SyncFigures(workspaces=len(workers_by_workspace), workers=total)
    meter = _Progress(total, client, progress)

    limit_malloc_arenas()

    def collect(batch: BatchResult) -> None:
        release_free_memory()
        figures.add_counts(batch.counts)
        figures.rejected += len(batch.rejected)
        figures.quarantined += batch.quarantined
        figures.history_rows += batch.history_rows
        figures.deleted_upstream += batch.deleted_upstream
        figures.returned_upstream += batch.returned_upstream
        figures.write_seconds += batch.write_seconds
        if batch.rejected and on_rejects is not None:
            on_rejects(batch.rejected)
        figures.batches += 1
        meter.tick(figures)

    # A pipeline: the reader threads fetch while this thread screens and normalizes batch N+1
    # and one writer thread commits batch N (mostly SQL, run without the GIL where the driver
    # allows). Batches commit one at a time, in order: a deeper queue or one shared transaction
    # bought nothing (benchmarks/results/design-notes.md, "The write pipeline").
    # Leaving the block waits for the batch being committed.
    # A first load builds its secondary indexes once at the end (warehouse.initial_load).
    with (indexes_deferred_if_first_load(engine) as first_load, fewer_collections(),
          ThreadPoolExecutor(1, thread_name_prefix="writer") as writer):
        writing: Future[BatchResult] | None = None
        for ws, worker_sids in workers_by_workspace.items():
            # a first load writes every row: worth reading in a child process (client's "auto")
            reads = client.read_reservations(ws, worker_sids, status=status,
                                             expect_many_writes=first_load.empty)
            for batch in _batches(reads, batch_rows, figures, meter):
                # a ReservationStatus filter reads a subset: it can prove no deletion
                preparing = time.perf_counter()
                records = batch.records
                prepared = prepare_batch(engine, records, batch.complete if status is None else None,
                                         screen=not first_load.deferred,
                                         vanished_sids=batch.vanished_sids)
                # a load that adopted a dead one's deferral meets stored rows: stop expecting new
                prepared.expect_new = prepared.expect_new and not (figures.updated or figures.unchanged)
                figures.prepare_seconds += time.perf_counter() - preparing
                del records, batch
                if writing is not None:
                    collect(writing.result())
                writing = writer.submit(write_batch, engine, prepared)
                del prepared
        if writing is not None:
            collect(writing.result())
    figures.index_build_seconds = first_load.build_seconds
    _add_client_figures(figures, client, before)
    figures.seconds = time.monotonic() - started
    meter.tick(figures, force=True)
    return figures


def list_workers_by_workspace(client: TaskRouterClient, workspace_sids: list[str]) -> dict[str, list[str]]:
    return {ws: [w["sid"] for w in client.list_workers(ws) if isinstance(w, dict) and w.get("sid")]
            for ws in workspace_sids}
