"""The screen that sets aside unchanged records, ordered change stamps, and summary days from hour
buckets, on SQLite, PostgreSQL and MariaDB.

The screen must give exactly the counts and rows the full classification gives (it only skips
work); stamps must rise in commit order even when a loader's clock is behind, or a summary
refresh would skip that loader's days; hour buckets must map to the right local days in zones
whose midnight falls inside a UTC hour.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pipelines.loading import load_batch
from tests.helpers import CRAFTED_WK, crafted_reservation
from warehouse.schema import reservation_daily_status_counts, reservations
from warehouse.screen import read_stored_versions, screen_records
from warehouse.summary import changed_days, refresh_changed_days, reporting_zone

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
WK = CRAFTED_WK


def rec(n: int, status: str = "pending", updated: str = "2026-11-20T10:00:05Z",
        created: str = "2026-11-20T10:00:00Z", **extra: Any) -> dict[str, Any]:
    return crafted_reservation(f"WR{n:032d}", status, updated, created, **extra)


def stored_rows(engine: Engine) -> pd.DataFrame:
    with engine.connect() as conn:
        return pd.DataFrame(conn.execute(sa.select(reservations)).mappings().all())


def test_unchanged_records_are_screened_out_and_counted_like_the_full_classification(engine):
    batch = [rec(n) for n in range(50)]
    first = load_batch(engine, batch, [WK], NOW)
    assert first.counts.inserted == 50

    with engine.connect() as conn:
        stored = read_stored_versions(conn, [WK])
    screened = screen_records(batch, stored)
    # the database renders its stored date in TaskRouter's own form on every dialect
    assert (screened.unchanged, screened.pending) == (50, [])
    assert screened.seen_sids == {r["sid"] for r in batch}

    before = stored_rows(engine)
    again = load_batch(engine, batch, [WK], NOW + timedelta(minutes=5))
    assert (again.counts.inserted, again.counts.updated, again.counts.unchanged) == (0, 0, 50)
    assert again.history_rows == 0 and again.deleted_upstream == 0
    pd.testing.assert_frame_equal(stored_rows(engine), before)


def test_records_the_screen_cannot_vouch_for_take_the_long_way_with_the_same_outcome(engine):
    load_batch(engine, [rec(n) for n in range(4)], [WK], NOW)
    batch = [
        rec(0, updated="2026-11-20T10:00:05+00:00"),  # same instant, other spelling: unchanged
        rec(1, status="accepted"),  # same date, later status: an update
        rec(2, updated="2026-11-20T10:00:04Z", status="canceled"),  # older: unchanged
        rec(3, updated="2026-11-20T10:00:06Z", status="accepted"),  # newer: an update
        rec(4),  # new
    ]
    with engine.connect() as conn:
        screened = screen_records(batch, read_stored_versions(conn, [WK]))
    assert screened.unchanged == 0 and len(screened.pending) == 5

    result = load_batch(engine, batch, [WK], NOW + timedelta(minutes=1))
    assert (result.counts.inserted, result.counts.updated, result.counts.unchanged) == (1, 2, 2)
    statuses = dict(zip(*stored_rows(engine)[["sid", "reservation_status"]].T.values, strict=True))
    assert [statuses[f"WR{n:032d}"] for n in range(5)] == [
        "pending", "accepted", "pending", "accepted", "pending"]


def test_malformed_pages_fall_back_record_by_record(engine):
    load_batch(engine, [rec(n) for n in range(3)], [WK], NOW)
    missing_status = {k: v for k, v in rec(1).items() if k != "reservation_status"}
    batch = [rec(0), missing_status, ["not", "an", "object"], rec(2, reservation_status=["x"])]
    with engine.connect() as conn:
        screened = screen_records(batch, read_stored_versions(conn, [WK]))
    assert screened.unchanged == 1 and len(screened.pending) == 3
    result = load_batch(engine, batch, [WK], NOW + timedelta(minutes=1))
    assert result.counts.unchanged == 1 and len(result.rejected) == 3
    # rejected records still exist upstream: nothing is marked deleted
    assert result.deleted_upstream == 0


def test_a_marked_reservation_seen_unchanged_has_its_mark_cleared(engine):
    load_batch(engine, [rec(0), rec(1)], [WK], NOW)
    assert load_batch(engine, [rec(0)], [WK], NOW + timedelta(minutes=1)).deleted_upstream == 1
    back = load_batch(engine, [rec(0), rec(1)], [WK], NOW + timedelta(minutes=2))
    assert (back.returned_upstream, back.counts.unchanged, back.counts.updated) == (1, 2, 0)
    assert stored_rows(engine)["deleted_upstream_at"].isna().all()


def test_stamps_rise_in_commit_order_when_a_loader_clock_is_behind(engine):
    load_batch(engine, [rec(0)], [WK], NOW)
    refresh_changed_days(engine, "UTC")
    # another host, its clock ten minutes behind, changes a reservation of another day
    late = load_batch(engine, [rec(1, created="2026-11-21T09:00:00Z",
                                   updated="2026-11-21T09:00:01Z")],
                      [], NOW - timedelta(minutes=10))
    assert late.counts.inserted == 1
    stamps = pd.to_datetime(stored_rows(engine).set_index("sid")["last_changed_at"], utc=True)
    assert stamps[f"WR{1:032d}"] > stamps[f"WR{0:032d}"]
    refreshed = refresh_changed_days(engine, "UTC")
    assert refreshed.days == [date(2026, 11, 21)]
    assert refresh_changed_days(engine, "UTC").days == []


@pytest.mark.parametrize("zone", ["Asia/Kolkata", "America/New_York", "UTC"])
def test_summary_days_come_from_hour_buckets_in_any_zone(engine, zone):
    # 18:40 UTC is 00:10 the next day in Kolkata (+05:30): the hour 18:00-19:00 spans two days
    created = ["2026-11-20T18:10:00Z", "2026-11-20T18:40:00Z", "2026-11-21T04:59:59Z"]
    batch = [rec(n, created=c, updated=c) for n, c in enumerate(created)]
    load_batch(engine, batch, [WK], NOW)
    tz = reporting_zone(zone)
    local = {pd.Timestamp(c).tz_convert(tz).date() for c in created}
    with engine.connect() as conn:
        days, newest = changed_days(conn, None, tz)
    assert local <= days and newest is not None
    refresh_changed_days(engine, zone)
    with engine.connect() as conn:
        summary = pd.DataFrame(conn.execute(sa.select(reservation_daily_status_counts))
                               .mappings().all())
    expected = pd.Series([pd.Timestamp(c).tz_convert(tz).date() for c in created]).value_counts()
    got = summary.assign(day=summary["day"].map(
        lambda d: d if isinstance(d, date) else date.fromisoformat(str(d))))
    assert got.groupby("day")["reservation_count"].sum().to_dict() == expected.to_dict()
