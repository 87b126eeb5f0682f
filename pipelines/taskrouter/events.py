"""TaskRouter's Events resource (reservation events of a window) and CumulativeStatistics.

Events are read with the client's own paging, retries, rate limit, host pinning and secret
masking. The reservation events are picked on this side: ``EventType`` takes one type per
request, so filtering on the server costs a request per type for every window (eight instead of
one when nothing happened) and would miss a reservation event type TaskRouter adds later
(``server_filter=True`` does it anyway; ``benchmarks/events.py`` measures both). Only the
fields the warehouse uses are kept, so a window of events costs a fraction of its JSON in memory.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pipelines.taskrouter.client import TaskRouterClient
from pipelines.taskrouter.errors import TaskRouterAuthError, TaskRouterError, TaskRouterNotFound

RETENTION = timedelta(days=30)  # TaskRouter keeps events (and statistics) this long
RESERVATION_EVENT_TYPES = (
    "reservation.created", "reservation.accepted", "reservation.rejected", "reservation.timeout",
    "reservation.canceled", "reservation.rescinded", "reservation.wrapup", "reservation.completed",
)
KEPT_FIELDS = ("sid", "event_type", "event_date", "event_date_ms", "account_sid",
               "workspace_sid", "resource_type", "resource_sid")
KEPT_DATA = ("reservation_sid", "reservation_status", "worker_sid", "worker_name", "task_sid",
             "task_queue_sid", "task_queue_name", "task_channel_unique_name", "workflow_sid",
             "account_sid", "workspace_sid")
STATISTICS_FIELDS = ("reservations_created", "reservations_accepted", "reservations_rejected",
                     "reservations_timed_out", "reservations_canceled", "reservations_rescinded")


class EventsUnavailable(TaskRouterError):
    """The Events resource refused these credentials (403) or is not there (404): the sync
    falls back to reading every worker's list."""


class EventsRefusedWindow(TaskRouterError):
    """TaskRouter refused the window itself (400), e.g. a StartDate past its retention."""


class WindowTooLarge(Exception):
    """More events than the caller wanted in memory at once: read a shorter window.
    ``per_second`` is the density the first page showed, when known (to size the next one)."""

    def __init__(self, events: int, per_second: float | None = None) -> None:
        super().__init__(f"about {events} events in one window")
        self.events, self.per_second = events, per_second


@dataclass
class EventWindow:
    """The reservation events of ``[start, end]`` (both inclusive), deduplicated on sid."""

    workspace_sid: str
    start: datetime
    end: datetime
    events: list[Any] = field(default_factory=list)
    read: int = 0  # events of every type read
    pages: int = 0


def iso_second(moment: datetime) -> str:
    """TaskRouter's date form, to the second (its events are dated to the second)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def slim(event: Any) -> Any:
    """The fields the warehouse uses (and the ``event_data`` ones); anything else as it came."""
    if not isinstance(event, dict):
        return event
    kept = {name: event.get(name) for name in KEPT_FIELDS if name in event}
    data = event.get("event_data")
    if isinstance(data, dict):
        kept["event_data"] = {name: data[name] for name in KEPT_DATA if name in data}
    elif data is not None:
        kept["event_data"] = data  # JSON text or junk: the warehouse decides
    return kept


def is_reservation_event(event: Any) -> bool:
    if not isinstance(event, dict):
        return True  # not an object: kept, so the warehouse quarantines it with a reason
    event_type = event.get("event_type")
    if isinstance(event_type, str):
        return event_type.startswith("reservation.")
    return event.get("resource_type") == "reservation"


class _Collector:
    """Reservation events of one window, gathered by one or several reader threads."""

    def __init__(self, window: EventWindow, max_events: int | None) -> None:
        self.window, self.max_events = window, max_events
        self.seen: set[str] = set()
        self.lock = threading.Lock()
        self.oldest: str | None = None  # the oldest event_date text of the first page

    def take(self, page: list[Any]) -> None:
        kept = [slim(e) for e in page if is_reservation_event(e)]
        with self.lock:
            self.window.pages += 1
            self.window.read += len(page)
            for event in kept:
                sid = event.get("sid") if isinstance(event, dict) else None
                if isinstance(sid, str):
                    if sid in self.seen:
                        continue
                    self.seen.add(sid)
                self.window.events.append(event)
            if self.max_events is not None and len(self.window.events) > self.max_events:
                raise WindowTooLarge(len(self.window.events))


def _page_span(page: list[Any]) -> tuple[datetime, datetime] | None:
    """The oldest and newest ``event_date`` on a page, or None when one cannot be read."""
    moments = []
    for event in page:
        text = event.get("event_date") if isinstance(event, dict) else None
        try:
            moment = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
        except ValueError:
            return None
        if moment.tzinfo is None:
            return None
        moments.append(moment)
    return (min(moments), max(moments)) if moments else None


def density(first_page: list[Any]) -> float | None:
    """Events per second over the time a (full) first page spans, newest first."""
    span = _page_span(first_page)
    if span is None:
        return None
    oldest, newest = span
    return len(first_page) / max(1.0, (newest - oldest).total_seconds())


def slices_worth_reading(first_page: list[Any], start: datetime, readers: int) -> int:
    """How many time slices the rest of a window is worth cutting into: about one per two pages
    the first page's density leaves below it, at most ``readers``; 1 follows the pages."""
    span = _page_span(first_page)
    if span is None or readers < 2:
        return 1
    oldest, newest = span
    per_second = len(first_page) / max(1.0, (newest - oldest).total_seconds())
    pages_left = per_second * max(0.0, (oldest - start).total_seconds()) / max(1, len(first_page))
    return max(1, min(readers, int(pages_left // 2)))


def _slices(start: datetime, end: datetime, count: int) -> list[tuple[datetime, datetime]]:
    """``[start, end]`` as up to ``count`` ranges of whole seconds, inclusive, none shared."""
    first, last = int(start.timestamp()), int(end.timestamp())
    count = max(1, min(count, last - first + 1))
    bounds = [first + (last - first + 1) * i // count for i in range(count + 1)]
    return [(datetime.fromtimestamp(bounds[i], UTC), datetime.fromtimestamp(bounds[i + 1] - 1, UTC))
            for i in range(count) if bounds[i + 1] > bounds[i]]


def read_event_window(client: TaskRouterClient, workspace_sid: str, start: datetime,
                      end: datetime, *, server_filter: bool = False,
                      max_events: int | None = None) -> EventWindow:
    """Every reservation event of the window, all pages, newest-first order not assumed.

    The first page comes alone (a quiet window is one request). When many pages are left (by
    the first page's density), the rest of the window, up to the oldest second that page
    reached, is cut into time slices read at once, one reader per slice within the client's
    concurrency: a busy window costs its pages' round trips divided by that, not added up.
    Events are deduplicated on their sid (a second at a slice's edge may be read twice).

    Raises ``EventsUnavailable`` on 403/404, ``EventsRefusedWindow`` on 400 and
    ``WindowTooLarge`` once more than ``max_events`` reservation events were read.
    """
    window = EventWindow(workspace_sid, start, end)
    collector = _Collector(window, max_events)
    path = f"/v1/Workspaces/{workspace_sid}/Events"
    try:
        if server_filter:
            for event_type in RESERVATION_EVENT_TYPES:
                for page in client.iter_pages(path, {**_range(start, end), "EventType": event_type}):
                    collector.take(page)
            return window
        pages = client.iter_pages(path, _range(start, end))
        first = next(pages, [])
        collector.take(first)
        rest = next(pages, None)
        if rest is None:
            return window
        per_second = density(first)
        expected = (per_second or 0.0) * max(1.0, (end - start).total_seconds())
        if max_events is not None and per_second is not None and expected > 2 * max_events:
            # far more than wanted: say so now, one page in, rather than after reading them all
            pages.close()
            raise WindowTooLarge(int(expected), per_second)
        readers = slices_worth_reading(first, start, client.concurrency)
        if readers < 2:  # a few pages left, or no way to cut: follow them
            collector.take(rest)
            for page in pages:
                collector.take(page)
            return window
        pages.close()
        oldest = min(_page_span(first)[0], end)  # type: ignore[index]
        slices = _slices(start, oldest, readers)
        with ThreadPoolExecutor(len(slices), thread_name_prefix="events") as pool:
            reads = [pool.submit(_read_slice, client, path, a, b, collector) for a, b in slices]
            for read in reads:
                read.result()
    except (TaskRouterAuthError, TaskRouterNotFound) as error:
        if isinstance(error, TaskRouterAuthError) and error.status == 401:
            raise  # wrong credentials: nothing else will work either
        raise EventsUnavailable(
            f"TaskRouter refused its Events resource for workspace {workspace_sid} "
            f"(HTTP {error.status}): the sync reads every worker's list instead",
            status=error.status, code=error.code, path=error.path) from None
    except TaskRouterError as error:
        if error.status == 400:
            raise EventsRefusedWindow(error.message, status=400, code=error.code,
                                      path=error.path) from None
        raise
    return window


def _range(start: datetime, end: datetime) -> dict[str, str]:
    return {"StartDate": iso_second(start), "EndDate": iso_second(end)}


def _read_slice(client: TaskRouterClient, path: str, start: datetime, end: datetime,
                collector: _Collector) -> None:
    for page in client.iter_pages(path, _range(start, end)):
        collector.take(page)


def cumulative_statistics(client: TaskRouterClient, workspace_sid: str, start: datetime,
                          end: datetime) -> dict[str, int]:
    """TaskRouter's reservation counts for ``[start, end]`` (its own 30-day limit applies)."""
    body = client.get_json(
        f"{client.base_url}/v1/Workspaces/{workspace_sid}/CumulativeStatistics",
        {"StartDate": iso_second(start), "EndDate": iso_second(end)},
    )
    counts = {}
    for name in STATISTICS_FIELDS:
        try:
            counts[name] = int(body.get(name) or 0)
        except (TypeError, ValueError):
            raise TaskRouterError(f"CumulativeStatistics field {name} is not a number",
                                  path=f"/v1/Workspaces/{workspace_sid}/CumulativeStatistics"
                                  ) from None
    return counts
