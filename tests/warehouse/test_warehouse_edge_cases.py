"""Edge cases on SQLite, PostgreSQL and MariaDB: text longer than MySQL's ``TEXT`` (revision
0004), and reservations whose newer version moves ``date_created`` to another day (the summary
must still equal ``GROUP BY day, workspace_sid, worker_sid, reservation_status``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tests.helpers import (
    NOW,
    assert_summary_consistent,
    load,
    rec,
    schema_differences,
    stored_daily_counts,
)
from warehouse import summary
from warehouse.engine import create_warehouse_engine
from warehouse.migrate import current_revision, downgrade, ensure_schema, head_revision, upgrade
from warehouse.normalize import normalize_reservations, normalize_workers
from warehouse.schema import reservations, workers
from warehouse.state import read_state
from warehouse.summary import MOVED_DAYS, refresh_changed_days
from warehouse.upsert import upsert_reservations, upsert_workers

LONG = 70_000


def url_of(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def moved_record(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return read_state(conn, MOVED_DAYS)


# -- defect 1: text longer than MySQL's TEXT (65,535 bytes) -------------------------------------
def long_links() -> dict[str, str]:
    """A ``links`` object whose compact JSON is exactly LONG characters."""
    links = {"task": "https://t", "worker": "https://w", "workspace": "https://ws/"}
    padding = LONG - len(json.dumps(links, separators=(",", ":")))
    links["workspace"] += "x" * padding
    return links


def long_attributes() -> str:
    """Worker attributes, verbatim JSON text of exactly LONG characters, 4-byte ones included
    (so well over 65,535 bytes in utf8mb4)."""
    head = '{"skills":"'
    body = "🎧x" * ((LONG - len(head) - 2) // 2)
    text = head + body + '"}'
    return text + " " * (LONG - len(text))


def test_70k_links_and_worker_attributes_store_and_read_back_identically(engine):
    links = long_links()
    big = rec("WR_BIG", "pending", "2026-11-20T10:00:05Z", links=links)
    batch = [rec("WR_A", "pending", "2026-11-20T10:00:05Z"), big,
             rec("WR_B", "accepted", "2026-11-20T10:00:06Z")]
    expected_links = json.dumps(links, sort_keys=True, separators=(",", ":"))
    assert len(expected_links) == LONG
    counts = load(engine, batch)
    assert (counts.inserted, counts.updated, counts.unchanged) == (3, 0, 0)  # the batch is whole

    attributes = long_attributes()
    assert len(attributes) == LONG and len(attributes.encode()) > 65_535
    long_url = "https://taskrouter.twilio.com/v1/" + "u" * (LONG - 33)
    worker = {"sid": "WK1", "account_sid": "AC1", "workspace_sid": "WS1", "friendly_name": "Ann",
              "activity_sid": "WA1", "activity_name": "Available", "available": True,
              "attributes": attributes, "date_created": "2026-11-01T00:00:00Z",
              "date_updated": "2026-11-01T00:00:00Z", "date_status_changed": None,
              "url": long_url}
    with engine.begin() as conn:
        written = upsert_workers(conn, normalize_workers([worker]).rows, NOW)
    assert (written.inserted, written.updated, written.unchanged) == (1, 0, 0)

    with engine.connect() as conn:
        stored_links = conn.execute(sa.select(reservations.c.sid, reservations.c.links)
                                    .order_by(reservations.c.sid)).all()
        stored_worker = conn.execute(sa.select(workers.c.attributes, workers.c.url)).one()
    assert dict(stored_links)["WR_BIG"] == expected_links
    assert len(stored_links) == 3
    assert stored_worker.attributes == attributes
    assert stored_worker.url == long_url
    # the same records again: compared equal to what is stored, nothing written
    assert load(engine, batch, NOW + timedelta(minutes=5)).unchanged == 3
    with engine.begin() as conn:
        assert upsert_workers(conn, normalize_workers([worker]).rows, NOW).unchanged == 1


@pytest.fixture
def mariadb_engine(mariadb_url: str) -> Iterator[Engine]:
    engine = create_warehouse_engine(mariadb_url)
    yield engine
    engine.dispose()


def column_types(engine: Engine) -> dict[tuple[str, str], tuple[str, str, str]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT table_name, column_name, data_type, character_set_name, collation_name "
            "FROM information_schema.columns WHERE table_schema = DATABASE() AND "
            "(table_name, column_name) IN (('reservations', 'url'), ('reservations', 'links'), "
            "('workers', 'attributes'), ('workers', 'url'))")).all()
    return {(t.lower(), c.lower()): (d.lower(), cs, co) for t, c, d, cs, co in rows}


def insert_at_0003(engine: Engine, sid: str, links: dict[str, str]) -> None:
    """A row as a sync of revision 0003 wrote it (today's code needs today's schema)."""
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO reservations (sid, workspace_sid, worker_sid, reservation_status, "
            "status_rank, date_created, date_updated, links, first_loaded_at, last_changed_at) "
            "VALUES (:sid, 'WS1', 'WK1', 'pending', 0, :at, :at, :links, :at, :at)"),
            {"sid": sid, "at": datetime(2026, 11, 20, 10, 0, 5), "links": json.dumps(links)})


def test_migration_0004_widens_the_columns_on_mariadb_and_downgrades(mariadb_engine):
    engine = mariadb_engine
    upgrade(engine, "0003_lean_indexes")
    assert set(column_types(engine).values()) == {("text", "utf8mb4", "utf8mb4_bin")}
    with pytest.raises(sa.exc.DataError, match="1406"):  # the defect, as 0003 had it
        insert_at_0003(engine, "WR_BIG", long_links())

    insert_at_0003(engine, "WR_SMALL", {"worker": "https://w"})
    ensure_schema(engine)
    assert current_revision(engine) == head_revision()
    assert set(column_types(engine).values()) == {("longtext", "utf8mb4", "utf8mb4_bin")}
    assert schema_differences(engine) == []
    load(engine, [rec("WR_BIG", "pending", "2026-11-20T10:00:05Z", links=long_links())])

    # a value TEXT cannot hold: 0004's downgrade refuses and changes nothing (the revisions
    # after it are undone, one committed step each)
    with pytest.raises(RuntimeError, match="longer than TEXT"):
        downgrade(engine, "0003_lean_indexes")
    assert current_revision(engine) == "0004_long_text"
    assert set(column_types(engine).values()) == {("longtext", "utf8mb4", "utf8mb4_bin")}

    with engine.begin() as conn:
        conn.execute(reservations.delete().where(reservations.c.sid == "WR_BIG"))
    downgrade(engine, "0003_lean_indexes")
    assert current_revision(engine) == "0003_lean_indexes"
    assert set(column_types(engine).values()) == {("text", "utf8mb4", "utf8mb4_bin")}
    with engine.connect() as conn:  # the rows survive both ways
        assert conn.execute(sa.text("SELECT sid FROM reservations")).scalars().all() == ["WR_SMALL"]
    upgrade(engine)
    assert schema_differences(engine) == []


# -- defect 2: a newer version that moves date_created to another day --------------------------
DAY1, DAY3 = "2026-11-20T10:00:00Z", "2026-11-22T15:00:00Z"


def first_versions() -> list[dict[str, Any]]:
    """WR1 and WR2 on day 1; WR1 is alone in its (day, worker, status) group."""
    return [rec("WR1", "pending", "2026-11-20T10:00:05Z", created=DAY1, worker="WK1"),
            rec("WR2", "accepted", "2026-11-20T10:00:07Z", created=DAY1, worker="WK2")]


def moved_wr1(created: str = DAY3, updated: str = "2026-11-22T15:00:09Z") -> dict[str, Any]:
    return rec("WR1", "accepted", updated, created=created, worker="WK1")


@pytest.mark.parametrize("zone", ["UTC", "Asia/Kolkata"])
def test_moved_date_created_refreshes_the_old_day(engine, zone):
    url = url_of(engine)
    load(engine, first_versions())
    refresh_changed_days(engine, zone)
    assert_summary_consistent(url, zone)

    got = load(engine, [moved_wr1()], NOW + timedelta(minutes=5))
    assert (got.inserted, got.updated) == (0, 1)
    assert moved_record(engine) is not None  # persisted with the rows, before any refresh
    result = refresh_changed_days(engine, zone)
    assert not result.rebuilt
    assert_summary_consistent(url, zone)
    assert "WK1" in set(stored_daily_counts(url)["worker_sid"])
    assert moved_record(engine) is None  # consumed by the refresh that used it
    assert refresh_changed_days(engine, zone).days == []


def test_moved_date_created_is_repaired_by_a_refresh_in_a_later_sync(warehouse_url):
    """Sync 1 loads and refreshes; sync 2 loads the moved version and dies before its refresh;
    sync 3 (new engine, as a new process) loads something else and refreshes: all consistent."""
    def sync(records: list[dict[str, Any]], now: datetime, refresh: bool) -> None:
        engine = create_warehouse_engine(warehouse_url)
        try:
            ensure_schema(engine)
            load(engine, records, now)
            if refresh:
                refresh_changed_days(engine, "UTC")
        finally:
            engine.dispose()

    sync(first_versions(), NOW, refresh=True)
    sync([moved_wr1()], NOW + timedelta(minutes=5), refresh=False)
    # a second move before any refresh (day 3 -> day 4): both old days are recorded
    sync([moved_wr1("2026-11-23T01:00:00Z", "2026-11-23T01:00:09Z")],
         NOW + timedelta(minutes=10), refresh=False)
    sync([rec("WR9", "pending", "2026-11-25T09:00:05Z", created="2026-11-25T09:00:00Z")],
         NOW + timedelta(minutes=15), refresh=True)
    assert_summary_consistent(warehouse_url, "UTC")
    engine = create_warehouse_engine(warehouse_url)
    try:
        assert moved_record(engine) is None
    finally:
        engine.dispose()


def test_updates_that_keep_date_created_and_first_loads_record_nothing(engine):
    load(engine, first_versions())
    assert moved_record(engine) is None
    # newer versions with the same date_created: the usual path, no state write
    load(engine, [rec("WR1", "completed", "2026-11-20T10:09:00Z", created=DAY1, worker="WK1")],
         NOW + timedelta(minutes=5))
    assert moved_record(engine) is None
    # an older version with another date_created changes nothing at all
    load(engine, [rec("WR2", "pending", "2026-11-20T10:00:01Z", created=DAY3, worker="WK2")],
         NOW + timedelta(minutes=6))
    assert moved_record(engine) is None
    # a first load's batch (PostgreSQL: COPY without the lookup), then its summary
    batch = [rec(f"WRN{n:03d}", "pending", "2026-11-21T10:00:05Z",
                 created=f"2026-11-21T{n % 24:02d}:00:00Z", worker=f"WK{n % 4}") for n in range(300)]
    with engine.begin() as conn:
        got = upsert_reservations(conn, normalize_reservations(batch).rows, NOW, expect_new=True)
    assert got.inserted == 300
    assert moved_record(engine) is None
    refresh_changed_days(engine, "UTC")
    assert_summary_consistent(url_of(engine), "UTC")


def test_a_refresh_never_deletes_a_record_rewritten_after_it_read_it(engine):
    load(engine, first_versions())
    load(engine, [moved_wr1()], NOW + timedelta(minutes=5))
    read_by_refresh = moved_record(engine)
    # an upsert moves another reservation from the same day after the refresh read the record
    load(engine, [rec("WR2", "completed", "2026-11-22T16:00:00Z", created=DAY3, worker="WK2")],
         NOW + timedelta(minutes=6))
    rewritten = moved_record(engine)
    assert rewritten is not None and rewritten != read_by_refresh
    assert json.loads(rewritten)["days"] == ["2026-11-20"]
    with engine.begin() as conn:
        summary._consume_moved_days(conn, read_by_refresh)  # noqa: SLF001 - the refresh's delete
    assert moved_record(engine) == rewritten
    refresh_changed_days(engine, "UTC")
    assert_summary_consistent(url_of(engine), "UTC")
    assert moved_record(engine) is None


def test_too_many_moved_days_rebuild_every_day(engine, monkeypatch):
    monkeypatch.setattr(summary, "MOVED_DAYS_LIMIT", 1)
    records = [rec(f"WR{d}", "pending", f"2026-11-{d:02d}T10:00:05Z",
                   created=f"2026-11-{d:02d}T10:00:00Z") for d in (10, 11, 12)]
    load(engine, records)
    refresh_changed_days(engine, "UTC")
    moved = [rec(f"WR{d}", "accepted", "2026-11-27T10:00:05Z", created="2026-11-27T10:00:00Z")
             for d in (10, 11)]
    load(engine, moved, NOW + timedelta(minutes=5))
    assert json.loads(moved_record(engine) or "{}")["days"] == summary.EVERY_DAY
    result = refresh_changed_days(engine, "UTC")
    assert result.rebuilt
    assert_summary_consistent(url_of(engine), "UTC")
    assert moved_record(engine) is None


def test_a_worker_without_a_workspace_or_with_odd_ids_is_set_aside_not_fatal(warehouse_url):
    """A worker record the workers table cannot hold (no workspace_sid: NOT NULL; an id that is
    not text or too long for its column) is rejected with a reason; the rest of its workspace
    loads, on every database."""
    good = {"sid": "WK" + "1" * 32, "workspace_sid": "WS" + "1" * 32, "friendly_name": "ok"}
    bad = [
        {"sid": "WK" + "2" * 32, "friendly_name": "no workspace"},
        {"sid": "WK" + "3" * 32, "workspace_sid": 7},
        {"sid": "WK" + "4" * 32, "workspace_sid": "WS" + "1" * 32, "account_sid": "AC" + "9" * 80},
        {"workspace_sid": "WS" + "1" * 32},
        "not an object",
    ]
    normalized = normalize_workers([good, *bad])
    assert normalized.rows["sid"].tolist() == [good["sid"]]
    assert [r.reason for r in normalized.rejected] == [
        "worker without a workspace_sid", "worker workspace_sid is not a string",
        "worker account_sid is longer than 64 characters", "worker without a sid",
        "worker is not a JSON object"]
    engine = create_warehouse_engine(warehouse_url)
    ensure_schema(engine)
    try:
        with engine.begin() as conn:
            assert upsert_workers(conn, normalized.rows, NOW).inserted == 1
    finally:
        engine.dispose()
