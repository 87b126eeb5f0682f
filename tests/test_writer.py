"""The sync's writer (pipelines.writer): a writer process loads exactly what the thread loads.

Real parts only: the emulator over loopback HTTP, a real ``spawn``ed writer process, and the
three real databases. The process is forced with ``writer_mode="process"`` where a test needs
it; ``auto`` is checked to start one for heavy batches only.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa

import pipelines.writer as writer_module
from pipelines.loading import list_workers_by_workspace, load_reservations, resolve_workspaces
from pipelines.taskrouter import TaskRouterClient, credentials_from_env
from tests.helpers import assert_matches_truth, assert_summary_consistent
from warehouse.checkpoints import BackgroundCheckpoints
from warehouse.engine import create_warehouse_engine
from warehouse.migrate import ensure_schema
from warehouse.summary import refresh_changed_days


def _sync(emulator, engine: sa.Engine, mode: str, batch_rows: int = 60):
    with TaskRouterClient(credentials_from_env(emulator.env()), emulator.base_url) as client:
        listing = list_workers_by_workspace(client, resolve_workspaces(client, None))
        figures = load_reservations(client, engine, listing, batch_rows=batch_rows,
                                    writer_mode=mode)
    refresh_changed_days(engine, "UTC")
    return figures


def _history_count(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql(
            "SELECT COUNT(*) FROM reservation_status_history").scalar_one())


def test_writer_process_loads_the_truth_with_history_and_summary(emulator, engine, warehouse_url):
    first = _sync(emulator, engine, "process")
    truth = emulator.world.truth()
    assert first.writer_process and first.writer_peak_rss_mb > 0
    assert (first.inserted, first.updated, first.unchanged) == (len(truth), 0, 0)
    assert first.batches > 1 and first.write_seconds > 0
    assert_matches_truth(warehouse_url, truth)
    assert _history_count(engine) == first.history_rows == len(truth)
    assert_summary_consistent(warehouse_url)

    emulator.world.advance(60)
    second = _sync(emulator, engine, "process")
    assert second.inserted + second.updated > 0 and second.deleted_upstream > 0
    assert_matches_truth(warehouse_url, emulator.world.truth(), allow_extra=True)
    assert_summary_consistent(warehouse_url)
    rerun = _sync(emulator, engine, "process")
    assert (rerun.inserted, rerun.updated, rerun.history_rows) == (0, 0, 0)


def test_thread_and_process_write_identical_warehouses(emulator, tmp_path: Path):
    engines = {}
    for mode in ("thread", "process"):
        engines[mode] = create_warehouse_engine(f"sqlite:///{tmp_path / mode}.db")
        ensure_schema(engines[mode])
    figures = {mode: _sync(emulator, eng, mode) for mode, eng in engines.items()}
    emulator.world.advance(45)
    later = {mode: _sync(emulator, eng, mode) for mode, eng in engines.items()}
    for got in (figures, later):
        assert not got["thread"].writer_process and got["process"].writer_process
        counts = {m: (f.inserted, f.updated, f.unchanged, f.history_rows, f.deleted_upstream)
                  for m, f in got.items()}
        assert counts["thread"] == counts["process"]
    columns = ("sid, worker_sid, reservation_status, status_rank, date_created, date_updated, "
               "url, links, deleted_upstream_at IS NULL")
    tables = {}
    for mode, eng in engines.items():
        with eng.connect() as conn:
            tables[mode] = (
                conn.exec_driver_sql(f"SELECT {columns} FROM reservations ORDER BY sid").all(),
                conn.exec_driver_sql("SELECT sid, reservation_status, date_updated, previous_status,"
                                     " seconds_since_created FROM reservation_status_history"
                                     " ORDER BY sid, date_updated, reservation_status").all(),
                conn.exec_driver_sql("SELECT * FROM reservation_daily_status_counts ORDER BY "
                                     "day, workspace_sid, worker_sid, reservation_status").all(),
            )
        eng.dispose()
    assert tables["thread"] == tables["process"]


def test_auto_starts_a_process_for_heavy_batches_only(emulator, sqlite_url, monkeypatch):
    monkeypatch.setattr(writer_module, "PROCESS_MIN_WORKERS", 4)
    monkeypatch.setattr(writer_module, "HEAVY_BATCH_ROWS", 50)
    engine = create_warehouse_engine(sqlite_url)
    ensure_schema(engine)
    full = _sync(emulator, engine, "auto")
    assert full.writer_process, "an initial load has heavy batches"
    assert full.inserted == len(emulator.world.truth())
    steady = _sync(emulator, engine, "auto")
    assert not steady.writer_process, "a sync that writes nothing must not start a process"
    assert (steady.inserted, steady.updated) == (0, 0)
    monkeypatch.setattr(writer_module, "PROCESS_MIN_WORKERS", 10_000)
    emulator.world.advance(60)
    small = _sync(emulator, engine, "auto", batch_rows=10_000)
    assert not small.writer_process, "below PROCESS_MIN_WORKERS the thread always writes"
    assert_matches_truth(sqlite_url, emulator.world.truth(), allow_extra=True)
    engine.dispose()


def test_a_failing_batch_in_the_process_fails_the_sync_and_keeps_what_committed(
    emulator, sqlite_url
):
    engine = create_warehouse_engine(sqlite_url)
    ensure_schema(engine)
    truth = emulator.world.truth()
    # the last worker's reservations cannot be inserted: its batch fails inside the process
    poisoned = sorted({r["worker_sid"] for r in truth})[-1]
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TRIGGER refuse BEFORE INSERT ON reservations "
            f"WHEN NEW.worker_sid = '{poisoned}' BEGIN SELECT RAISE(ABORT, 'refused'); END")
    with pytest.raises(sa.exc.DBAPIError, match="refused"):
        _sync(emulator, engine, "process", batch_rows=30)
    with engine.connect() as conn:
        stored = conn.exec_driver_sql("SELECT COUNT(*), COUNT(DISTINCT sid),"
                                      " SUM(worker_sid = ?) FROM reservations",
                                      (poisoned,)).one()
    assert 0 < stored[0] == stored[1] < len(truth) and not stored[2]
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TRIGGER refuse")
    rerun = _sync(emulator, engine, "process")
    assert rerun.inserted == len(truth) - stored[0]
    assert_matches_truth(sqlite_url, truth)
    engine.dispose()


def test_in_memory_sqlite_and_unknown_modes():
    memory = sa.create_engine("sqlite://")
    assert not writer_module.can_use_process(memory)
    with writer_module.batch_writer(memory, 10_000, "process") as writer:
        assert not writer.may_use_process  # the process could not open the same database
    with pytest.raises(ValueError, match="SYNC_WRITER='fork'.*auto, process, thread"):
        writer_module.writer_mode("fork")
    assert writer_module.writer_mode("") == "thread"


def test_background_checkpoints_leave_nothing_in_the_wal(sqlite_url):
    engine = create_warehouse_engine(sqlite_url)
    ensure_schema(engine)
    checkpoints = BackgroundCheckpoints(engine).install()
    for batch in range(5):
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO warehouse_state (key, value, updated_at) VALUES (?, ?, ?)",
                (f"k{batch}", "x" * 50_000, "2026-11-03 12:00:00.000000"))
        checkpoints.request()
    checkpoints.finish()
    assert checkpoints.checkpoints >= 1
    path = sqlite_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as raw:
        busy, frames, copied = raw.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        # nothing was left for this checkpoint to copy: the WAL is empty or fully copied
        assert busy == 0 and frames == copied
        assert raw.execute("SELECT COUNT(*) FROM warehouse_state WHERE key LIKE 'k%'").fetchone()[0] == 5
    engine.dispose()
