"""Two OS processes upserting overlapping reservations at the same time converge on the newest.

Each process writes every sid several times, in its own shuffled order of versions (so older
versions often arrive after newer ones, from either process), in small sorted batches, each a
transaction replayed by ``run_in_transaction`` if the database aborts it as a deadlock. The
end state must be the newest version of every row, and no error may reach the caller.
"""

from __future__ import annotations

import logging
import multiprocessing
import random
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from warehouse.engine import create_warehouse_engine, is_retryable, run_in_transaction
from warehouse.lifecycle import status_rank
from warehouse.migrate import ensure_schema
from warehouse.normalize import normalize_reservations
from warehouse.schema import reservations, warehouse_state
from warehouse.summary import refresh_changed_days
from warehouse.upsert import upsert_reservations

SIDS = 1000
ROUNDS = 3
BATCH = 250
BASE = datetime(2026, 11, 1, 5, 0, tzinfo=UTC)
ZONE = "America/New_York"
STATUSES = ["pending", "accepted", "wrapping", "completed", "rejected", "escalated"]


def version(sid_number: int, round_number: int, process: int) -> tuple[datetime, str]:
    """A version of a sid unique to (round, process): dates never tie across processes."""
    rng = random.Random(sid_number * 1000 + round_number * 10 + process)
    updated = BASE + timedelta(seconds=20 * round_number + 2 * rng.randrange(5) + process)
    return updated, rng.choice(STATUSES)


def record(n: int, updated: datetime, status: str, process: int) -> dict[str, Any]:
    sid = f"WR{n:032x}"
    return {
        "sid": sid, "account_sid": "AC1", "workspace_sid": "WS1", "worker_sid": f"WK{n % 7}",
        "worker_name": f"writer {process} 🎧 O'Brien", "task_sid": f"WT{n:032x}",
        "reservation_status": status, "date_created": "2026-11-01T04:59:00Z",
        "date_updated": updated.strftime("%Y-%m-%dT%H:%M:%SZ"), "url": f"https://x/{sid}",
        "links": {"p": str(process)},
    }


class _RetryCounter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


def writer(url: str, process: int, barrier: Any, results: Any) -> None:
    """One load: every sid in every round, rounds in a shuffled order, small sorted batches."""
    counter = _RetryCounter()
    logging.getLogger("warehouse.engine").addHandler(counter)
    engine = create_warehouse_engine(url)
    try:
        order = list(range(ROUNDS))
        random.Random(process).shuffle(order)
        batches = []
        for round_number in order:
            rows = [record(n, *version(n, round_number, process), process) for n in range(SIDS)]
            batches.extend(rows[i:i + BATCH] for i in range(0, SIDS, BATCH))
        barrier.wait(timeout=60)
        totals = [0, 0, 0]
        for number, batch in enumerate(batches):
            rows = normalize_reservations(batch).rows

            def work(conn: sa.Connection, rows: Any = rows) -> Any:
                return upsert_reservations(conn, rows, datetime.now(UTC))

            counts = run_in_transaction(engine, work, attempts=8)
            if number % 5 == process:  # summary refreshes race the other process's loads
                refresh_changed_days(engine, ZONE)
            totals[0] += counts.inserted
            totals[1] += counts.updated
            totals[2] += counts.unchanged
        results.put((process, "ok", totals, counter.count))
    except Exception as error:  # noqa: BLE001 - reported to the parent, which fails the test
        results.put((process, "error", f"{type(error).__name__}: {error}", counter.count))
    finally:
        engine.dispose()


def test_two_processes_converge_on_the_newest_version(warehouse_url):
    engine = create_warehouse_engine(warehouse_url)
    ensure_schema(engine)
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=writer, args=(warehouse_url, p, barrier, results)) for p in (0, 1)]
    for proc in procs:
        proc.start()
    outcomes = [results.get(timeout=240) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    errors = [o for o in outcomes if o[1] != "ok"]
    assert not errors, errors
    # every row written exactly once as new across both processes, whatever the interleaving
    assert sum(o[2][0] for o in outcomes) == SIDS

    expected = {}
    for n in range(SIDS):
        versions = [version(n, r, p) for r in range(ROUNDS) for p in (0, 1)]
        updated, status = max(versions, key=lambda v: (v[0], status_rank(v[1])))
        expected[f"WR{n:032x}"] = (updated, status)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(reservations.c.sid, reservations.c.date_updated,
                                      reservations.c.reservation_status,
                                      reservations.c.status_rank)).all()
    engine.dispose()
    got = {sid: (updated, status) for sid, updated, status, _rank in rows}
    assert len(got) == SIDS
    wrong = [sid for sid in expected if got[sid] != expected[sid]]
    assert not wrong, f"{len(wrong)} rows not at their newest version, e.g. {wrong[:3]}"
    assert all(rank == status_rank(status) for _sid, _u, status, rank in rows)
    # the refreshes that raced the loads left nothing a final refresh cannot make exact
    from tests.helpers import assert_summary_consistent  # imports Dagster: not in the writers

    refresh_changed_days(create_warehouse_engine(warehouse_url), ZONE)
    assert_summary_consistent(warehouse_url, ZONE)


@pytest.mark.parametrize("server", ["postgres_url", "mariadb_url"])
def test_a_real_deadlock_is_replayed_not_raised(server, request):
    """Two transactions lock two rows in opposite orders: the server kills one as a deadlock
    (PG 40P01, MariaDB 1213); ``run_in_transaction`` replays it and both succeed."""
    url = request.getfixturevalue(server)
    engine = create_warehouse_engine(url)
    ensure_schema(engine)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(warehouse_state.insert(), [{"key": k, "value": "0", "updated_at": now}
                                                for k in ("dl_a", "dl_b")])
    barrier = threading.Barrier(2, timeout=30)
    calls: list[str] = []
    seen_errors: list[bool] = []

    def bump(conn: sa.Connection, key: str, value: str) -> None:
        conn.execute(warehouse_state.update().where(warehouse_state.c.key == key)
                     .values(value=value, updated_at=datetime.now(UTC)))

    def work_for(first: str, second: str, name: str):
        def work(conn: sa.Connection) -> str:
            calls.append(name)
            bump(conn, first, name)
            if calls.count(name) == 1:  # only the first attempt waits for the other
                barrier.wait()
            bump(conn, second, name)
            return name
        return work

    def runner(first: str, second: str, name: str, out: list[Any]) -> None:
        try:
            out.append(run_in_transaction(engine, work_for(first, second, name), attempts=4))
        except Exception as error:  # noqa: BLE001 - asserted below
            seen_errors.append(is_retryable(error))
            out.append(error)

    results: list[Any] = []
    threads = [threading.Thread(target=runner, args=("dl_a", "dl_b", "one", results)),
               threading.Thread(target=runner, args=("dl_b", "dl_a", "two", results))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    engine.dispose()
    assert sorted(results) == ["one", "two"], results
    assert len(calls) == 3, calls  # exactly one transaction was replayed
    assert not seen_errors


def test_is_retryable_reads_the_driver_codes():
    class Pg(Exception):
        sqlstate = "40P01"

    assert is_retryable(sa.exc.OperationalError("x", {}, Pg()))
    assert is_retryable(sa.exc.OperationalError("x", {}, Exception(1213, "Deadlock found")))
    assert is_retryable(sa.exc.OperationalError("x", {}, Exception(1205, "Lock wait timeout")))
    assert not is_retryable(sa.exc.IntegrityError("x", {}, Exception(1062, "Duplicate")))
    assert not is_retryable(ValueError("not a database error"))
