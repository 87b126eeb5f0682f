"""The sync's events half, as plain functions: which list sweeps are due, and following each
workspace's Events since its cursor.

TaskRouter deletes a finished task's reservations minutes after it ends, and its worker lists
can only be read whole, one request per worker at least. Its Events resource keeps every state
change for 30 days. So a sync reads worker lists only for a full sweep (``plan_sweeps``: on the
first sync, when the last one is older than ``sweep_interval`` on TaskRouter's clock, after a
gap past the retention, while the Events resource is refused), then reads the events since the
workspace's cursor in bounded windows, oldest first, each applied and committed with the cursor
(``warehouse.events``). The sweep goes first so that a first sync stores the lists in bulk and
the events only add what the lists cannot show: the exact transitions, and the reservations
that were created and deleted in between. Workers whose new reservations' creation was not in
the events read, and workspaces whose Events are refused, have their lists read right there.
All times come from TaskRouter's ``Date`` header, never from this host's clock.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine

from pipelines.figures import SyncFigures, merge_figures
from pipelines.loading import DEFAULT_BATCH_ROWS, load_reservations
from pipelines.memory import limit_malloc_arenas, release_free_memory
from pipelines.taskrouter import (
    TaskRouterAuthError,
    TaskRouterClient,
    TaskRouterError,
    UnsafeNextPageUrl,
)
from pipelines.taskrouter.events import (
    RETENTION,
    EventsRefusedWindow,
    EventsUnavailable,
    WindowTooLarge,
    read_event_window,
)
from warehouse.engine import run_in_transaction
from warehouse.events import apply_event_window
from warehouse.feed import Cursor, read_cursors, record_gap, write_cursor

log = logging.getLogger(__name__)
# A StartDate this much inside the retention is never refused for being a moment too old.
RETENTION_MARGIN = timedelta(hours=1)
FIRST_SPAN = timedelta(hours=1)  # a catch-up's first window; later ones follow the density
MIN_SPAN = timedelta(minutes=1)
MAX_SPAN = timedelta(hours=24)
HARD_CAP = 2  # a window may hold this many times window_events before it is split


@dataclass(frozen=True)
class FeedOptions:
    """How the sync follows events (``TASKROUTER_EVENTS`` and friends, docs/events.md)."""

    enabled: bool = True
    sweep_interval: timedelta = timedelta(minutes=60)
    overlap: timedelta = timedelta(seconds=120)
    window_events: int = 5_000
    server_filter: bool = False  # EventType on the server: one request per type (benchmarks)

    @classmethod
    def from_settings(cls, settings: Any) -> FeedOptions:
        return cls(enabled=settings.events,
                   sweep_interval=timedelta(minutes=settings.sweep_interval_minutes),
                   overlap=timedelta(seconds=settings.events_overlap_seconds),
                   window_events=settings.events_window_events)


@dataclass
class SweepPlan:
    """The workspaces whose every worker list this sync reads (workspace -> why), and
    TaskRouter's time when the sync began: a sweep that completes is recorded as of then."""

    whole: dict[str, str] = field(default_factory=dict)
    started_at: datetime | None = None
    notices: list[str] = field(default_factory=list)


@dataclass
class FeedResult:
    figures: SyncFigures
    notices: list[str] = field(default_factory=list)  # gaps and refusals, as sentences
    swept: list[str] = field(default_factory=list)  # workspaces read whole here (Events refused)
    fresh_workers: dict[str, list[str]] = field(default_factory=dict)  # single workers read here


def taskrouter_now(client: TaskRouterClient, workspace_sids: list[str]) -> tuple[datetime, bool]:
    """TaskRouter's time (its ``Date`` header), asking it once if no answer carried one yet;
    (this host's time, False) when TaskRouter sends no ``Date`` at all."""
    now = client.clock.now()
    if now is None and workspace_sids:
        client.get_json(f"{client.base_url}/v1/Workspaces/{workspace_sids[0]}")
        now = client.clock.now()
    if now is None:
        return datetime.now(UTC), False
    return now.replace(microsecond=0), True


def sweep_reason(cursor: Cursor, now: datetime, options: FeedOptions) -> str | None:
    """Why every worker's list of the workspace must be read this sync, or None."""
    if not options.enabled:
        return "events feed off (TASKROUTER_EVENTS=0)"
    if cursor.events_through is None:
        return "first sync"
    if cursor.events_through - options.overlap < now - RETENTION + RETENTION_MARGIN:
        return "events gap past the 30-day retention"
    if cursor.events_refused_at is not None and now - cursor.events_refused_at < _refusal_retry(
            options):
        return "Events refused by TaskRouter (asked again hourly)"
    if cursor.last_sweep_at is None:
        return "first list sweep"
    if now - cursor.last_sweep_at >= options.sweep_interval:
        return "sweep interval elapsed"
    return None


def _refusal_retry(options: FeedOptions) -> timedelta:
    return max(options.sweep_interval, timedelta(hours=1))


def plan_sweeps(client: TaskRouterClient, engine: Engine, workspace_sids: list[str],
                options: FeedOptions) -> SweepPlan:
    """The full list sweeps this sync needs, from the persisted cursors and TaskRouter's clock."""
    now, trusted = taskrouter_now(client, workspace_sids)
    plan = SweepPlan(started_at=now)
    if not trusted:
        plan.notices.append("TaskRouter sent no Date header: the sync follows this host's clock")
    cursors = read_cursors(engine)
    for ws in workspace_sids:
        reason = sweep_reason(cursors.get(ws, Cursor(ws)), now, options)
        if reason is not None:
            plan.whole[ws] = reason
    return plan


def follow_events(client: TaskRouterClient, engine: Engine, workspace_sids: list[str],
                  options: FeedOptions, progress: Callable[[str], None] | None = None,
                  batch_rows: int = DEFAULT_BATCH_ROWS, now: datetime | None = None,
                  failed_workers: frozenset[str] | set[str] = frozenset()) -> FeedResult:
    """Apply every workspace's events since its cursor, up to ``now`` (TaskRouter's time; asked
    of its Date header when not given); read the lists events cannot replace, except those of
    ``failed_workers`` (this sync's list reads already failed them)."""
    started = time.monotonic()
    before = client.stats.snapshot()
    figures = SyncFigures(workspaces=len(workspace_sids))
    result = FeedResult(figures)
    if not options.enabled:
        return result
    if now is None:
        now, _ = taskrouter_now(client, workspace_sids)
    limit_malloc_arenas()  # before the readers' threads: each would otherwise get an arena
    cursors = read_cursors(engine)
    parts = [figures]
    for ws in workspace_sids:
        cursor = cursors.get(ws, Cursor(ws))
        if cursor.events_refused_at is not None and now - cursor.events_refused_at < (
                _refusal_retry(options)):
            continue  # the plan swept it
        try:
            unsettled = _follow_workspace(client, engine, cursor, now, options, result, progress)
        except (TaskRouterAuthError, UnsafeNextPageUrl):
            raise  # nothing else will work either
        except TaskRouterError as error:
            # this workspace's cursor stays at its last committed window: the next sync resumes
            # there; the other workspaces go on, and the caller fails the run at the end
            figures.events_failed.append(ws)
            result.notices.append(f"events of workspace {ws} could not be read ({error}); "
                                  "what was applied stays, the next sync resumes from there")
            continue
        if ws in result.swept:
            listing = {ws: [w["sid"] for w in client.list_workers(ws)
                            if isinstance(w, dict) and isinstance(w.get("sid"), str)]}
            parts.append(load_reservations(client, engine, listing, batch_rows=batch_rows,
                                           progress=progress))
        elif unsettled - set(failed_workers):
            result.fresh_workers[ws] = sorted(unsettled - set(failed_workers))
            parts.append(load_reservations(client, engine, {ws: result.fresh_workers[ws]},
                                           batch_rows=batch_rows, progress=progress))
    result.figures = merged = merge_figures(parts)
    merged.workspaces = len(workspace_sids)
    after = client.stats.snapshot()
    merged.pages = int(after["pages"] - before["pages"])
    merged.requests = int(after["requests"] - before["requests"])
    merged.retries = int(after["retries"] - before["retries"])
    merged.seconds = time.monotonic() - started
    for notice in result.notices:
        log.warning(notice)
    return result


def _follow_workspace(client: TaskRouterClient, engine: Engine, cursor: Cursor, now: datetime,
                      options: FeedOptions, result: FeedResult,
                      progress: Callable[[str], None] | None) -> set[str]:
    """Apply the workspace's events window by window; returns the workers whose new
    reservations' creation the events read did not include (their lists tell it)."""
    ws, figures = cursor.workspace_sid, result.figures
    unsettled: set[str] = set()
    oldest = now - RETENTION + RETENTION_MARGIN
    first_fields: dict[str, Any] = {}
    if cursor.events_refused_at is not None:
        first_fields |= {"events_refused_at": None, "events_refused_reason": None}
    if cursor.events_through is None:
        start = oldest
        first_fields["coverage_start"] = start
    else:
        start = cursor.events_through - options.overlap
        if start < oldest:
            lost_from = cursor.events_through
            _record_gap(engine, ws, lost_from, oldest, result)
            start = oldest
    span = min(now - start, FIRST_SPAN) if now - start > MAX_SPAN else now - start
    span = max(span, MIN_SPAN)

    def read(begin: datetime, until: datetime, length: timedelta) -> Any:
        cap = None if length <= MIN_SPAN else options.window_events * HARD_CAP
        return read_event_window(client, ws, begin, until, server_filter=options.server_filter,
                                 max_events=cap)

    # While a window is applied, the next one is read: a catch-up of many windows overlaps
    # TaskRouter's round trips with the warehouse's writes. At most two windows in memory.
    with ThreadPoolExecutor(1, thread_name_prefix="events-ahead") as ahead:
        pending: tuple[datetime, datetime, Any] | None = None
        while pending is not None or start < now:
            if pending is None:
                end = min(start + span, now)
                pending = (start, end, ahead.submit(read, start, end, span))
            begin, until, reading = pending
            pending = None
            try:
                window = reading.result()
            except WindowTooLarge as error:
                shorter = (until - begin) / 2
                if error.per_second:  # sized by what its first page showed
                    shorter = min(shorter, timedelta(seconds=options.window_events
                                                     / error.per_second))
                start, span = begin, max(MIN_SPAN, shorter)
                continue
            except EventsUnavailable as error:
                _record_refusal(engine, ws, now, error, result)
                return set()
            except EventsRefusedWindow as error:
                if begin - oldest < 2 * RETENTION_MARGIN:  # our clock and its retention disagree
                    _record_gap(engine, ws, begin, begin + RETENTION_MARGIN, result,
                                reason=f"TaskRouter refused the window: {error.message}")
                    start = begin + RETENTION_MARGIN
                    continue
                raise
            seconds = max((until - begin).total_seconds(), 1.0)
            density = max(len(window.events), 1) / seconds
            span = min(MAX_SPAN, max(MIN_SPAN, timedelta(seconds=options.window_events / density)))
            start = until
            if start < now:
                end = min(start + span, now)
                pending = (start, end, ahead.submit(read, start, end, span))
            records, window.events = window.events, []  # held by the apply alone
            counts = apply_event_window(engine, records, ws, through=until,
                                        now=datetime.now(UTC), cursor_fields=first_fields)
            del records
            release_free_memory()  # the window's pages go back to the OS (pipelines.memory)
            first_fields = {}
            _add_window(figures, window, counts)
            unsettled |= counts.unsettled_workers
            if progress is not None and (now - until > timedelta(hours=1)
                                         or figures.event_windows % 20 == 0):
                progress(f"events {ws}: through {until:%Y-%m-%d %H:%M}Z, {counts.events} "
                         f"reservation events in this window, {figures.events_applied:,} in all")
    return unsettled


def _add_window(figures: SyncFigures, window: Any, counts: Any) -> None:
    figures.event_windows += 1
    figures.events_read += window.read
    figures.events_applied += counts.events
    figures.event_reservations += counts.reservations
    figures.inserted += counts.inserted
    figures.updated += counts.updated
    figures.filled += counts.filled
    figures.history_rows += counts.history_rows
    figures.rejected += counts.rejected
    figures.quarantined += counts.quarantined
    figures.events_estimated += counts.estimated


def _record_gap(engine: Engine, ws: str, start: datetime, end: datetime, result: FeedResult,
                reason: str = "events older than TaskRouter's 30-day retention were never read") -> None:
    run_in_transaction(engine, lambda conn: record_gap(conn, ws, start, end, reason),
                       what="events gap")
    result.figures.event_gaps += 1
    result.notices.append(
        f"events gap in workspace {ws}: TaskRouter's events from {start:%Y-%m-%d %H:%M}Z to "
        f"{end:%Y-%m-%d %H:%M}Z were never read and are gone (it keeps 30 days); reservations "
        "created and deleted in that time are missing (this sync swept every worker's list). "
        "See the event_gaps table and docs/events.md")


def _record_refusal(engine: Engine, ws: str, now: datetime, error: EventsUnavailable,
                    result: FeedResult) -> None:
    reason = f"HTTP {error.status}" + (f", Twilio error {error.code}" if error.code else "")
    run_in_transaction(engine, lambda conn: write_cursor(
        conn, ws, events_refused_at=now, events_refused_reason=reason), what="events refusal")
    result.swept.append(ws)
    result.notices.append(
        f"TaskRouter refused the Events resource for workspace {ws} ({reason}): the sync reads "
        "every worker's list instead, as it will until Events are allowed (asked again hourly). "
        "Grant the credentials access to TaskRouter Events, or set TASKROUTER_EVENTS=0 to "
        "stop asking")


def record_sweeps(engine: Engine, workspace_sids: list[str], started_at: datetime | None) -> None:
    """Remember that these workspaces' full list sweep, begun at ``started_at`` (TaskRouter's
    time), completed: the next is due ``sweep_interval`` later."""
    if started_at is None or not workspace_sids:
        return

    def work(conn: Any) -> None:
        for ws in workspace_sids:
            write_cursor(conn, ws, last_sweep_at=started_at)

    run_in_transaction(engine, work, what="sweep record")
