"""Reservation events to warehouse rows: the newest version of each reservation, and every
transition with its exact time, applied together with the feed's cursor.

A window's events become one version per reservation (the latest event's status and date, the
``date_created`` of its ``reservation.created`` event) and go through the same never-regress
upsert as list records (``kind="reservation_events"``: the list-only ``url`` and ``links`` are
left as they are). Each event is also a row of ``reservation_status_history`` at the event's
own time, so transitions that happened between two syncs are kept even when the reservation
was deleted before anyone listed it. Replayed or overlapping windows change nothing: versions
are never older than what is stored, history rows are inserted only when absent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from warehouse.engine import run_in_transaction
from warehouse.feed import write_cursor
from warehouse.history import record_status_changes
from warehouse.lifecycle import STATUS_RANK, TERMINAL_RANK
from warehouse.normalize import Rejected, cut_to_fit, parse_utc, storable_text
from warehouse.quarantine import quarantine
from warehouse.schema import reservation_status_history, reservations
from warehouse.upsert import RESERVATIONS_WRITER, lock_writers, upsert_reservations

# The status an event type announces when its event_data does not say (TaskRouter's names).
STATUS_BY_EVENT_TYPE = {
    "reservation.created": "pending",
    "reservation.accepted": "accepted",
    "reservation.rejected": "rejected",
    "reservation.timeout": "timeout",
    "reservation.canceled": "canceled",
    "reservation.rescinded": "rescinded",
    "reservation.wrapup": "wrapping",
    "reservation.completed": "completed",
}
CREATED_EVENT = "reservation.created"
SID_LENGTH = 64
NAME_LIMITS = {"worker_name": 512, "task_queue_name": 255, "task_channel_unique_name": 255}
SID_FIELDS = ("sid", "account_sid", "workspace_sid", "worker_sid", "task_sid", "task_queue_sid",
              "workflow_sid")
DATA_FIELDS = ("worker_sid", "worker_name", "task_sid", "task_queue_sid", "task_queue_name",
               "task_channel_unique_name", "workflow_sid")
VERSION_COLUMNS = ["sid", "account_sid", "workspace_sid", "worker_sid", "worker_name", "task_sid",
                   "reservation_status", "status_rank", "date_created", "date_updated",
                   "task_queue_sid", "task_queue_name", "task_channel_unique_name", "workflow_sid"]
LOOKUP_CHUNK = 1000


@dataclass
class NormalizedEvents:
    """One row per distinct reservation event, the rejects, and how many said no status."""

    events: pd.DataFrame
    rejected: list[Rejected] = field(default_factory=list)
    ignored: int = 0


@dataclass
class EventCounts:
    events: int = 0  # distinct reservation events applied
    reservations: int = 0  # distinct reservations they concern
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    filled: int = 0  # rows a list stored, given the fields only events carry
    history_rows: int = 0
    rejected: int = 0
    quarantined: int = 0
    ignored: int = 0
    estimated: int = 0  # new reservations whose reservation.created was not read: dated by
    # their first event until a list read of their worker tells the exact date_created
    unsettled_workers: set[str] = field(default_factory=set)


def _data(record: dict[str, Any]) -> dict[str, Any]:
    data = record.get("event_data")
    if isinstance(data, str):  # some accounts' events carry it as JSON text
        try:
            data = orjson.loads(data)
        except orjson.JSONDecodeError:
            return {}
    return data if isinstance(data, dict) else {}


def _text(value: Any) -> Any:
    """Values "may be strings": numbers become text, empty text and containers nothing."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return str(value)
    return value  # anything else is rejected by the checks below


def _millis(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _extract(record: dict[str, Any], workspace_sid: str) -> dict[str, Any] | None:
    data = _data(record)
    event_type = record.get("event_type")
    status = data.get("reservation_status")
    if not isinstance(status, str) or not status:
        status = STATUS_BY_EVENT_TYPE.get(event_type) if isinstance(event_type, str) else None
    if status is None:
        return None  # a reservation event that is not a state change
    sid = data.get("reservation_sid")
    if sid is None and record.get("resource_type") == "reservation":
        sid = record.get("resource_sid")
    row = {
        "event_sid": record.get("sid") if isinstance(record.get("sid"), str) else None,
        "event_type": event_type if isinstance(event_type, str) else None,
        "sid": sid,
        "reservation_status": status,
        "event_date": record.get("event_date"),
        "event_ms": _millis(record.get("event_date_ms")),
        "account_sid": record.get("account_sid") or data.get("account_sid"),
        "workspace_sid": record.get("workspace_sid") or data.get("workspace_sid") or workspace_sid,
    }
    for name in DATA_FIELDS:
        row[name] = _text(data.get(name))
    return row


def normalize_events(records: Sequence[Any], workspace_sid: str) -> NormalizedEvents:
    """Events as the API returns them (reservation events, any order, maybe repeated) -> one
    row per distinct event, with the reason for each one that cannot be stored."""
    rejected: list[Rejected] = []
    rows: list[dict[str, Any]] = []
    kept: list[Any] = []
    ignored = 0
    for record in records:
        if not isinstance(record, dict):
            rejected.append(Rejected(record, "event is not a JSON object"))
            continue
        row = _extract(record, workspace_sid)
        if row is None:
            ignored += 1
            continue
        rows.append(row)
        kept.append(record)
    if not rows:
        return NormalizedEvents(pd.DataFrame(columns=["event_sid", "event_type", "event_date",
                                                      "event_ms", "is_created", *VERSION_COLUMNS]),
                                rejected, ignored)
    frame = pd.DataFrame.from_records(rows).astype(object)
    frame = frame.where(frame.notna(), None)  # one "missing": None, never NaN
    reasons = pd.Series("", index=frame.index, dtype=object)
    for name in SID_FIELDS:
        bad = frame[name].map(lambda v: v is not None and (not isinstance(v, str)
                                                           or len(v) > SID_LENGTH))
        reasons = reasons.mask(bad & (reasons == ""), f"{name} is not a sid")
    for name in ("sid", "worker_sid"):
        reasons = reasons.mask(frame[name].isna() & (reasons == ""), f"event without a {name}")
    bad_status = frame["reservation_status"].map(lambda v: not isinstance(v, str) or len(v) > 32)
    reasons = reasons.mask(bad_status & (reasons == ""), "reservation_status is not a status")
    for name, limit in NAME_LIMITS.items():
        wrong = frame[name].map(lambda v: v is not None and not isinstance(v, str))
        reasons = reasons.mask(wrong & (reasons == ""), f"{name} is not a string")
        frame[name] = cut_to_fit(storable_text(frame[name].where(~wrong, None)), limit)
    dates = parse_utc(frame["event_date"].map(lambda v: v if isinstance(v, str) else None))
    from_ms = pd.to_datetime(frame["event_ms"].astype("float64"), unit="ms", utc=True,
                             errors="coerce")
    dates = dates.fillna(from_ms.dt.floor("s"))
    reasons = reasons.mask(dates.isna() & (reasons == ""), "event_date is not an ISO 8601 date")
    frame["event_date"] = dates
    bad = reasons != ""
    for position in bad[bad].index:
        rejected.append(Rejected(kept[position], str(reasons[position])))
    frame = frame[~bad].copy()
    whole_ms = (frame["event_date"] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)
    frame["event_ms"] = frame["event_ms"].astype("float64").fillna(whole_ms.astype("float64"))
    frame["status_rank"] = frame["reservation_status"].map(STATUS_RANK).fillna(
        TERMINAL_RANK).astype("int16")
    frame["is_created"] = frame["event_type"] == CREATED_EVENT
    with_sid = frame["event_sid"].notna()
    unique = ~frame[with_sid].duplicated("event_sid")
    frame = pd.concat([frame[with_sid][unique],
                       frame[~with_sid].drop_duplicates(["sid", "reservation_status",
                                                         "event_date"])])
    return NormalizedEvents(frame.reset_index(drop=True), rejected, ignored)


def _stored(conn: Connection, sids: list[str]) -> pd.DataFrame:
    """The stored version of these reservations (those the warehouse has)."""
    c = reservations.c
    parts = []
    for start in range(0, len(sids), LOOKUP_CHUNK):
        parts.extend(conn.execute(
            sa.select(c.sid, c.date_created, c.reservation_status, c.date_updated, c.status_rank)
            .where(c.sid.in_(sids[start:start + LOOKUP_CHUNK]))).tuples())
    frame = pd.DataFrame(parts, columns=["sid", "stored_created", "stored_status",
                                         "stored_updated", "stored_rank"])
    for name in ("stored_created", "stored_updated"):
        frame[name] = pd.to_datetime(frame[name], utc=True)
    return frame.set_index("sid")


def latest_versions(events: pd.DataFrame, stored: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """One row per reservation: its newest event's status and date (ties by lifecycle rank,
    then by millisecond), the newest non-empty value of every other field, and
    ``date_created`` from its ``reservation.created`` event, else the stored row, else its
    first event (an estimate). Returns the rows and the estimated ones' sids."""
    ordered = events.sort_values(["sid", "event_date", "status_rank", "event_ms"], kind="stable")
    groups = ordered.groupby("sid", sort=True)
    last = groups.tail(1).set_index("sid")
    fields = ["account_sid", "workspace_sid", "worker_sid", "worker_name", "task_sid",
              "task_queue_sid", "task_queue_name", "task_channel_unique_name", "workflow_sid"]
    values = groups[fields].last()  # the newest non-null value of each
    created = ordered[ordered["is_created"]].groupby("sid")["event_date"].min()
    first_seen = groups["event_date"].min()
    date_created = created.reindex(values.index)
    known = stored["stored_created"].reindex(values.index)
    date_created = date_created.fillna(known)
    estimated = date_created.isna()
    date_created = date_created.fillna(first_seen)
    rows = values.assign(
        reservation_status=last["reservation_status"], status_rank=last["status_rank"],
        date_created=date_created, date_updated=last["event_date"],
    ).reset_index()
    return rows[VERSION_COLUMNS], pd.Series(values.index[estimated.to_numpy()])


def transitions(events: pd.DataFrame, stored: pd.DataFrame, versions: pd.DataFrame) -> pd.DataFrame:
    """Every status change the events tell, at the event's time, with the status it left
    (the previous event's, or the stored one when it is older than the first event)."""
    ordered = events.sort_values(["sid", "event_date", "status_rank", "event_ms"], kind="stable")
    previous = ordered.groupby("sid")["reservation_status"].shift(1)
    first = previous.isna() & ~ordered["is_created"]
    before = stored.reindex(ordered["sid"])
    older = (before["stored_updated"].to_numpy() < ordered["event_date"].to_numpy())
    fallback = before["stored_status"].where(older, None).to_numpy()
    previous = previous.where(~first, pd.Series(fallback, index=ordered.index))
    created = versions.set_index("sid")["date_created"].reindex(ordered["sid"]).to_numpy()
    frame = pd.DataFrame({
        "sid": ordered["sid"].to_numpy(), "reservation_status": ordered["reservation_status"],
        "previous_status": previous.astype(object).where(previous.notna(), None),
        "date_created": created, "date_updated": ordered["event_date"],
    })
    frame = frame[frame["previous_status"].isna()
                  | (frame["previous_status"] != frame["reservation_status"])]
    return frame.drop_duplicates(["sid", "reservation_status", "date_updated"]).reset_index(
        drop=True)


def _absent_from_history(conn: Connection, rows: pd.DataFrame) -> pd.DataFrame:
    """The rows whose (sid, status, time) the history does not hold yet (exact counts)."""
    if rows.empty:
        return rows
    h = reservation_status_history.c
    sids = sorted(set(rows["sid"]))
    found: set[tuple[str, str, pd.Timestamp]] = set()
    for start in range(0, len(sids), LOOKUP_CHUNK):
        for sid, status, when in conn.execute(
                sa.select(h.sid, h.reservation_status, h.date_updated)
                .where(h.sid.in_(sids[start:start + LOOKUP_CHUNK]))).tuples():
            found.add((sid, status, pd.Timestamp(when).tz_convert("UTC")))
    keys = zip(rows["sid"], rows["reservation_status"],
               pd.to_datetime(rows["date_updated"], utc=True), strict=True)
    return rows[[key not in found for key in keys]]


def apply_event_window(engine: Engine, records: Sequence[Any], workspace_sid: str, *,
                       through: datetime, now: datetime,
                       cursor_fields: dict[str, Any] | None = None) -> EventCounts:
    """Apply one window's reservation events and move the workspace's cursor to ``through``,
    in ONE transaction under the reservations writer lock."""
    normalized = normalize_events(records, workspace_sid)
    events = normalized.events

    def work(conn: Connection) -> EventCounts:
        counts = EventCounts(ignored=normalized.ignored, rejected=len(normalized.rejected))
        if not events.empty:
            lock_writers(conn, RESERVATIONS_WRITER)
            stored = _stored(conn, sorted(set(events["sid"])))
            versions, estimated = latest_versions(events, stored)
            written = upsert_reservations(conn, versions, now, kind="reservation_events")
            changes = _absent_from_history(conn, transitions(events, stored, versions))
            counts.history_rows = record_status_changes(conn, changes, now)
            counts.events, counts.reservations = len(events), len(versions)
            counts.inserted, counts.updated = written.inserted, written.updated
            counts.unchanged, counts.filled = written.unchanged, written.filled
            counts.estimated = len(estimated)
            counts.unsettled_workers = set(
                versions.loc[versions["sid"].isin(set(estimated)), "worker_sid"])
        counts.quarantined = quarantine(conn, normalized.rejected, now, entity="event")
        write_cursor(conn, workspace_sid, events_through=through, **(cursor_fields or {}))
        return counts

    return run_in_transaction(engine, work, what="events window")
