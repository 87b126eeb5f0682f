"""The contract of each ``WarehouseDialect`` hook (warehouse/dialects/), on all three databases.

One test per hook, like Dagster's shared storage suite: every database must pass the same
assertions, whatever SQL its module writes. The tests use a scratch table of their own, so
they pin the hooks, not the warehouse's tables.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa

from warehouse.dialects import BulkWrite, for_connection, for_dialect
from warehouse.dialects.base import padded_in_list
from warehouse.schema import UTCDateTime

meta = sa.MetaData()
items = sa.Table(
    "contract_items", meta,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("payload", sa.String(64)),
    sa.Column("at", UTCDateTime),
    mysql_charset="utf8mb4",
)
COLUMNS = ("key", "version", "payload", "at")
T0 = datetime(2026, 3, 29, 0, 30, 15, 123456, tzinfo=UTC)


def _newer(incoming: Any) -> sa.ColumnElement[bool]:
    return incoming.version > items.c.version


UPSERT = BulkWrite(items, COLUMNS, keys=("key",), update=("version", "payload", "at"),
                   newer=_newer, reads=("version",), order_by="key")
INSERT_IF_ABSENT = BulkWrite(items, COLUMNS, keys=("key",))


@pytest.fixture
def db(engine: sa.Engine):
    meta.create_all(engine)
    yield engine
    meta.drop_all(engine)


def stored(engine: sa.Engine) -> dict[str, tuple[int, str | None]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(items.c.key, items.c.version, items.c.payload)).all()
    return {key: (version, payload) for key, version, payload in rows}


def frame(*rows: tuple[str, int, str | None]) -> pd.DataFrame:
    return pd.DataFrame({
        "key": [r[0] for r in rows], "version": [r[1] for r in rows],
        "payload": [r[2] for r in rows],
        "at": pd.Series([T0 + timedelta(seconds=r[1]) for r in rows], dtype="datetime64[us, UTC]"),
    }).sort_values("key").reset_index(drop=True)


def test_the_flags_say_what_each_database_can_do(db):
    expected = {"sqlite": (True, True), "postgresql": (True, False), "mysql": (False, False)}
    dialect = for_dialect(db.dialect)
    assert (dialect.defers_indexes, dialect.single_writer) == expected[dialect.name]
    assert for_dialect(db.dialect) is dialect  # one instance per engine's dialect


def test_lock_is_reentrant_and_held_until_the_transaction_ends(db):
    key = "writer_lock:contract"
    taken = threading.Event()

    def other() -> None:
        with db.begin() as conn:
            for_connection(conn).lock(conn, key)
            taken.set()

    with db.begin() as conn:
        dialect = for_connection(conn)
        dialect.lock(conn, key)
        dialect.lock(conn, key)  # re-entrant inside the same transaction
        thread = threading.Thread(target=other)
        thread.start()
        time.sleep(0.5)
        assert not taken.is_set(), "a second transaction took a lock that was held"
    thread.join(timeout=30)
    assert taken.is_set(), "the lock was not released when the transaction ended"


def test_conditional_upsert_keeps_the_newer_version(db):
    with db.begin() as conn:
        stmt = for_connection(conn).conditional_upsert(
            items, ["key"], ["version", "payload"], newer=_newer, reads=["version"])
        conn.execute(stmt, [{"key": "a", "version": 2, "payload": "two", "at": T0}])
        conn.execute(stmt, [{"key": "a", "version": 1, "payload": "one", "at": T0}])
    assert stored(db) == {"a": (2, "two")}, "an older version overwrote a newer one"
    with db.begin() as conn:
        conn.execute(stmt, [{"key": "a", "version": 3, "payload": "three", "at": T0},
                            {"key": "b", "version": 1, "payload": "bee", "at": T0}])
    assert stored(db) == {"a": (3, "three"), "b": (1, "bee")}


def test_insert_if_absent_inserts_once(db):
    with db.begin() as conn:
        stmt = for_connection(conn).insert_if_absent(items, ["key"])
        conn.execute(stmt, [{"key": "a", "version": 1, "payload": "first", "at": T0}])
        conn.execute(stmt, [{"key": "a", "version": 2, "payload": "second", "at": T0},
                            {"key": "b", "version": 1, "payload": None, "at": None}])
        count = conn.execute(sa.select(sa.func.count()).select_from(items)).scalar_one()
    assert count == 2
    assert stored(db) == {"a": (1, "first"), "b": (1, None)}


def test_bind_times_round_trip_aware_utc(db):
    paris = timezone(timedelta(hours=2))
    times = pd.Series([T0, T0.astimezone(paris) + timedelta(microseconds=1), None],
                      dtype="datetime64[us, UTC]")
    with db.begin() as conn:
        dialect = for_connection(conn)
        bound = dialect.bind_times(times)
        assert bound[2] is None
        sql, order = dialect.compiled(INSERT_IF_ABSENT)
        values = {"key": ["a", "b", "c"], "version": [1, 1, 1], "payload": [None] * 3,
                  "at": bound}
        rows = [tuple(values[c][i] for c in order) if order else
                {c: values[c][i] for c in COLUMNS} for i in range(3)]
        conn.exec_driver_sql(sql, rows)
    with db.connect() as conn:
        back = dict(conn.execute(sa.select(items.c.key, items.c.at)).all())
    assert back == {"a": T0, "b": T0 + timedelta(microseconds=1), "c": None}
    assert back["a"].tzinfo is not None and back["a"].utcoffset() == timedelta(0)


def test_in_list_sql_finds_exactly_the_listed_rows(db):
    with db.begin() as conn:
        conn.execute(items.insert(), [{"key": f"k{n}", "version": n} for n in range(10)])
    with db.connect() as conn:
        dialect = for_connection(conn)
        wanted = ["k1", "k3", "k4", "nope"]
        size, params = dialect.in_list_params(wanted)
        sql = dialect.in_list_sql(sa.select(items.c.key, items.c.version), items.c.key, size)
        found = sorted(conn.exec_driver_sql(sql, params).tuples())
    assert found == [("k1", 1), ("k3", 3), ("k4", 4)]
    assert padded_in_list(wanted) == ("k1", "k3", "k4", "nope")


@pytest.mark.parametrize("copy_min_rows", [None, 1], ids=["statements", "bulk-load"])
def test_write_rows_inserts_new_rows_and_updates_only_newer_ones(db, monkeypatch, copy_min_rows):
    monkeypatch.setattr("warehouse.dialects.pgcopy.COPY_MIN_ROWS", copy_min_rows)
    first = frame(("a", 2, "a2"), ("b", 2, "b2"))
    with db.begin() as conn:
        dialect = for_connection(conn)
        dialect.write_rows(conn, UPSERT, first, pd.Series(True, index=first.index))
    again = frame(("a", 3, "a3"), ("b", 1, "b1"), ("c", 1, "c1"))
    with db.begin() as conn:
        dialect.write_rows(conn, UPSERT, again, again["key"] == "c")
    assert stored(db) == {"a": (3, "a3"), "b": (2, "b2"), "c": (1, "c1")}
    # a row wrongly marked new must not be lost or duplicated: the batch is upserted instead
    with db.begin() as conn:
        wrong = frame(("a", 4, "a4"), ("d", 1, "d1"))
        dialect.write_rows(conn, UPSERT, wrong, pd.Series(True, index=wrong.index))
    assert stored(db) == {"a": (4, "a4"), "b": (2, "b2"), "c": (1, "c1"), "d": (1, "d1")}


@pytest.mark.parametrize("copy_min_rows", [None, 1], ids=["statements", "bulk-load"])
def test_write_rows_insert_if_absent_leaves_stored_rows(db, monkeypatch, copy_min_rows):
    monkeypatch.setattr("warehouse.dialects.pgcopy.COPY_MIN_ROWS", copy_min_rows)
    with db.begin() as conn:
        dialect = for_connection(conn)
        rows = frame(("a", 1, "first"))
        dialect.write_rows(conn, INSERT_IF_ABSENT, rows, pd.Series(True, index=rows.index))
        rows = frame(("a", 2, "second"), ("b", 1, None))
        dialect.write_rows(conn, INSERT_IF_ABSENT, rows, pd.Series(True, index=rows.index))
    assert stored(db) == {"a": (1, "first"), "b": (1, None)}


def test_utc_text_formats_a_stored_time_the_same_on_every_database(db):
    from warehouse.sqlfuncs import utc_text

    with db.begin() as conn:
        conn.execute(items.insert(), [{"key": "a", "version": 1, "at": T0}])
    with db.connect() as conn:
        texts = conn.execute(sa.select(*[utc_text(items.c.at, form) for form in
                                         ("microseconds", "hour", "iso_seconds")])).one()
        hours = conn.execute(sa.select(utc_text(items.c.at, "hour"))).scalar_one()
    assert tuple(texts) == ("2026-03-29 00:30:15.123456", "2026-03-29 00",
                            "2026-03-29T00:30:15Z")
    assert hours == "2026-03-29 00"  # a second form in the statement cache: still its own SQL
