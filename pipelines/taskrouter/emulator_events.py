"""The emulator's Events log: every state change of its world, kept 30 days, as TaskRouter does.

Events are held in compact numpy columns (one row is ~25 bytes; the JSON is built only for the
page asked for), appended in time order, so a window is two binary searches. The Events resource
answers newest first, pages by an opaque token (the position of the last event sent), filters
on the documented parameters, and refuses a ``StartDate`` older than the retention (or, as a
fault, silently answers from the retention's start). ``CumulativeStatistics`` counts the same
log, so the warehouse can be reconciled against it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

RETENTION_SECONDS = 30 * 86400

# event kinds: (event_type, resource_type, reservation status or None)
KINDS: tuple[tuple[str, str, str | None], ...] = (
    ("reservation.created", "reservation", "pending"),
    ("reservation.accepted", "reservation", "accepted"),
    ("reservation.rejected", "reservation", "rejected"),
    ("reservation.timeout", "reservation", "timeout"),
    ("reservation.canceled", "reservation", "canceled"),
    ("reservation.rescinded", "reservation", "rescinded"),
    ("reservation.wrapup", "reservation", "wrapping"),
    ("reservation.completed", "reservation", "completed"),
    ("task.created", "task", None),
    ("task.completed", "task", None),
    ("task.canceled", "task", None),
    ("task.deleted", "task", None),
    ("worker.activity.update", "worker", None),
)
KIND_CODE = {name: code for code, (name, _, _) in enumerate(KINDS)}
TASK_CREATED, TASK_COMPLETED, TASK_CANCELED, TASK_DELETED, WORKER_ACTIVITY = range(8, 13)
# the world's status codes (emulator_world.STATUSES order) -> the reservation event announcing it
STATUS_EVENT = np.array([0, 1, 6, 7, 2, 3, 4, 5], dtype=np.int8)
# CumulativeStatistics fields and the event kind each counts
STATISTICS = {
    "reservations_created": 0,
    "reservations_accepted": 1,
    "reservations_rejected": 2,
    "reservations_timed_out": 3,
    "reservations_canceled": 4,
    "reservations_rescinded": 5,
}

EVENT_DTYPE = np.dtype([
    ("ms", np.int64),  # event_date_ms
    ("kind", np.int8),
    ("worker", np.int32),  # the world's global worker index
    ("serial", np.int64),  # the reservation's serial (its WR sid); the task's for task events
    ("task", np.int64),
])


@dataclass
class EventQuery:
    """A parsed ``GET .../Events``: the window in epoch ms (inclusive) and the filters."""

    start_ms: int
    end_ms: int
    event_type: str | None = None
    reservation: int | None = None  # serial
    task: int | None = None
    worker: int | None = None  # global worker index
    task_queue: int | None = None
    workflow: int | None = None  # workspace index (one workflow per workspace)
    channel: str | None = None
    sequence: int | None = None  # Sid=EV...: the event's position


class EventLog:
    """One workspace's events, oldest first; positions are stable (they make the event sids)."""

    def __init__(self) -> None:
        self._chunks: list[np.ndarray] = []
        self._all: np.ndarray = np.empty(0, dtype=EVENT_DTYPE)
        self.first_sequence = 0  # global sequence number of position 0 (sids are unique per world)

    def __len__(self) -> int:
        return len(self.events)

    @property
    def events(self) -> np.ndarray:
        if self._chunks:
            self._all = np.concatenate([self._all, *self._chunks])
            self._chunks.clear()
        return self._all

    def append(self, batch: np.ndarray) -> None:
        """Add events that all happened after the ones held (``batch`` sorted by time)."""
        if len(batch):
            self._chunks.append(batch)

    def clear(self) -> None:
        self._chunks.clear()
        self._all = np.empty(0, dtype=EVENT_DTYPE)

    def window(self, query: EventQuery, channels: Callable[[np.ndarray], np.ndarray],
               queues: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """Positions of the events matching ``query``, newest first."""
        events = self.events
        ms = events["ms"]
        lo = int(np.searchsorted(ms, query.start_ms, side="left"))
        hi = int(np.searchsorted(ms, query.end_ms, side="right"))
        positions = np.arange(lo, hi, dtype=np.int64)
        chosen = events[lo:hi]
        keep = np.ones(len(chosen), dtype=bool)
        if query.event_type is not None:
            code = KIND_CODE.get(query.event_type, -1)
            keep &= chosen["kind"] == code
        if query.reservation is not None:
            keep &= (chosen["serial"] == query.reservation) & (chosen["kind"] < TASK_CREATED)
        if query.task is not None:
            keep &= chosen["task"] == query.task
        if query.worker is not None:  # the worker's reservations and its own events
            keep &= (chosen["worker"] == query.worker) & (
                (chosen["kind"] < TASK_CREATED) | (chosen["kind"] == WORKER_ACTIVITY))
        if query.task_queue is not None:
            keep &= queues(chosen["task"]) == query.task_queue
        if query.workflow is not None and query.workflow != 0:
            keep &= False  # one workflow per workspace: any other sid matches nothing
        if query.channel is not None:
            keep &= channels(chosen["task"]) == query.channel
        if query.sequence is not None:
            keep &= positions + self.first_sequence == query.sequence
        return positions[keep][::-1]

    def statistics(self, start_ms: int, end_ms: int) -> dict[str, int]:
        """CumulativeStatistics' reservation counts for ``[start_ms, end_ms]``."""
        events = self.events
        lo = int(np.searchsorted(events["ms"], start_ms, side="left"))
        hi = int(np.searchsorted(events["ms"], end_ms, side="right"))
        counts = np.bincount(events["kind"][lo:hi].astype(np.int64), minlength=len(KINDS))
        return {name: int(counts[code]) for name, code in STATISTICS.items()}


def build_batch(ms: np.ndarray, kind: np.ndarray, worker: np.ndarray, serial: np.ndarray,
                task: np.ndarray) -> np.ndarray:
    """Columns -> one event batch sorted by time, then a fixed tie-break (so the order, and
    with it every event sid, does not depend on how the clock was advanced)."""
    batch = np.empty(len(ms), dtype=EVENT_DTYPE)
    batch["ms"], batch["kind"], batch["worker"] = ms, kind, worker
    batch["serial"], batch["task"] = serial, task
    order = np.lexsort((batch["kind"], batch["serial"], batch["worker"], batch["ms"]))
    return batch[order]


def event_millis(seconds: np.ndarray, serial: np.ndarray, step: int | np.ndarray) -> np.ndarray:
    """``event_date_ms`` for events at whole ``seconds``: a stable offset within the second that
    grows with the reservation's step, so one reservation's events keep their order."""
    offset = (np.asarray(step, dtype=np.int64) * 200 + (serial * 37) % 200) % 1000
    return seconds.astype(np.int64) * 1000 + offset


def render_event(world: Any, workspace_sid: str, event: np.void, sequence: int) -> dict[str, Any]:
    """One event as TaskRouter's JSON (``world`` is the emulator's ``World``)."""
    name, resource_type, status = KINDS[int(event["kind"])]
    ms = int(event["ms"])
    date = world.iso(ms // 1000)
    worker = world.worker_by_index(int(event["worker"]))
    task = int(event["task"])
    ws_url = f"{world.resource_base_url}/v1/Workspaces/{workspace_sid}"
    task_sid = world.task_sid(task)
    queue_sid, queue_name = world.task_queue(workspace_sid, task)
    data: dict[str, Any] = {
        "account_sid": world.account_sid,
        "workspace_sid": workspace_sid,
        "workspace_name": world.workspaces[workspace_sid]["friendly_name"],
        "task_sid": task_sid,
        "task_queue_sid": queue_sid,
        "task_queue_name": queue_name,
        "task_channel_unique_name": world.task_channel(task),
        "workflow_sid": world.workflow_sid(workspace_sid),
        "workflow_name": "Default Fifo Workflow",
        "task_priority": "0",  # TaskRouter sends some numbers as strings
        "task_date_created": world.iso(world.task_created(task)),
        "task_age": str(max(0, ms // 1000 - world.task_created(task))),
        "timestamp": str(ms),
    }
    resource_sid, resource_url = task_sid, f"{ws_url}/Tasks/{task_sid}"
    if status is not None:
        reservation_sid = world.reservation_sid(int(event["serial"]))
        data.update({
            "reservation_sid": reservation_sid,
            "reservation_status": status,
            "reservation_timeout": "120",
            "worker_sid": worker.sid,
            "worker_name": worker.friendly_name,
            "worker_activity_name": "Busy" if status in ("accepted", "wrapping") else "Available",
        })
        resource_sid, resource_url = reservation_sid, f"{resource_url}/Reservations/{reservation_sid}"
    elif name == "worker.activity.update":
        data.update({"worker_sid": worker.sid, "worker_name": worker.friendly_name,
                     "worker_activity_name": "Busy"})
        resource_sid = worker.sid
        resource_url = f"{ws_url}/Workers/{worker.sid}"
    sid = world.event_sid(sequence)
    return {
        "account_sid": world.account_sid,
        "actor_sid": worker.sid if status is not None else workspace_sid,
        "actor_type": "worker" if status is not None else "workspace",
        "actor_url": f"{ws_url}/Workers/{worker.sid}" if status is not None else ws_url,
        "description": f"{name} for {resource_sid}",
        "event_data": data,
        "event_date": date,
        "event_date_ms": ms,
        "event_type": name,
        "resource_sid": resource_sid,
        "resource_type": resource_type,
        "resource_url": resource_url,
        "sid": sid,
        "source": "twilio",
        "source_ip_address": "127.0.0.1",
        "url": f"{ws_url}/Events/{sid}",
        "workspace_sid": workspace_sid,
    }


class EventsRequestError(ValueError):
    """A request TaskRouter would answer 400 (code 20001), with its message."""


def parse_when(text: str, name: str) -> int:
    """An ISO 8601 date-time (``Z``, an offset, or none for GMT) as epoch seconds."""
    from datetime import UTC, datetime

    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise EventsRequestError(f"{name} must be an ISO 8601 date-time, not {text!r}") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return int(value.timestamp())


def requested_window(clock: int, query: dict[str, str], refuse_old: bool = True) -> tuple[int, int]:
    """``[start, end]`` in epoch seconds from StartDate/EndDate/Minutes, as TaskRouter reads
    them: without StartDate, the last ``Minutes`` (default 15); EndDate defaults to now; a
    start before the 30-day retention is refused (or, ``refuse_old=False``, cut to it)."""
    end = parse_when(query["EndDate"], "EndDate") if query.get("EndDate") else clock
    if query.get("StartDate"):
        start = parse_when(query["StartDate"], "StartDate")
    else:
        try:
            minutes = int(query.get("Minutes", "15"))
        except ValueError:
            raise EventsRequestError("Minutes must be a whole number") from None
        start = min(end, clock) - minutes * 60
    oldest = clock - RETENTION_SECONDS
    if start < oldest:
        if refuse_old:
            raise EventsRequestError(
                "StartDate is more than 30 days in the past: events are kept for 30 days")
        start = oldest
    if end < start:
        raise EventsRequestError("EndDate is before StartDate")
    return start, min(end, clock)


def event_query(world: Any, workspace_sid: str, query: dict[str, str], refuse_old: bool,
                lag_seconds: int) -> EventQuery:
    """A ``GET .../Events`` request as an ``EventQuery`` (filters by sid resolve to numbers;
    a sid that is not one of the world's matches nothing)."""
    start, end = requested_window(world.clock, query, refuse_old)
    end = min(end, world.clock - lag_seconds)  # events not visible yet (a fault)
    nothing = -1

    def number(name: str, resolve: Callable[[str], int | None]) -> int | None:
        text = query.get(name)
        if not text:
            return None
        value = resolve(text)
        return nothing if value is None else value

    def worker_index(sid: str) -> int | None:
        worker = world.workers.get(workspace_sid, {}).get(sid)
        return None if worker is None else worker.index

    sequence = number("Sid", world.event_sequence)
    return EventQuery(
        start_ms=start * 1000, end_ms=end * 1000 + 999,
        event_type=query.get("EventType") or None,
        reservation=number("ReservationSid", world.reservation_serial),
        task=number("TaskSid", world.task_number),
        worker=number("WorkerSid", worker_index),
        task_queue=number("TaskQueueSid", world.task_queue_index),
        workflow=number("WorkflowSid", lambda sid: 0 if sid == world.workflow_sid(workspace_sid)
                        else None),
        channel=query.get("TaskChannel") or None,
        sequence=sequence,
    )


def statistics_body(world: Any, workspace_sid: str, query: dict[str, str]) -> dict[str, Any]:
    """``GET .../CumulativeStatistics``: the reservation counts of the window."""
    start, end = requested_window(world.clock, query, refuse_old=True)
    counts = world.logs[workspace_sid].statistics(start * 1000, end * 1000 + 999)
    ws_url = f"{world.resource_base_url}/v1/Workspaces/{workspace_sid}"
    return {
        "account_sid": world.account_sid,
        "workspace_sid": workspace_sid,
        "start_time": world.iso(start),
        "end_time": world.iso(end),
        **counts,
        "avg_task_acceptance_time": 0,
        "split_by_wait_time": None,
        "wait_duration_until_accepted": {},
        "wait_duration_until_canceled": {},
        "url": f"{ws_url}/CumulativeStatistics",
    }
