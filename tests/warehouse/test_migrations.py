"""Alembic on SQLite, PostgreSQL and MariaDB: empty -> head, baseline -> head, head -> baseline -> head.

``warehouse.schema`` must equal the head revision (Alembic's own comparison finds no difference),
and reservations loaded under the baseline survive every step.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tests.helpers import schema_differences
from warehouse import migrate
from warehouse.engine import create_warehouse_engine
from warehouse.migrate import (
    SchemaOutOfDate,
    current_revision,
    downgrade,
    ensure_schema,
    head_revision,
    upgrade,
)

BASELINE = "0001_baseline"
CREATED = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
BASELINE_ROWS = [
    {"sid": f"WR{i:032d}", "account_sid": "AC1", "workspace_sid": "WS1", "worker_sid": f"WK{i % 3}",
     "worker_name": "Zoë 😀", "task_sid": f"WT{i}", "reservation_status": status,
     "status_rank": rank, "date_created": CREATED + timedelta(minutes=i),
     "date_updated": CREATED + timedelta(minutes=i, seconds=37 + i), "url": "https://x",
     "links": "{}", "first_loaded_at": CREATED + timedelta(hours=1),
     "last_changed_at": CREATED + timedelta(hours=2)}
    for i, (status, rank) in enumerate([("pending", 0), ("accepted", 1), ("completed", 3),
                                        ("timeout", 3), ("escalated", 3)])
]
ADDED_TABLES = {"reservation_status_history", "rejected_records"}


@pytest.fixture
def engine(warehouse_url: str) -> Iterator[Engine]:
    engine = create_warehouse_engine(warehouse_url)
    yield engine
    engine.dispose()


# The baseline's reservations table, as 0001 created it (no columns added later).
_baseline_reservations = sa.table("reservations", *(sa.column(k) for k in BASELINE_ROWS[0]))


def load_baseline_rows(engine: Engine) -> None:
    from warehouse.schema import UTCDateTime

    stmt = sa.insert(_baseline_reservations).values(
        {k: sa.bindparam(k, type_=UTCDateTime) if isinstance(v, datetime) else sa.bindparam(k)
         for k, v in BASELINE_ROWS[0].items()})
    with engine.begin() as conn:
        conn.execute(stmt, BASELINE_ROWS)


def stored_baseline_columns(engine: Engine) -> list[dict[str, object]]:
    from warehouse.schema import reservations

    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(*(reservations.c[k] for k in BASELINE_ROWS[0])).order_by(reservations.c.sid)
        ).mappings().all()
    return [dict(r) for r in rows]


def table_names(engine: Engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names())


def test_upgrade_from_empty_matches_the_schema_module(engine):
    assert current_revision(engine) is None
    assert ensure_schema(engine) == head_revision()
    assert current_revision(engine) == head_revision()
    assert schema_differences(engine) == []
    with engine.connect() as conn:  # the analyst view exists and reads an empty table
        assert conn.execute(sa.text("SELECT COUNT(*) FROM reservation_times")).scalar_one() == 0
    indexes = {i["name"] for i in sa.inspect(engine).get_indexes("reservations")}
    assert {"ix_reservations_worker_versions", "ix_reservations_summary",
            "ix_reservations_last_changed_at_date_created"} <= indexes


def test_baseline_upgrades_keeps_data_seeds_history_and_downgrades_back(engine, monkeypatch):
    upgrade(engine, BASELINE)
    load_baseline_rows(engine)
    original = stored_baseline_columns(engine)

    with pytest.raises(SchemaOutOfDate, match="make migrate"):
        ensure_schema(engine, auto_upgrade=False)
    assert current_revision(engine) == BASELINE  # refused: nothing changed

    ensure_schema(engine)
    assert current_revision(engine) == head_revision()
    assert schema_differences(engine) == []
    assert stored_baseline_columns(engine) == original
    with engine.connect() as conn:
        history = conn.execute(sa.text(
            "SELECT sid, reservation_status, previous_status, seconds_since_created "
            "FROM reservation_status_history ORDER BY sid")).all()
        deleted = conn.execute(sa.text(
            "SELECT COUNT(*) FROM reservations WHERE deleted_upstream_at IS NOT NULL")).scalar_one()
        times = conn.execute(sa.text(
            "SELECT sid, created_hour_utc, seconds_created_to_updated, deleted_upstream "
            "FROM reservation_times ORDER BY sid")).all()
    # history starts with every reservation's current status
    assert [tuple(h) for h in history] == [
        (r["sid"], r["reservation_status"], None,
         int((r["date_updated"] - r["date_created"]).total_seconds())) for r in BASELINE_ROWS]
    assert deleted == 0
    assert [tuple(t) for t in times] == [
        (r["sid"], r["date_created"].hour,
         int((r["date_updated"] - r["date_created"]).total_seconds()), 0) for r in BASELINE_ROWS]

    # the documented downgrade path: python -m warehouse.migrate downgrade 0001_baseline
    monkeypatch.setenv("WAREHOUSE_URL", engine.url.render_as_string(hide_password=False))
    migrate.main(["downgrade", BASELINE])
    assert current_revision(engine) == BASELINE
    assert not table_names(engine) & ADDED_TABLES
    assert "deleted_upstream_at" not in {c["name"] for c in sa.inspect(engine).get_columns("reservations")}
    assert stored_baseline_columns(engine) == original

    migrate.main(["upgrade"])
    assert current_revision(engine) == head_revision()
    assert schema_differences(engine) == []
    assert stored_baseline_columns(engine) == original
    with engine.connect() as conn:
        assert conn.execute(sa.text(
            "SELECT COUNT(*) FROM reservation_status_history")).scalar_one() == len(BASELINE_ROWS)


def test_full_downgrade_and_upgrade_round_trip(engine):
    upgrade(engine)
    downgrade(engine, "base")
    assert current_revision(engine) is None
    assert not table_names(engine) - {migrate.VERSION_TABLE}
    upgrade(engine)
    assert schema_differences(engine) == []


def test_a_sync_refuses_an_old_schema_when_told_not_to_migrate_and_upgrades_otherwise(
    sync_env, monkeypatch
):
    from tests.helpers import run_sync_job

    engine = create_warehouse_engine(sync_env["WAREHOUSE_URL"])
    try:
        upgrade(engine, BASELINE)
        monkeypatch.setenv("WAREHOUSE_AUTO_MIGRATE", "0")
        refused = run_sync_job(raise_on_error=False)
        assert not refused.success
        failures = [e for e in refused.all_events if e.is_step_failure]
        assert failures and "make migrate" in failures[0].step_failure_data.error.to_string()
        assert current_revision(engine) == BASELINE
        monkeypatch.delenv("WAREHOUSE_AUTO_MIGRATE")
        assert run_sync_job().success
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()
