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

import numpy as np
import orjson
import pandas as pd
from sqlalchemy.engine import Connection, Engine

from warehouse.engine import run_in_transaction
from warehouse.feed import write_cursor
from warehouse.history import history_keys, record_status_changes
from warehouse.lifecycle import STATUS_RANK, TERMINAL_RANK
from warehouse.normalize import Rejected, cut_to_fit, parse_utc, storable_text, too_long
from warehouse.quarantine import quarantine
from warehouse.upsert import stored_versions, upsert_reservations
from warehouse.writers import RESERVATIONS_WRITER, lock_writers

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
    if type(data) is dict:
        return data
    if isinstance(data, str):  # some accounts' events carry it as JSON text
        try:
            data = orjson.loads(data)
        except orjson.JSONDecodeError:
            return {}
    return data if isinstance(data, dict) else {}


def _text(value: Any) -> Any:
    """Values "may be strings": numbers become text, empty text and containers nothing."""
    if type(value) is str:
        return value or None
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return str(value)
    return value  # anything else is rejected by the checks below


COLUMNS = ("event_sid", "event_type", "sid", "reservation_status", "event_date", "event_ms",
           "account_sid", "workspace_sid", *DATA_FIELDS)


def _row(record: dict[str, Any], workspace_sid: str) -> tuple[Any, ...] | None:
    """One event's fields in ``COLUMNS`` order; None for a reservation event without a status."""
    data = _data(record)
    event_type = record.get("event_type")
    status = data.get("reservation_status")
    if type(status) is not str or not status:
        status = STATUS_BY_EVENT_TYPE.get(event_type) if type(event_type) is str else None
        if status is None:
            return None  # a reservation event that is not a state change
    sid = data.get("reservation_sid")
    if sid is None and record.get("resource_type") == "reservation":
        sid = record.get("resource_sid")
    event_sid = record.get("sid")
    return (event_sid if type(event_sid) is str else None,
            event_type if type(event_type) is str else None, sid, status,
            record.get("event_date"), record.get("event_date_ms"),
            record.get("account_sid") or data.get("account_sid"),
            record.get("workspace_sid") or data.get("workspace_sid") or workspace_sid,
            *[v if type(v) is str and v else _text(v) for v in map(data.get, DATA_FIELDS)])


def _not_sid(column: pd.Series) -> pd.Series:
    """True where a value is present but not text of at most SID_LENGTH characters."""
    kind = pd.api.types.infer_dtype(column, skipna=True)
    if kind in ("string", "empty"):
        return too_long(column, SID_LENGTH)
    return column.map(lambda v: v is not None and (type(v) is not str or len(v) > SID_LENGTH))


def _not_text(column: pd.Series) -> pd.Series:
    kind = pd.api.types.infer_dtype(column, skipna=True)
    if kind in ("string", "empty"):
        return pd.Series(False, index=column.index)
    return column.map(lambda v: v is not None and type(v) is not str)


def normalize_events(records: Sequence[Any], workspace_sid: str) -> NormalizedEvents:
    """Events as the API returns them (reservation events, any order, maybe repeated) -> one
    row per distinct event, with the reason for each one that cannot be stored. Fields are
    picked per event (they are nested); every check runs over whole columns."""
    rejected: list[Rejected] = []
    rows: list[tuple[Any, ...]] = []
    kept: list[Any] = []
    ignored = 0
    for record in records:
        if type(record) is not dict:
            rejected.append(Rejected(record, "event is not a JSON object"))
            continue
        row = _row(record, workspace_sid)
        if row is None:
            ignored += 1
            continue
        rows.append(row)
        kept.append(record)
    if not rows:
        return NormalizedEvents(pd.DataFrame(columns=["event_sid", "event_type", "event_date",
                                                      "event_ms", "is_created", *VERSION_COLUMNS]),
                                rejected, ignored)
    frame = pd.DataFrame(dict(zip(COLUMNS, map(list, zip(*rows, strict=True)), strict=True)),
                         dtype=object)
    reasons = pd.Series("", index=frame.index, dtype=object)

    def reject(where: pd.Series, reason: str) -> None:
        nonlocal reasons
        reasons = reasons.mask(where & (reasons == ""), reason)

    for name in SID_FIELDS:
        reject(_not_sid(frame[name]), f"{name} is not a sid")
    for name in ("sid", "worker_sid"):
        reject(frame[name].isna(), f"event without a {name}")
    status = frame["reservation_status"]
    reject(_not_text(status) | too_long(status.where(status.notna(), ""), 32),
           "reservation_status is not a status")
    for name, limit in NAME_LIMITS.items():
        wrong = _not_text(frame[name])
        reject(wrong, f"{name} is not a string")
        frame[name] = cut_to_fit(storable_text(frame[name].where(~wrong, None)), limit)
    millis = pd.to_numeric(frame["event_ms"], errors="coerce").astype("float64")
    raw_dates = frame["event_date"]
    dates = parse_utc(raw_dates.where(~_not_text(raw_dates), None))
    dates = dates.fillna(pd.to_datetime(millis, unit="ms", utc=True, errors="coerce").dt.floor("s"))
    reject(dates.isna(), "event_date is not an ISO 8601 date")
    frame["event_date"] = dates
    bad = reasons != ""
    for position in bad[bad].index:
        rejected.append(Rejected(kept[position], str(reasons[position])))
    frame, millis = frame[~bad].copy(), millis[~bad]
    whole_ms = (frame["event_date"] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)
    frame["event_ms"] = millis.fillna(whole_ms.astype("float64"))
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
    """What the warehouse holds of these reservations (the upsert's own lookup), by sid, with
    ``stored_created`` parsed."""
    stored = stored_versions(conn, sids)
    stored["stored_created_at"] = pd.to_datetime(stored["stored_created"], utc=True,
                                                 format="ISO8601")
    return stored


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
    known = stored.set_index("sid")["stored_created_at"].reindex(values.index)
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
    first = (previous.isna() & ~ordered["is_created"]).to_numpy()
    before = stored.set_index("sid").reindex(ordered["sid"])

    def utc_instants(values: pd.Series) -> np.ndarray:  # datetime64, no Timestamp objects
        return values.astype("datetime64[us, UTC]").dt.tz_convert(None).to_numpy()

    event_at = utc_instants(ordered["event_date"])
    older = utc_instants(before["stored_date"]) < event_at
    fallback = np.where(older, before["stored_status"].to_numpy(), None)
    previous = np.where(first, fallback, previous.to_numpy(dtype=object))
    created = utc_instants(versions.set_index("sid")["date_created"].reindex(ordered["sid"]))
    frame = pd.DataFrame({
        "sid": ordered["sid"].to_numpy(dtype=object),
        "reservation_status": ordered["reservation_status"].to_numpy(dtype=object),
        "previous_status": pd.Series(previous, dtype=object).where(pd.notna(previous), None),
        "date_created": pd.Series(created).dt.tz_localize("UTC"),
        "date_updated": pd.Series(event_at).dt.tz_localize("UTC"),
    })
    frame = frame[frame["previous_status"].isna()
                  | (frame["previous_status"] != frame["reservation_status"])]
    return frame.drop_duplicates(["sid", "reservation_status", "date_updated"]).reset_index(
        drop=True)


def _absent_from_history(conn: Connection, rows: pd.DataFrame) -> pd.DataFrame:
    """The rows whose (sid, status, time) the history does not hold yet (exact counts)."""
    if rows.empty:
        return rows
    held = history_keys(conn, sorted(set(rows["sid"])))
    if held.empty:
        return rows
    probe = rows[["sid", "reservation_status", "date_updated"]].astype(
        {"date_updated": "datetime64[us, UTC]"})
    found = probe.merge(held.astype({"date_updated": "datetime64[us, UTC]"}),
                        on=["sid", "reservation_status", "date_updated"], how="left",
                        indicator=True)["_merge"].to_numpy() == "both"
    return rows[~found]


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
            written = upsert_reservations(conn, versions, now, kind="reservation_events",
                                          stored=stored.drop(columns="stored_created_at"))
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
