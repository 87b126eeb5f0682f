"""TaskRouter's Events resource (reservation events of a window) and CumulativeStatistics.

Events are read with the client's own paging, retries, rate limit, host pinning and secret
masking. The reservation events are picked on this side: ``EventType`` takes one type per
request, so filtering on the server costs a request per type for every window (eight instead of
one when nothing happened) and would miss a reservation event type TaskRouter adds later
(``server_filter=True`` does it anyway; ``benchmarks/events.py`` measures both). Only the
fields the warehouse uses are kept, so a window of events costs a fraction of its JSON in memory.
"""

from __future__ import annotations

from collections.abc import Iterable
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
    """More reservation events than the caller wanted in memory at once: read a shorter window."""

    def __init__(self, events: int) -> None:
        super().__init__(f"{events} reservation events in one window")
        self.events = events


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


def read_event_window(client: TaskRouterClient, workspace_sid: str, start: datetime,
                      end: datetime, *, server_filter: bool = False,
                      max_events: int | None = None) -> EventWindow:
    """Every reservation event of the window, all pages, newest-first order not assumed.

    Raises ``EventsUnavailable`` on 403/404, ``EventsRefusedWindow`` on 400 and
    ``WindowTooLarge`` once more than ``max_events`` reservation events were read.
    """
    window = EventWindow(workspace_sid, start, end)
    path = f"/v1/Workspaces/{workspace_sid}/Events"
    params = {"StartDate": iso_second(start), "EndDate": iso_second(end)}
    seen: set[str] = set()
    types: Iterable[str | None] = RESERVATION_EVENT_TYPES if server_filter else (None,)
    try:
        for event_type in types:
            wanted = {**params, "EventType": event_type} if event_type else params
            for page in client.iter_pages(path, wanted):
                window.pages += 1
                window.read += len(page)
                for event in page:
                    if not is_reservation_event(event):
                        continue
                    sid = event.get("sid") if isinstance(event, dict) else None
                    if isinstance(sid, str):
                        if sid in seen:
                            continue
                        seen.add(sid)
                    window.events.append(slim(event))
                if max_events is not None and len(window.events) > max_events:
                    raise WindowTooLarge(len(window.events))
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
