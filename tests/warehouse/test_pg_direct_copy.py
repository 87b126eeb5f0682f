"""PostgreSQL: new sids are COPY'd straight into the tables, and a key already there falls back.

The upsert classifies a batch under the writer lock, so the sids it finds absent cannot be
inserted by anyone else before it commits; those rows skip the staging table. These tests run
on a real PostgreSQL and check which path ran from the session's temp tables (the staging
table exists only where it was used), that the stored rows are right either way, and that a
key inserted behind the lock's back costs a fallback, never a lost or overwritten row. A first
load's batches (``expect_new``) skip even the lookup of what is stored: the primary key is the
check, and a batch that clashes is classified exactly as without the hint.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta

import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from tests.helpers import NOW, counts, rec, stored
from warehouse.dialects import for_connection
from warehouse.dialects.pgcopy import copy_new_rows
from warehouse.engine import create_warehouse_engine
from warehouse.history import record_status_changes
from warehouse.migrate import ensure_schema
from warehouse.normalize import normalize_reservations
from warehouse.schema import reservation_status_history, reservations
from warehouse.upsert import WRITES, UpsertCounts, upsert_reservations


@pytest.fixture
def pg(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    monkeypatch.setattr("warehouse.dialects.pgcopy.COPY_MIN_ROWS", 1)  # every batch big enough
    engine = create_warehouse_engine(postgres_url)
    ensure_schema(engine)
    yield engine
    engine.dispose()


def staged(conn: Connection, table: str) -> bool:
    """True when this session created the staging temp table ``table``."""
    return conn.exec_driver_sql(f"SELECT to_regclass('pg_temp.{table}')").scalar() is not None


def versions(status: str, updated: str, numbers: range) -> list[dict]:
    """Reservations WR<n> for ``numbers``, all with this status and ``date_updated``."""
    return [rec(f"WR{n:03d}", status, updated) for n in numbers]


def upsert(engine: Engine, records: list[dict], now=NOW, **options) -> UpsertCounts:  # type: ignore[no-untyped-def]
    with engine.begin() as conn:
        return upsert_reservations(conn, normalize_reservations(records).rows, now, **options)


def status_counts(engine: Engine) -> dict[str, int]:
    return pd.Series({s: r["reservation_status"] for s, r in stored(engine).items()}).value_counts().to_dict()


def history_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(
            sa.select(sa.func.count()).select_from(reservation_status_history)).scalar_one()


def test_a_batch_of_new_sids_is_copied_straight_into_both_tables(pg):
    records = [rec(f"WR{n:03d}", "pending", "2026-11-20T10:00:05Z") for n in range(50)]
    with pg.connect() as conn, conn.begin():
        written = upsert_reservations(conn, normalize_reservations(records).rows, NOW)
        assert record_status_changes(conn, written.written_rows, NOW) == 50
        assert not staged(conn, "_reservations_stage")
        assert not staged(conn, "_history_stage")
    assert counts(written) == (50, 0, 0)
    rows = stored(pg)
    assert len(rows) == 50 and {r["reservation_status"] for r in rows.values()} == {"pending"}
    assert {r["first_loaded_at"] for r in rows.values()} == {r["last_changed_at"] for r in rows.values()}
    assert history_count(pg) == 50


def test_a_mixed_batch_copies_the_new_sids_and_upserts_only_the_newer(pg):
    upsert(pg, versions("pending", "2026-11-20T10:00:05Z", range(20)))
    second = (versions("accepted", "2026-11-20T10:00:09Z", range(10))  # newer
              + versions("completed", "2026-11-20T10:00:01Z", range(10, 20))  # older
              + versions("pending", "2026-11-20T10:00:07Z", range(20, 35)))  # new
    with pg.connect() as conn, conn.begin():
        result = upsert_reservations(conn, normalize_reservations(second).rows,
                                     NOW + timedelta(minutes=1))
        assert staged(conn, "_reservations_stage")  # the ten newer versions went this way
    assert counts(result) == (15, 10, 10)
    assert status_counts(pg) == {"pending": 25, "accepted": 10}


def test_a_sid_inserted_behind_the_lock_sends_the_batch_down_the_conditional_path(pg, caplog):
    # WR001 "absent" at classification, then there (newer) when the rows are copied: it must
    # keep its newer version, and every other row must still go in
    frame = normalize_reservations(
        [rec(f"WR{n:03d}", "pending", "2026-11-20T10:00:05Z") for n in range(5)]).rows
    stamp = pd.Timestamp(NOW)
    frame = frame.assign(first_loaded_at=stamp, last_changed_at=stamp).sort_values("sid")
    newer = normalize_reservations([rec("WR001", "completed", "2026-11-20T11:00:00Z")]).rows
    with pg.begin() as conn:
        upsert_reservations(conn, newer, NOW)
    with caplog.at_level(logging.WARNING, logger="warehouse.dialects.postgresql"), pg.begin() as conn:
        for_connection(conn).write_rows(conn, WRITES["reservations"], frame,
                                        pd.Series(True, index=frame.index))
    assert "bypasses the writer lock" in caplog.text
    rows = stored(pg)
    assert sorted(rows) == [f"WR{n:03d}" for n in range(5)]
    assert rows["WR001"]["reservation_status"] == "completed"
    assert {rows[s]["reservation_status"] for s in rows if s != "WR001"} == {"pending"}


def test_history_rows_already_there_are_kept_and_the_rest_inserted(pg):
    records = [rec(f"WR{n:03d}", "pending", "2026-11-20T10:00:05Z") for n in range(3)]
    with pg.begin() as conn:
        written = upsert_reservations(conn, normalize_reservations(records).rows, NOW)
        record_status_changes(conn, written.written_rows.iloc[:1], NOW)  # WR000's row only
    later = NOW + timedelta(hours=1)
    with pg.begin() as conn:  # all three: WR000's is a rerun, the COPY refuses, staging adds two
        record_status_changes(conn, written.written_rows, later)
    with pg.connect() as conn:
        got = conn.execute(sa.select(reservation_status_history.c.sid,
                                     reservation_status_history.c.observed_at)).all()
    observed = {sid: pd.Timestamp(at).tz_convert("UTC") for sid, at in got}
    assert sorted(observed) == ["WR000", "WR001", "WR002"]
    assert observed["WR000"] == pd.Timestamp(NOW)  # the first observation stays
    assert observed["WR001"] == observed["WR002"] == pd.Timestamp(later)


def test_copy_new_rows_writes_nothing_when_a_key_exists_and_the_transaction_goes_on(pg):
    with pg.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE copy_probe (k integer PRIMARY KEY, v text)")
    with pg.begin() as conn:
        conn.exec_driver_sql("INSERT INTO copy_probe VALUES (1, 'kept')")
        assert copy_new_rows(conn, "copy_probe", ["k", "v"], [(2, "b"), (1, "clash"), (3, "c")]) is False
        assert copy_new_rows(conn, "copy_probe", ["k", "v"], [(4, "d"), (5, "e")]) is True
    with pg.connect() as conn:
        assert conn.exec_driver_sql("SELECT k, v FROM copy_probe ORDER BY k").all() == [
            (1, "kept"), (4, "d"), (5, "e")]
        assert conn.execute(sa.select(sa.func.count()).select_from(reservations)).scalar_one() == 0


def test_a_first_load_batch_copied_without_a_lookup_has_exact_counts_and_history(pg):
    records = [rec(f"WR{n:03d}", "pending", "2026-11-20T10:00:05Z") for n in range(40)]
    with pg.connect() as conn, conn.begin():
        written = upsert_reservations(conn, normalize_reservations(records).rows, NOW,
                                      expect_new=True)
        assert record_status_changes(conn, written.written_rows, NOW) == 40
        assert not staged(conn, "_reservations_stage")
    assert counts(written) == (40, 0, 0) and written.returned_sids == []
    assert written.written_rows["previous_status"].isna().all()
    assert len(stored(pg)) == 40 and history_count(pg) == 40


@pytest.mark.parametrize("copy_min_rows", [None, 1], ids=["executemany", "pg-copy"])
def test_expecting_new_rows_that_are_stored_after_all_changes_nothing_but_speed(
        engine, copy_min_rows, monkeypatch):
    # on every database: a batch announced as all new whose sids partly exist is classified
    # exactly as without the hint (PostgreSQL: the COPY clashes and rolls back to its savepoint)
    monkeypatch.setattr("warehouse.dialects.pgcopy.COPY_MIN_ROWS", copy_min_rows)
    upsert(engine, versions("pending", "2026-11-20T10:00:05Z", range(30)))
    second = (versions("accepted", "2026-11-20T10:00:09Z", range(10))  # newer
              + versions("pending", "2026-11-20T10:00:05Z", range(10, 20))  # same
              + versions("pending", "2026-11-20T10:00:06Z", range(30, 40)))  # new
    later = NOW + timedelta(minutes=1)
    with engine.begin() as conn:
        result = upsert_reservations(conn, normalize_reservations(second).rows, later,
                                     expect_new=True)
        assert record_status_changes(conn, result.written_rows, later) == 20  # 10 new, 10 moved
    assert counts(result) == (10, 10, 10)
    assert len(stored(engine)) == 40
    assert status_counts(engine) == {"pending": 30, "accepted": 10}


def test_a_load_that_adopts_a_dead_loads_deferral_over_stored_rows_counts_exactly(
        postgres_url, emulator, monkeypatch):
    # the rows are all stored, then a dead first load's record reappears: the next load runs as
    # a first load (no screen, expecting new rows), clashes, and must still count every row
    # unchanged, match the API, and build the indexes
    from tests.helpers import DEFERRABLE, assert_matches_truth, index_names
    from tests.helpers import load_from_emulator as sync
    from warehouse.initial_load import DEFERRED_INDEXES, deferrable_indexes
    from warehouse.state import write_state

    monkeypatch.setattr("warehouse.dialects.pgcopy.COPY_MIN_ROWS", 1)
    engine = create_warehouse_engine(postgres_url)
    ensure_schema(engine)
    truth = emulator.world.truth()
    assert sync(emulator, engine, batch_rows=50).inserted == len(truth)
    with engine.begin() as conn:
        for index in deferrable_indexes():
            index.drop(conn)
        write_state(conn, DEFERRED_INDEXES, '["left by a load that died"]')
    again = sync(emulator, engine, batch_rows=50)
    assert again.batches > 2 and again.index_build_seconds > 0
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, len(truth))
    assert again.history_rows == 0
    assert index_names(engine) >= DEFERRABLE
    assert_matches_truth(postgres_url, truth)
    engine.dispose()
