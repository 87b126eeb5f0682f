"""The upsert rule of docs/databases.md on SQLite, through the same normalize + upsert path the sync uses.

Every test runs twice: through the multi-row statements the sync uses on SQLite
(warehouse.dialects.multirow) and through the plain ``executemany`` they replaced, which must agree row
for row.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from warehouse.dialects import multirow
from warehouse.dialects.base import padded_in_list
from warehouse.engine import create_warehouse_engine
from warehouse.history import record_status_changes
from warehouse.migrate import ensure_schema
from warehouse.normalize import normalize_reservations
from warehouse.upsert import _stored_versions, upsert_reservations

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def record(status: str, updated: str, sid: str = "WR" + "a" * 32) -> dict:
    return {
        "account_sid": "AC" + "1" * 32,
        "date_created": "2026-11-27T10:00:00Z",
        "date_updated": updated,
        "links": {"worker": "https://x/w", "task": "https://x/t", "workspace": "https://x/ws"},
        "reservation_status": status,
        "sid": sid,
        "task_sid": "WT" + "2" * 32,
        "url": "https://taskrouter.twilio.com/v1/x",
        "worker_name": "Zoë",
        "worker_sid": "WK" + "3" * 32,
        "workspace_sid": "WS" + "4" * 32,
    }


@pytest.fixture(params=["multi_row", "executemany"])
def engine(request, sqlite_url, monkeypatch):
    monkeypatch.setattr(multirow, "MULTI_ROW_ON_SQLITE", request.param == "multi_row")
    engine = create_warehouse_engine(sqlite_url)
    ensure_schema(engine)
    yield engine
    engine.dispose()


def load(engine, *records):
    with engine.begin() as conn:
        return upsert_reservations(conn, normalize_reservations(list(records)).rows, NOW)


def stored(engine):
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT reservation_status, date_updated FROM reservations")).one()


def test_older_version_after_newer_changes_nothing(engine):
    load(engine, record("completed", "2026-11-27T10:05:00Z"))
    counts = load(engine, record("accepted", "2026-11-27T10:01:00Z"))
    assert (counts.inserted, counts.updated, counts.unchanged) == (0, 0, 1)
    assert stored(engine)[0] == "completed"


def test_equal_date_later_status_wins_earlier_loses(engine):
    load(engine, record("accepted", "2026-11-27T10:01:00Z"))
    counts = load(engine, record("wrapping", "2026-11-27T10:01:00+00:00"))
    assert counts.updated == 1 and stored(engine)[0] == "wrapping"
    counts = load(engine, record("pending", "2026-11-27T10:01:00Z"))
    assert counts.unchanged == 1 and stored(engine)[0] == "wrapping"


def test_same_page_twice_writes_nothing(engine):
    first = load(engine, record("pending", "2026-11-27T10:00:00Z"))
    again = load(engine, record("pending", "2026-11-27T10:00:00Z"))
    assert first.inserted == 1 and (again.inserted, again.updated, again.unchanged) == (0, 0, 1)


def test_newer_version_updates_and_keeps_first_loaded_at(engine):
    load(engine, record("pending", "2026-11-27T10:00:00Z"))
    later = datetime(2026, 11, 28, 13, 0, tzinfo=UTC)
    with engine.begin() as conn:
        counts = upsert_reservations(
            conn, normalize_reservations([record("accepted", "2026-11-27T10:00:09Z")]).rows, later
        )
    assert counts.updated == 1
    with engine.connect() as conn:
        first, changed = conn.execute(
            sa.text("SELECT first_loaded_at, last_changed_at FROM reservations")
        ).one()
    assert first.startswith("2026-11-28 12:00:00") and changed.startswith("2026-11-28 13:00:00")


def test_unknown_status_is_loaded_and_bad_records_are_set_aside(engine):
    broken = record("pending", "not a date", sid="WR" + "b" * 32)
    nosid = {k: v for k, v in record("pending", "2026-11-27T10:00:00Z").items() if k != "sid"}
    normalized = normalize_reservations([record("escalated", "2026-11-27T10:00:00Z"), broken, nosid, 42])
    assert len(normalized.rows) == 1
    assert sorted(r.reason for r in normalized.rejected) == [
        "date_updated is not an ISO 8601 date", "missing sid", "record is not a JSON object"]
    with engine.begin() as conn:
        assert upsert_reservations(conn, normalized.rows, NOW).inserted == 1
    assert stored(engine)[0] == "escalated"


def test_a_sid_twice_in_one_batch_keeps_the_newest(engine):
    counts = load(engine, record("wrapping", "2026-11-27T10:03:00Z"),
                  record("accepted", "2026-11-27T10:02:00Z"),
                  record("completed", "2026-11-27T10:03:00Z"))
    assert counts.inserted == 1
    assert stored(engine)[0] == "completed"


def _mixed_batches() -> tuple[list[dict], list[dict]]:
    """5,000 reservations, then a second batch: 1,000 newer, 1,000 older, 500 equal with a
    later status, 1,500 untouched and 700 new (more rows than one multi-row INSERT holds)."""
    first = [record("pending", "2026-11-27T10:01:00Z", sid=f"WR{n:032x}") for n in range(5000)]
    second = []
    for n in range(1000):
        second.append(record("accepted", "2026-11-27T10:02:00Z", sid=f"WR{n:032x}"))
    for n in range(1000, 2000):
        second.append(record("canceled", "2026-11-27T10:00:00Z", sid=f"WR{n:032x}"))
    for n in range(2000, 2500):
        second.append(record("accepted", "2026-11-27T10:01:00Z", sid=f"WR{n:032x}"))
    second += [record("pending", "2026-11-27T10:01:00Z", sid=f"WR{n:032x}") for n in range(2500, 4000)]
    second += [record("pending", "2026-11-27T10:03:00Z", sid=f"WR{n:032x}")
               for n in range(9000, 9700)]
    return first, second


def test_multi_row_and_executemany_paths_write_the_same_rows_and_history(sqlite_url, tmp_path,
                                                                        monkeypatch):
    results = {}
    for mode, on in (("multi_row", True), ("executemany", False)):
        monkeypatch.setattr(multirow, "MULTI_ROW_ON_SQLITE", on)
        eng = create_warehouse_engine(f"sqlite:///{tmp_path / mode}.db")
        ensure_schema(eng)
        counts = []
        for batch in _mixed_batches():
            with eng.begin() as conn:
                got = upsert_reservations(conn, normalize_reservations(batch).rows, NOW)
                history = record_status_changes(conn, got.written_rows, NOW)
            counts.append((got.inserted, got.updated, got.unchanged, history))
        with eng.connect() as conn:
            rows = conn.execute(sa.text("SELECT * FROM reservations ORDER BY sid")).all()
            hist = conn.execute(sa.text(
                "SELECT * FROM reservation_status_history ORDER BY sid, date_updated")).all()
        results[mode] = (counts, rows, hist)
        eng.dispose()
    assert results["multi_row"][0] == [(5000, 0, 0, 5000), (700, 1500, 2500, 2200)]
    assert results["multi_row"] == results["executemany"]


def test_multi_row_chunks_are_powers_of_two_under_the_parameter_limit():
    for limit in (multirow.MAX_PARAMETERS, 999):  # 999: SQLite before 3.32
        for rows in (0, 1, 283, 284, 2500, 10_000):
            sizes = multirow.chunk_sizes(rows, 14, limit)
            assert sum(sizes) == rows
            assert all(size & (size - 1) == 0 and size * 14 <= limit for size in sizes)
        # a sync meets a dozen statement shapes per table, whatever its batch sizes
        shapes = {size for rows in range(1, 5000) for size in multirow.chunk_sizes(rows, 14, limit)}
        assert len(shapes) == max(shapes).bit_length() <= 12


def test_padded_in_lists_find_the_same_rows(engine):
    load(engine, *[record("pending", "2026-11-27T10:01:00Z", sid=f"WR{n:032x}") for n in range(5)])
    assert padded_in_list([]) == ()
    assert padded_in_list(["a", "b", "c"]) == ("a", "b", "c", "c")
    assert len(padded_in_list(list(range(1025)))) == 2048
    with engine.connect() as conn:
        found = _stored_versions(conn, [f"WR{n:032x}" for n in (0, 2, 4)] + ["WR-missing"])
    assert sorted(found["sid"]) == [f"WR{n:032x}" for n in (0, 2, 4)]


def test_multi_row_statements_refuse_sql_they_cannot_expand(sqlite_url):
    engine = create_warehouse_engine(sqlite_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (a, b)")
        multirow.execute_multi_row(conn, "INSERT INTO t (a, b) VALUES (?, ?)",
                                   [(n, str(n)) for n in range(1000)])
        assert conn.exec_driver_sql("SELECT count(*), sum(a) FROM t").one() == (1000, 499500)
        with pytest.raises(ValueError, match="not a one-row INSERT"):  # a second placeholder
            multirow.execute_multi_row(conn, "INSERT INTO t (a, b) VALUES (?, ?) "
                                       "ON CONFLICT DO UPDATE SET b = ?", [(1, "x")])
    engine.dispose()
