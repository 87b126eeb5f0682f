"""What the two feeds write into one row, on SQLite, PostgreSQL and MariaDB: an event version never
erases the list's url and links, a list version never erases the event's queue and workflow, a
list record completes a row only events had shown (its exact date_created included), odd event
bodies are loaded or quarantined with a reason, and the summary stays equal to its GROUP BY."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pandas as pd
import sqlalchemy as sa

from pipelines.loading import load_batch
from tests.helpers import CRAFTED_WK, CRAFTED_WS, assert_summary_consistent, crafted_reservation
from warehouse.events import apply_event_window
from warehouse.schema import rejected_records, reservation_status_history, reservations
from warehouse.summary import refresh_changed_days

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
WR = "WR" + "1" * 32
QUEUE = "WQ" + "2" * 32
FLOW = "WW" + "3" * 32


def event(number: int, kind: str, at: str, sid: str = WR, **data: Any) -> dict[str, Any]:
    body = {"reservation_sid": sid, "worker_sid": CRAFTED_WK, "worker_name": "Zoë",
            "task_sid": "WT" + "d" * 32, "task_queue_sid": QUEUE, "task_queue_name": "Support",
            "task_channel_unique_name": "voice", "workflow_sid": FLOW, **data}
    millis = pd.to_datetime(at, utc=True, errors="coerce")
    return {"sid": f"EV{number:032x}", "event_type": f"reservation.{kind}", "event_date": at,
            "event_date_ms": None if pd.isna(millis) else str(int(millis.timestamp() * 1000)),
            "account_sid": "AC" + "c" * 32, "workspace_sid": CRAFTED_WS,
            "resource_type": "reservation", "resource_sid": sid, "event_data": body}


def apply(engine: sa.Engine, events: list[dict[str, Any]]):  # type: ignore[no-untyped-def]
    return apply_event_window(engine, events, CRAFTED_WS, through=NOW, now=NOW)


def row(engine: sa.Engine, sid: str = WR) -> dict[str, Any]:
    with engine.connect() as conn:
        return dict(conn.execute(sa.select(reservations).where(reservations.c.sid == sid))
                    .mappings().one())


def history(engine: sa.Engine, sid: str = WR) -> list[tuple[str, datetime]]:
    h = reservation_status_history.c
    with engine.connect() as conn:
        return sorted((s, d) for s, d in conn.execute(
            sa.select(h.reservation_status, h.date_updated).where(h.sid == sid)).tuples())


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_each_feed_keeps_what_only_the_other_carries(engine):
    load_batch(engine, [crafted_reservation(WR, "pending", updated="2026-11-20T10:00:00Z")],
               complete_workers=None, now=NOW)
    listed = row(engine)
    counts = apply(engine, [event(1, "created", "2026-11-20T10:00:00Z"),
                            event(2, "accepted", "2026-11-20T10:00:09Z")])
    assert (counts.updated, counts.history_rows) == (1, 1)  # pending was already in the history
    now = row(engine)
    assert (now["reservation_status"], now["date_updated"]) == ("accepted", at("2026-11-20T10:00:09Z"))
    assert (now["url"], now["links"]) == (listed["url"], listed["links"]), "events keep list fields"
    assert (now["task_queue_sid"], now["workflow_sid"]) == (QUEUE, FLOW)
    # a newer list version: its fields, and the event's queue and workflow stay
    load_batch(engine, [crafted_reservation(WR, "completed", updated="2026-11-20T10:07:00Z",
                                            url="https://taskrouter.twilio.com/y")],
               complete_workers=None, now=NOW)
    now = row(engine)
    assert (now["reservation_status"], now["url"]) == ("completed", "https://taskrouter.twilio.com/y")
    assert (now["task_queue_sid"], now["task_channel_unique_name"]) == (QUEUE, "voice")
    assert [s for s, _ in history(engine)] == ["accepted", "completed", "pending"]
    # the same events again change nothing
    again = apply(engine, [event(1, "created", "2026-11-20T10:00:00Z"),
                           event(2, "accepted", "2026-11-20T10:00:09Z")])
    assert (again.inserted, again.updated, again.history_rows, again.filled) == (0, 0, 0, 0)
    refresh_changed_days(engine, "UTC")
    assert_summary_consistent(engine.url.render_as_string(hide_password=False))


def test_a_list_record_completes_a_row_only_events_had_shown(engine):
    # the events read began after the creation: the row is dated by its first event
    counts = apply(engine, [event(3, "accepted", "2026-11-20T23:59:59Z"),
                            event(4, "wrapup", "2026-11-21T00:03:00Z")])
    assert counts.estimated == 1 and counts.unsettled_workers == {CRAFTED_WK}
    first = row(engine)
    assert first["url"] is None and first["date_created"] == at("2026-11-20T23:59:59Z")
    refresh_changed_days(engine, "UTC")
    # the worker's list tells the exact date_created (the day before) and the url
    result = load_batch(engine, [crafted_reservation(
        WR, "wrapping", created="2026-11-19T23:58:00Z", updated="2026-11-21T00:03:00Z")],
        complete_workers=[CRAFTED_WK], now=NOW)
    assert (result.counts.filled, result.counts.updated, result.counts.inserted) == (1, 0, 0)
    done = row(engine)
    assert done["date_created"] == at("2026-11-19T23:58:00Z") and done["url"] is not None
    assert done["reservation_status"] == "wrapping" and done["task_queue_sid"] == QUEUE
    refresh_changed_days(engine, "UTC")  # the day it left is recomputed too
    assert_summary_consistent(engine.url.render_as_string(hide_password=False))
    # and a list read of the same version is now set aside as unchanged
    same = load_batch(engine, [crafted_reservation(
        WR, "wrapping", created="2026-11-19T23:58:00Z", updated="2026-11-21T00:03:00Z")],
        complete_workers=[CRAFTED_WK], now=NOW)
    assert (same.counts.filled, same.counts.unchanged) == (0, 1)


def test_a_listed_row_gets_the_event_fields_from_an_event_of_its_version(engine):
    load_batch(engine, [crafted_reservation(WR, "accepted", updated="2026-11-20T10:00:09Z")],
               complete_workers=None, now=NOW)
    counts = apply(engine, [event(2, "accepted", "2026-11-20T10:00:09Z")])
    assert (counts.updated, counts.filled) == (0, 1)
    assert (row(engine)["task_queue_name"], row(engine)["workflow_sid"]) == ("Support", FLOW)


def test_odd_event_bodies_are_loaded_or_quarantined_with_a_reason(engine):
    text = event(5, "created", "2026-11-20T10:00:00Z", sid="WR" + "5" * 32)
    text["event_data"] = __import__("json").dumps(text["event_data"])  # JSON text, not an object
    unknown = event(6, "updated", "2026-11-20T10:01:00Z", sid="WR" + "6" * 32,
                    reservation_status="escalated")  # a status TaskRouter may add one day
    no_worker = event(7, "accepted", "2026-11-20T10:02:00Z", sid="WR" + "7" * 32, worker_sid=None)
    bad_date = event(8, "accepted", "yesterday", sid="WR" + "8" * 32)
    bad_date["event_date_ms"] = "soon"
    no_status = event(9, "updated", "2026-11-20T10:03:00Z", sid="WR" + "9" * 32)
    counts = apply(engine, [text, unknown, no_worker, bad_date, no_status, ["not", "an", "event"]])
    assert (counts.inserted, counts.rejected, counts.quarantined, counts.ignored) == (2, 3, 3, 1)
    assert row(engine, "WR" + "6" * 32)["reservation_status"] == "escalated"
    with engine.connect() as conn:
        reasons = sorted(conn.execute(sa.select(rejected_records.c.reason)
                                      .where(rejected_records.c.entity == "event")).scalars())
    assert reasons == ["event is not a JSON object", "event without a worker_sid",
                       "event_date is not an ISO 8601 date"]
    # replayed: nothing new, the rejects counted again, not stored twice
    again = apply(engine, [text, unknown, no_worker, bad_date, no_status])
    assert (again.inserted, again.quarantined) == (0, 0)
