"""One upsert and summary suite, run unchanged on SQLite, PostgreSQL and MariaDB.

Every test goes through the real path: API-shaped records -> ``normalize_reservations`` ->
``upsert_reservations`` in a transaction -> read back through SQLAlchemy, on a fresh database.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa

from tests.helpers import (
    NOW,
    WS,
    assert_summary_consistent,
    counts,
    load,
    rec,
    stored,
    stored_daily_counts,
    warehouse_frame,
)
from warehouse.history import record_status_changes
from warehouse.normalize import normalize_reservations
from warehouse.schema import (
    reservation_daily_status_counts,
    reservation_status_history,
    reservations,
)
from warehouse.state import REPORTING_TIMEZONE, read_state
from warehouse.summary import refresh_changed_days, refresh_range
from warehouse.upsert import upsert_reservations

HOSTILE = [
    "Robert'); DROP TABLE reservations;--",
    'Quote " and \' both',
    "Back\\slash \\n not a newline, \\\\ two",
    "tab\there, newline\nthere, CR\r",
    "Emoji 🎧📞😀 and 4-byte 𝄞 𠜎",
    "Zoë José Ångström 李 Nguyễn Олег",
    "percent %s %(x)s {0} ? :name",
    "",
]


# -- upsert semantics -------------------------------------------------------------------------
def test_new_newer_older_and_same_versions(engine):
    t1, t2 = "2026-11-20T10:00:05Z", "2026-11-20T10:00:09Z"
    assert counts(load(engine, [rec("WR1", "pending", t1), rec("WR2", "pending", t1)])) == (2, 0, 0)
    later = NOW + timedelta(minutes=5)
    # same page again: nothing changes, not even last_changed_at
    assert counts(load(engine, [rec("WR1", "pending", t1), rec("WR2", "pending", t1)], later)) == (0, 0, 2)
    # WR1 newer, WR2 older, WR3 new
    got = load(engine, [rec("WR1", "accepted", t2), rec("WR2", "canceled", "2026-11-20T10:00:01Z"),
                        rec("WR3", "wrapping", t1)], later)
    assert counts(got) == (1, 1, 1)
    rows = stored(engine)
    assert rows["WR1"]["reservation_status"] == "accepted"
    assert rows["WR1"]["date_updated"] == datetime(2026, 11, 20, 10, 0, 9, tzinfo=UTC)
    assert rows["WR1"]["first_loaded_at"] == NOW and rows["WR1"]["last_changed_at"] == later
    assert rows["WR2"]["reservation_status"] == "pending"
    assert rows["WR2"]["last_changed_at"] == NOW
    assert rows["WR3"]["first_loaded_at"] == later
    # the older version after the newer one changes nothing
    assert counts(load(engine, [rec("WR1", "pending", t1)])) == (0, 0, 1)
    assert stored(engine)["WR1"]["reservation_status"] == "accepted"


def test_equal_date_updated_breaks_ties_by_lifecycle(engine):
    t = "2026-11-20T10:00:05Z"
    load(engine, [rec("WR1", "accepted", t), rec("WR2", "wrapping", t), rec("WR3", "pending", t)])
    # later status, same second: update; earlier status, same second: unchanged
    got = load(engine, [rec("WR1", "completed", t), rec("WR2", "accepted", t),
                        rec("WR3", "pending", t)])
    assert counts(got) == (0, 1, 2)
    rows = stored(engine)
    assert [rows[s]["reservation_status"] for s in ("WR1", "WR2", "WR3")] == [
        "completed", "wrapping", "pending"]
    # terminal vs terminal at the same second: equal rank, first one stays
    assert counts(load(engine, [rec("WR1", "rejected", t)])) == (0, 0, 1)
    assert stored(engine)["WR1"]["reservation_status"] == "completed"


def test_unknown_statuses_load_and_rank_as_terminal(engine):
    t = "2026-11-20T10:00:05Z"
    assert counts(load(engine, [rec("WR1", "accepted", t), rec("WR2", "escalated", t)])) == (1 + 1, 0, 0)
    got = load(engine, [rec("WR1", "transferred", t), rec("WR2", "wrapping", t)])
    assert counts(got) == (0, 1, 1)
    rows = stored(engine)
    assert rows["WR1"]["reservation_status"] == "transferred" and rows["WR1"]["status_rank"] == 3
    assert rows["WR2"]["reservation_status"] == "escalated"


def test_z_and_offset_dates_are_the_same_instant(engine):
    load(engine, [rec("WR1", "pending", "2026-11-20T10:00:05Z"),
                  rec("WR2", "pending", "2026-11-20T05:00:05-05:00", created="2026-11-20T05:00:00-05:00")])
    # +00:00 spelling of the stored instant is "equal", not newer
    got = load(engine, [rec("WR1", "pending", "2026-11-20T10:00:05+00:00"),
                        rec("WR2", "pending", "2026-11-20T10:00:05+00:00")])
    assert counts(got) == (0, 0, 2)
    rows = stored(engine)
    assert rows["WR2"]["date_updated"] == datetime(2026, 11, 20, 10, 0, 5, tzinfo=UTC)
    assert rows["WR2"]["date_created"] == datetime(2026, 11, 20, 10, 0, 0, tzinfo=UTC)
    assert counts(load(engine, [rec("WR1", "accepted", "2026-11-20T10:00:06+00:00")])) == (0, 1, 0)


def test_duplicate_sids_in_one_batch_keep_the_newest(engine):
    t1, t2, t3 = "2026-11-20T10:00:01Z", "2026-11-20T10:00:02Z", "2026-11-20T10:00:03Z"
    got = load(engine, [rec("WR1", "accepted", t2), rec("WR1", "completed", t3),
                        rec("WR1", "pending", t1), rec("WR2", "wrapping", t1),
                        rec("WR2", "accepted", t1)])
    assert counts(got) == (2, 0, 0)
    rows = stored(engine)
    assert rows["WR1"]["reservation_status"] == "completed"
    assert rows["WR2"]["reservation_status"] == "wrapping"


@pytest.mark.parametrize("pg_copy_min_rows", [None, 1], ids=["executemany", "pg-copy"])
def test_hostile_and_non_ascii_strings_round_trip_byte_for_byte(engine, pg_copy_min_rows,
                                                                 monkeypatch):
    # both PostgreSQL write paths (the COPY one serves big batches); the same path elsewhere
    monkeypatch.setattr("warehouse.dialects.pgcopy.COPY_MIN_ROWS", pg_copy_min_rows)
    records = [rec(f"WR{n}", "pending", "2026-11-20T10:00:05Z", name=text,
                   links={"worker": text, "task": "t"}) for n, text in enumerate(HOSTILE)]
    records.append(rec("WRnull", "pending", "2026-11-20T10:00:05Z", name=None))
    assert counts(load(engine, records)) == (len(records), 0, 0)
    rows = stored(engine)
    for n, text in enumerate(HOSTILE):
        got = rows[f"WR{n}"]["worker_name"]
        assert got == text and got.encode() == text.encode(), (n, got)
        assert rows[f"WR{n}"]["links"] == normalize_reservations([records[n]]).rows["links"][0]
    assert rows["WRnull"]["worker_name"] is None
    with engine.connect() as conn:  # the table survived Bobby, and the comparison is exact
        assert conn.execute(sa.select(sa.func.count()).select_from(reservations)).scalar_one() == len(records)
        hit = conn.execute(sa.select(reservations.c.sid).where(
            reservations.c.worker_name == HOSTILE[4])).scalars().all()
        assert hit == ["WR4"]
    # an update carrying a hostile string is exact too
    load(engine, [rec("WR0", "accepted", "2026-11-20T10:00:06Z", name=HOSTILE[3])])
    assert stored(engine)["WR0"]["worker_name"] == HOSTILE[3]


@pytest.mark.parametrize("pg_copy_min_rows", [None, 1], ids=["executemany", "pg-copy"])
def test_counts_are_exact_on_a_larger_mixed_batch(engine, pg_copy_min_rows, monkeypatch):
    monkeypatch.setattr("warehouse.dialects.pgcopy.COPY_MIN_ROWS", pg_copy_min_rows)
    base = datetime(2026, 11, 20, 10, tzinfo=UTC)

    def stamp(seconds: int) -> str:
        return (base + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")

    first = [rec(f"WR{n:05d}", "pending", stamp(n % 50)) for n in range(6000)]
    assert counts(load(engine, first)) == (6000, 0, 0)
    second = []
    for n in range(7000):
        if n < 6000 and n % 3 == 0:
            second.append(rec(f"WR{n:05d}", "accepted", stamp(n % 50 + 1)))  # newer
        elif n < 6000 and n % 3 == 1:
            second.append(rec(f"WR{n:05d}", "pending", stamp(n % 50)))  # same
        elif n < 6000:
            second.append(rec(f"WR{n:05d}", "completed", stamp(n % 50 - 1)))  # older
        else:
            second.append(rec(f"WR{n:05d}", "pending", stamp(1)))  # new
    assert counts(load(engine, second)) == (1000, 2000, 4000)
    rows = stored(engine)
    assert len(rows) == 7000
    statuses = pd.Series({s: r["reservation_status"] for s, r in rows.items()}).value_counts()
    assert statuses.to_dict() == {"pending": 5000, "accepted": 2000}


@pytest.mark.parametrize("pg_copy_min_rows", [None, 1], ids=["unnest", "pg-copy"])
def test_status_history_is_the_same_on_both_postgresql_write_paths(engine, pg_copy_min_rows,
                                                                   monkeypatch):
    # history batches of >= COPY_MIN_ROWS go through binary COPY and a staging table on
    # PostgreSQL, smaller ones through unnest; elsewhere both ids run the same path
    monkeypatch.setattr("warehouse.dialects.pgcopy.COPY_MIN_ROWS", pg_copy_min_rows)
    first = [rec(f"WR{n:04d}", "pending", "2026-11-20T10:00:07Z", name=HOSTILE[n % len(HOSTILE)])
             for n in range(1200)]
    second = [rec(f"WR{n:04d}", "accepted" if n % 2 else "pending", "2026-11-20T10:01:00Z")
              for n in range(1200)]

    def load_with_history(records: list[dict[str, Any]], now: datetime) -> int:
        with engine.begin() as conn:
            written = upsert_reservations(conn, normalize_reservations(records).rows, now)
            return record_status_changes(conn, written.written_rows, now)

    assert load_with_history(first, NOW) == 1200
    later = NOW + timedelta(minutes=5)
    assert load_with_history(second, later) == 600  # only the status changes
    with engine.begin() as conn:  # the same rows again: insert-if-absent adds nothing
        again = pd.DataFrame({"sid": ["WR0001"], "reservation_status": ["accepted"],
                              "previous_status": ["pending"],
                              "date_created": [pd.Timestamp("2026-11-20T10:00:00Z")],
                              "date_updated": [pd.Timestamp("2026-11-20T10:01:00Z")]})
        record_status_changes(conn, again, later)
    with engine.connect() as conn:
        got = pd.DataFrame(conn.execute(sa.select(reservation_status_history)).mappings().all())
    assert len(got) == 1800
    moved = got[got["reservation_status"] == "accepted"]
    assert len(moved) == 600 and set(moved["previous_status"]) == {"pending"}
    assert set(moved["seconds_since_created"]) == {60}
    assert {pd.Timestamp(t).tz_convert("UTC") for t in moved["observed_at"]} == {pd.Timestamp(later)}
    inserted = got[got["previous_status"].isna()]
    assert len(inserted) == 1200 and set(inserted["seconds_since_created"]) == {7}
    assert {pd.Timestamp(t).tz_convert("UTC") for t in inserted["date_updated"]} == {
        pd.Timestamp("2026-11-20T10:00:07Z")}


def test_timestamps_keep_microseconds_and_read_back_aware_utc(engine):
    load(engine, [rec("WR1", "pending", "2026-11-20T10:00:05.123456Z")])
    row = stored(engine)["WR1"]
    assert row["date_updated"] == datetime(2026, 11, 20, 10, 0, 5, 123456, tzinfo=UTC)
    assert row["date_updated"].utcoffset() == timedelta(0)
    assert counts(load(engine, [rec("WR1", "accepted", "2026-11-20T10:00:05.123457Z")])) == (0, 1, 0)


# -- summaries and time zones -----------------------------------------------------------------
def dst_records() -> list[dict[str, Any]]:
    """Reservations every 20 minutes across New York's 2026-11-01 change (06:00 UTC) and midnights."""
    start = datetime(2026, 10, 31, 0, 0, tzinfo=UTC)
    statuses = ["completed", "accepted", "rejected", "timeout", "pending"]
    out = []
    for n in range(3 * 72):
        created = start + timedelta(minutes=20 * n)
        text = created.strftime("%Y-%m-%dT%H:%M:%SZ")
        out.append(rec(f"WR{n:04d}", statuses[n % 5], text, created=text, worker=f"WK{n % 3}"))
    return out


@pytest.mark.parametrize("zone", ["UTC", "America/New_York"])
def test_summary_days_match_pandas_tz_convert_on_every_database(engine, zone):
    load(engine, dst_records())
    result = refresh_changed_days(engine, zone)
    assert result.zone == zone
    url = engine.url.render_as_string(hide_password=False)
    assert_summary_consistent(url, zone)
    days = sorted(set(stored_daily_counts(url)["day"]))
    if zone == "UTC":
        assert days == [date(2026, 10, 31), date(2026, 11, 1), date(2026, 11, 2)]
    else:
        # 2026-10-31 00:00Z is still Oct 30 in New York; Nov 1 there lasts 25 hours
        assert days == [date(2026, 10, 30), date(2026, 10, 31), date(2026, 11, 1), date(2026, 11, 2)]
        frame = warehouse_frame(url, "reservation_daily_status_counts")
        per_day = frame.groupby("day")["reservation_count"].sum()
        assert int(per_day[date(2026, 11, 1)]) == 25 * 3


def test_zone_change_rebuilds_and_never_mixes(engine):
    url = engine.url.render_as_string(hide_password=False)
    load(engine, dst_records())
    refresh_changed_days(engine, "UTC")
    assert_summary_consistent(url, "UTC")
    result = refresh_changed_days(engine, "America/New_York")
    assert result.rebuilt
    assert_summary_consistent(url, "America/New_York")
    with engine.connect() as conn:
        assert read_state(conn, REPORTING_TIMEZONE) == "America/New_York"
    # a backfill asked for in another zone rebuilds too
    again = refresh_range(engine, date(2026, 11, 1), date(2026, 11, 1), "UTC")
    assert again.rebuilt
    assert_summary_consistent(url, "UTC")


def test_incremental_refresh_moves_rows_between_days_and_drops_empty_groups(engine):
    url = engine.url.render_as_string(hide_password=False)
    zone = "America/New_York"
    load(engine, dst_records())
    refresh_changed_days(engine, zone)
    later = NOW + timedelta(minutes=1)
    # status changes only: counts move between statuses within their days
    changed = [rec(f"WR{n:04d}", "completed", "2026-11-03T00:00:00Z",
                   created=r["date_created"], worker=r["worker_sid"])
               for n, r in enumerate(dst_records()) if n % 7 == 0]
    load(engine, changed, later)
    result = refresh_changed_days(engine, zone)
    assert not result.rebuilt and result.days
    assert_summary_consistent(url, zone)
    with engine.connect() as conn:
        zero = conn.execute(sa.select(sa.func.count()).select_from(reservation_daily_status_counts)
                            .where(reservation_daily_status_counts.c.reservation_count <= 0)).scalar_one()
    assert zero == 0
    # nothing changed since: nothing refreshed
    assert refresh_changed_days(engine, zone).days == []


def test_storage_form_per_dialect_ignores_the_session_time_zone(engine):
    """SQLite: naive UTC text; PostgreSQL: timestamptz; MySQL: DATETIME(6) holding UTC. A session
    time zone other than UTC changes nothing that is stored or read back, nor the summaries."""
    load(engine, [rec("WR1", "pending", "2026-11-01T05:30:00.250000Z",
                      created="2026-11-01T04:30:00Z")])
    name = engine.dialect.name
    with engine.connect() as conn:
        if name == "postgresql":
            conn.exec_driver_sql("SET TIME ZONE 'Asia/Kolkata'")
        elif name in ("mysql", "mariadb"):
            conn.exec_driver_sql("SET time_zone = '+05:30'")
        raw = conn.exec_driver_sql("SELECT date_updated FROM reservations").scalar_one()
        typed = conn.execute(sa.select(reservations.c.date_updated)).scalar_one()
        conn.rollback()
    assert typed == datetime(2026, 11, 1, 5, 30, 0, 250000, tzinfo=UTC)
    if name == "sqlite":
        assert raw == "2026-11-01 05:30:00.250000"
    elif name == "postgresql":
        assert raw.utcoffset() is not None and raw == typed
    else:
        assert raw == datetime(2026, 11, 1, 5, 30, 0, 250000)  # naive, UTC wall time
    # New York: created 04:30Z is 00:30 EDT on Nov 1 (the DST day), not Oct 31
    refresh_changed_days(engine, "America/New_York")
    url = engine.url.render_as_string(hide_password=False)
    assert set(stored_daily_counts(url)["day"]) == {date(2026, 11, 1)}


def test_values_a_database_cannot_store_are_handled_the_same_everywhere(engine):
    """NUL (PostgreSQL text cannot hold it) becomes U+FFFD; a value longer than its column
    (PostgreSQL/MySQL refuse it, SQLite would keep it): a display name is cut to fit, any other
    field rejects only its record, with a reason."""
    t = "2026-11-20T10:00:05Z"
    records = [rec("WR1", "pending", t, name="nul\x00inside"),
               rec("WR2", "pending", t, name="x" * 513),
               rec("WR3", "s" * 33, t),
               rec("WR4", "pending", t, name="x" * 512, links={"w": "a\x00b"})]
    normalized = normalize_reservations(records)
    assert [(r.record["sid"], r.reason) for r in normalized.rejected] == [
        ("WR3", "reservation_status is longer than 32 characters")]
    with engine.begin() as conn:
        assert counts(upsert_reservations(conn, normalized.rows, NOW)) == (3, 0, 0)
    rows = stored(engine)
    assert rows["WR1"]["worker_name"] == "nul\ufffdinside"
    assert rows["WR2"]["worker_name"] == "x" * 512
    assert rows["WR4"]["worker_name"] == "x" * 512
    assert rows["WR4"]["links"] == '{"w":"a\\u0000b"}'  # escaped inside JSON: kept as is


def test_upsert_scale_benchmark_runs_on_a_tiny_shape():
    """The benchmark's own count checks pass and it reports the harness's fields (no timing asserted)."""
    from benchmarks.upsert_scale import markdown, run

    results = run(rows=3000, databases=("sqlite",), batch=1000)
    assert [r["scenario"] for r in results] == [
        "ceiling: driver executemany INSERT", "upsert: full load",
        "upsert: 10% newer, 90% unchanged"]
    for row in results:
        assert {"scenario", "database", "rows", "seconds", "rows_per_second",
                "ratio_to_ceiling"} <= set(row)
        assert row["rows"] == 3000
    assert 200 < results[2]["updated"] < 400
    assert "| sqlite |" in markdown(results)


def test_worker_names_too_long_or_with_nul_load_the_same_everywhere(engine):
    from warehouse.normalize import normalize_workers
    from warehouse.schema import workers
    from warehouse.upsert import upsert_workers

    worker = {"sid": "WK1", "account_sid": "AC1", "workspace_sid": WS,
              "friendly_name": "Zoë 🎧 " + "y" * 600, "activity_sid": "WA1",
              "activity_name": "Busy\x00", "available": False, "attributes": '{"skills":["fr"]}',
              "date_created": "2026-11-01T00:00:00Z", "date_updated": "2026-11-01T00:00:00+00:00",
              "date_status_changed": None, "url": "https://w"}
    with engine.begin() as conn:
        assert counts(upsert_workers(conn, normalize_workers([worker]).rows, NOW)) == (1, 0, 0)
    with engine.begin() as conn:  # unchanged on a second load: the stored form is the normalized one
        assert counts(upsert_workers(conn, normalize_workers([worker]).rows, NOW)) == (0, 0, 1)
    with engine.connect() as conn:
        row = conn.execute(sa.select(workers)).mappings().one()
    assert row["friendly_name"] == ("Zoë 🎧 " + "y" * 600)[:512]
    assert row["activity_name"] == "Busy\ufffd"
    assert row["attributes"] == '{"skills":["fr"]}' and row["available"] is False
