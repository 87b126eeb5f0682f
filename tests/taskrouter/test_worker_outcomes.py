"""How one worker's read ends: gone only when TaskRouter confirms it, and a failure that says
what happened to it.

A 404 on a worker's reservations marks every stored reservation of the worker deleted, so one
404 is not believed alone: the worker itself is asked for, and only a second 404 makes it gone.
A worker that cannot be read is named with how its read ended ("HTTP 500 after 3 attempts",
"HTTP 400, not retried"), and "after retries" is said only when it is true.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from pipelines.figures import SyncFigures, WorkersFailed
from pipelines.loading import list_workers_by_workspace, load_reservations, resolve_workspaces
from pipelines.taskrouter.emulator import Emulator, Faults
from tests.helpers import make_client, small_world, sync_with_functions
from warehouse.engine import create_warehouse_engine
from warehouse.migrate import ensure_schema
from warehouse.schema import reservations


def deleted_flags(url: str, worker_sid: str) -> list[bool]:
    engine = create_warehouse_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.select(reservations.c.deleted_upstream_at)
                                .where(reservations.c.worker_sid == worker_sid)).all()
    finally:
        engine.dispose()
    return [row[0] is not None for row in rows]


@pytest.mark.parametrize("reader_process", [False, True], ids=["threads", "child"])
def test_a_one_off_404_marks_nothing_and_a_worker_really_gone_is_marked(sqlite_url,
                                                                        reader_process):
    with Emulator(small_world(workspaces=1), Faults()) as emu:
        ws = next(iter(emu.world.workers))
        doomed, blip = (w.sid for w in emu.world.live_workers(ws)[:2])  # delete_workers: first
        first, _ = sync_with_functions(emu, sqlite_url)
        assert first.workers_failed == [] and deleted_flags(sqlite_url, blip) == [False] * 30

        emu.server.set_faults(Faults(missing_once=(blip,)))
        engine = create_warehouse_engine(sqlite_url)
        ensure_schema(engine)
        with make_client(emu, reader_process=reader_process) as client:
            listing = list_workers_by_workspace(client, resolve_workspaces(client, None))
            # an admin deletes ``doomed`` after the listing
            assert emu.world.delete_workers(1, ws) == [doomed]
            figures = load_reservations(client, engine, listing, batch_rows=100)
        engine.dispose()
        assert emu.server.stats.faults["missing_once"] == 1
        # the blip: a failed read, nothing marked; the worker really deleted: all marked
        assert figures.workers_failed == [blip] and figures.workers_skipped == [doomed]
        assert figures.worker_failures[blip] == ("HTTP 404 while the worker exists, not retried", 1)
        assert deleted_flags(sqlite_url, blip) == [False] * 30
        assert deleted_flags(sqlite_url, doomed) == [True] * 30
        assert f"{blip}: HTTP 404 while the worker exists" in str(WorkersFailed(figures))

        again, _ = sync_with_functions(emu, sqlite_url, reader_process=reader_process)
        assert again.workers_failed == [] and again.unchanged >= 30
        assert deleted_flags(sqlite_url, blip) == [False] * 30


@pytest.mark.parametrize("reader_process", [False, True], ids=["threads", "child"])
def test_a_failed_worker_is_named_with_its_attempts(sqlite_url, reader_process):
    with Emulator(small_world(workspaces=1), Faults()) as emu:
        ws = next(iter(emu.world.workers))
        bad = emu.world.live_workers(ws)[2].sid
        emu.server.set_faults(Faults(failing_workers=(bad,)))
        figures, _ = sync_with_functions(emu, sqlite_url, max_attempts=3,
                                         reader_process=reader_process)
    assert figures.workers_failed == [bad]
    message = str(WorkersFailed(figures))
    assert f"1 worker(s) could not be read after retries ({bad}: HTTP 500 after 3 attempts)" in (
        message)


@pytest.mark.parametrize("reader_process", [False, True], ids=["threads", "child"])
def test_a_refused_request_is_not_said_to_be_retried(sqlite_url, reader_process):
    with Emulator(small_world(workspaces=1, workers_per_workspace=3), Faults()) as emu:
        engine = create_warehouse_engine(sqlite_url)
        ensure_schema(engine)
        with make_client(emu, reader_process=reader_process) as client:
            listing = list_workers_by_workspace(client, resolve_workspaces(client, None))
            # TaskRouter refuses an unknown ReservationStatus with 400: retrying cannot help
            figures = load_reservations(client, engine, listing, status="bogus")
            stats = client.stats.snapshot()
        engine.dispose()
    workers = [sid for sids in listing.values() for sid in sids]
    assert sorted(figures.workers_failed) == sorted(workers) and stats["retries"] == 0
    message = str(WorkersFailed(figures))
    assert "3 worker(s) could not be read (" in message and "after retries" not in message
    assert all(f"{sid}: HTTP 400, not retried" in message for sid in workers)


def test_the_message_says_after_retries_only_when_every_worker_was_retried():
    retried = SyncFigures(workers_failed=["WK1", "WK2"], worker_failures={
        "WK1": ("HTTP 500 after 6 attempts", 6), "WK2": ("connection reset after 6 attempts", 6)})
    assert str(WorkersFailed(retried)).startswith(
        "2 worker(s) could not be read after retries (WK1: HTTP 500 after 6 attempts, "
        "WK2: connection reset after 6 attempts); everything else was loaded")
    mixed = SyncFigures(workers_failed=["WK1", "WK3", "WK1"], worker_failures={
        "WK1": ("HTTP 500 after 6 attempts", 6), "WK3": ("HTTP 400, not retried", 1)})
    assert str(WorkersFailed(mixed)).startswith(
        "2 worker(s) could not be read (WK1: HTTP 500 after 6 attempts, WK3: HTTP 400, "
        "not retried)")
    once = SyncFigures(workers_failed=["WK4"], worker_failures={"WK4": ("HTTP 503 after 1 attempt",
                                                                        1)})
    assert "could not be read (WK4: HTTP 503 after 1 attempt)" in str(WorkersFailed(once))
    many = SyncFigures(workers_failed=[f"WK{i}" for i in range(12)])
    assert str(WorkersFailed(many)).startswith("12 worker(s) could not be read (WK0, WK1,")
    assert "WK9 and 2 more)" in str(WorkersFailed(many))
