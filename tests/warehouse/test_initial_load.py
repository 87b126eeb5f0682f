"""A first load builds its secondary indexes after the rows (``warehouse.initial_load``).

On SQLite and PostgreSQL a load into an empty warehouse drops the deferrable indexes and builds
them when it ends, also when it ends by an exception, and a load that finds them deferred by a
process that died builds them too. MariaDB keeps its indexes throughout (its DDL cannot be rolled
back). Every test ends with the schema's full set of indexes and the data equal to the emulator's.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

import pipelines.loading as loading
from tests.helpers import DEFERRABLE, assert_matches_truth, index_names, load_from_emulator
from warehouse.engine import create_warehouse_engine
from warehouse.initial_load import (
    DEFERRED_INDEXES,
    defer_indexes_for_initial_load,
    indexes_deferred_if_first_load,
    restore_deferred_indexes,
)
from warehouse.migrate import current_revision, downgrade, ensure_schema, upgrade
from warehouse.schema import reservations
from warehouse.state import read_state


def deferred_record(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return read_state(conn, DEFERRED_INDEXES)


def defers(engine: Engine) -> bool:
    return engine.dialect.name in ("sqlite", "postgresql")


def test_the_deferrable_indexes_are_every_secondary_index_and_no_primary_key():
    assert {"ix_reservations_worker_versions", "ix_reservations_summary",
                          "ix_reservations_last_changed_at_date_created",
                          "ix_reservation_status_history_reservation_status_date_updated"} == DEFERRABLE


def test_a_first_load_builds_the_indexes_at_its_end_and_a_second_load_keeps_them(engine, emulator):
    assert index_names(engine) >= DEFERRABLE
    first = load_from_emulator(emulator, engine, batch_rows=50)
    assert first.batches > 1 and first.inserted == len(emulator.world.truth())
    assert (first.index_build_seconds > 0) == defers(engine)
    assert index_names(engine) >= DEFERRABLE
    assert deferred_record(engine) is None
    assert_matches_truth(engine.url.render_as_string(hide_password=False), emulator.world.truth())

    before = {r["sid"] for r in emulator.world.truth()}
    advanced = emulator.world.advance(60)
    assert advanced["deleted"]
    second = load_from_emulator(emulator, engine, batch_rows=50)
    assert second.index_build_seconds == 0  # not empty: the incremental path, indexes kept
    assert second.inserted + second.updated > 0
    assert second.deleted_upstream > 0  # the screen is back, and with it deletion detection
    assert index_names(engine) >= DEFERRABLE
    truth = emulator.world.truth()
    stored = assert_matches_truth(engine.url.render_as_string(hide_password=False), truth,
                                  allow_extra=True)
    assert set(stored.index) == before | {r["sid"] for r in truth}


def test_deferring_drops_only_on_an_empty_warehouse_and_restoring_is_idempotent(engine, emulator):
    if not defers(engine):
        assert defer_indexes_for_initial_load(engine) is False
        assert index_names(engine) >= DEFERRABLE and deferred_record(engine) is None
        return
    assert defer_indexes_for_initial_load(engine) is True
    assert not DEFERRABLE & index_names(engine)
    assert deferred_record(engine) is not None
    assert defer_indexes_for_initial_load(engine) is True  # already deferred: adopted
    assert sorted(restore_deferred_indexes(engine)) == sorted(DEFERRABLE)
    assert restore_deferred_indexes(engine) == []
    assert index_names(engine) >= DEFERRABLE and deferred_record(engine) is None

    load_from_emulator(emulator, engine)
    assert defer_indexes_for_initial_load(engine) is False  # rows stored: never drops
    assert index_names(engine) >= DEFERRABLE and deferred_record(engine) is None


class Stop(Exception):
    pass


def test_a_first_load_that_fails_midway_keeps_its_rows_and_still_builds_the_indexes(
        engine, emulator, monkeypatch):
    monkeypatch.setattr(loading, "PROGRESS_EVERY_S", 0.0)  # report every worker and batch

    def stop_once_rows_are_committed(message: str) -> None:
        if "(+0 new" not in message:
            raise Stop("the run was cancelled")

    with pytest.raises(Stop):
        load_from_emulator(emulator, engine, batch_rows=50, progress=stop_once_rows_are_committed)
    with engine.connect() as conn:
        kept = conn.execute(sa.select(sa.func.count()).select_from(reservations)).scalar_one()
    assert 0 < kept < len(emulator.world.truth())  # committed batches stay
    assert index_names(engine) >= DEFERRABLE and deferred_record(engine) is None

    again = load_from_emulator(emulator, engine, batch_rows=50)  # not empty any more: incremental
    assert again.index_build_seconds == 0 and again.unchanged >= kept
    assert_matches_truth(engine.url.render_as_string(hide_password=False), emulator.world.truth())


def test_indexes_left_deferred_by_a_process_that_died_are_built_by_the_next_load(engine, emulator):
    defer_indexes_for_initial_load(engine)  # ... and the process died before restoring
    assert not DEFERRABLE & index_names(engine) or not defers(engine)

    figures = load_from_emulator(emulator, engine, batch_rows=50)
    assert (figures.index_build_seconds > 0) == defers(engine)
    assert index_names(engine) >= DEFERRABLE and deferred_record(engine) is None
    assert_matches_truth(engine.url.render_as_string(hide_password=False), emulator.world.truth())


def test_a_downgrade_first_builds_indexes_a_dead_load_left_deferred(engine):
    defer_indexes_for_initial_load(engine)  # ... and the process died
    downgrade(engine, "0002_history_quarantine")  # 0003's downgrade drops its indexes by name
    assert current_revision(engine) == "0002_history_quarantine"
    upgrade(engine)
    assert index_names(engine) >= DEFERRABLE and deferred_record(engine) is None


def test_when_the_build_fails_after_a_failed_load_the_load_error_is_raised(sqlite_url):
    engine = create_warehouse_engine(sqlite_url)
    ensure_schema(engine)
    with pytest.raises(Stop, match="API went away"), indexes_deferred_if_first_load(engine) as first:
        assert first.deferred
        with engine.begin() as conn:  # the build will fail: a deferred index name is taken
            conn.exec_driver_sql("CREATE TABLE squatter (a)")
            conn.exec_driver_sql("CREATE INDEX ix_reservations_summary ON squatter (a)")
        raise Stop("API went away")
    assert deferred_record(engine) is not None  # the next load builds them
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE squatter")
    assert sorted(restore_deferred_indexes(engine)) == sorted(DEFERRABLE)
    engine.dispose()
