"""A worker is rewritten exactly when a compared field changed (``warehouse.workers``): new,
changed and unchanged counted right on every database, times compared to the microsecond in UTC,
and a field that becomes or stops being empty counted as a change."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from warehouse.normalize import normalize_workers
from warehouse.schema import workers
from warehouse.upsert import upsert_workers

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def worker(n: int, **changes: Any) -> dict[str, Any]:
    record = {"sid": f"WK{n:032d}", "account_sid": "AC1", "workspace_sid": "WS1",
              "friendly_name": f"Agent {n}", "activity_sid": "WA1", "activity_name": "Available",
              "available": True, "attributes": '{"skills": ["en"]}',
              "date_created": "2026-11-01T08:00:00Z", "date_updated": "2026-11-20T09:30:00Z",
              "date_status_changed": "2026-11-20T09:30:00Z", "url": f"https://w/{n}"}
    record.update(changes)
    return record


def upsert(engine: sa.Engine, records: list[dict[str, Any]], now: datetime = NOW):
    normalized = normalize_workers(records)
    with engine.begin() as conn:
        return upsert_workers(conn, normalized.rows, now)


def counts(c) -> tuple[int, int, int]:
    return (c.inserted, c.updated, c.unchanged)


def test_only_workers_whose_fields_changed_are_rewritten(engine):
    base = [worker(n) for n in range(6)]
    assert counts(upsert(engine, base)) == (6, 0, 0)
    assert counts(upsert(engine, base, NOW + timedelta(minutes=5))) == (0, 0, 6)

    later = NOW + timedelta(minutes=10)
    changed = [
        worker(0, friendly_name="Zoë"),                                   # text
        worker(1, date_status_changed="2026-11-20T09:30:01Z"),           # a second later
        worker(2, activity_name=None),                                    # becomes empty
        worker(3, available=False),                                       # boolean
        worker(4, date_updated="2026-11-20T10:30:00+01:00"),             # same instant, other zone
        worker(5),                                                        # nothing
        worker(6),                                                        # new
    ]
    assert counts(upsert(engine, changed, later)) == (1, 4, 2)
    with engine.connect() as conn:
        stamps = dict(conn.execute(sa.select(workers.c.sid, workers.c.last_changed_at)).all())
    rewritten = {sid for sid, at in stamps.items() if at.astimezone(UTC) == later}
    assert rewritten == {worker(n)["sid"] for n in (0, 1, 2, 3, 6)}
    # the empty field filled again is a change; the same batch again is not
    again = [*changed[:2], worker(2), *changed[3:]]
    assert counts(upsert(engine, again, later + timedelta(minutes=1))) == (0, 1, 6)
    assert counts(upsert(engine, again, later + timedelta(minutes=2))) == (0, 0, 7)
