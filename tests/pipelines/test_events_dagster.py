"""The events feed through Dagster: what a sync costs in requests on 400 workers, the switch,
and the daily reconciliation with TaskRouter's CumulativeStatistics (which must warn when the
warehouse disagrees)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import dagster as dg
import pytest
import sqlalchemy as sa

from pipelines.taskrouter.emulator import Emulator, Faults
from tests.helpers import materialization_metadata, run_sync_job, small_world
from warehouse.engine import create_warehouse_engine
from warehouse.schema import event_cursors, reservation_status_history, reservations


@pytest.fixture
def env_for(monkeypatch, tmp_path):  # type: ignore[no-untyped-def]
    def apply(emulator: Emulator, **extra: str) -> dict[str, str]:
        for name in ("TWILIO_API_KEY_SID", "TWILIO_API_KEY_SECRET", "TASKROUTER_WORKSPACE_SIDS",
                     "REPORTING_TIMEZONE", "SUMMARY_START_DATE", "TASKROUTER_EVENTS"):
            monkeypatch.delenv(name, raising=False)
        env = {**emulator.env(), "WAREHOUSE_URL": f"sqlite:///{tmp_path / 'w.db'}",
               "DAGSTER_HOME": str(tmp_path), **extra}
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        return env
    return apply


def api_requests(emulator: Emulator) -> int:
    return emulator.server.stats.as_dict()["api_requests"]


def test_400_workers_cost_a_few_requests_when_quiet_and_a_few_more_when_busy(env_for):
    config = small_world(workers_per_workspace=200, reservations_per_worker=5)
    with Emulator(config, Faults()) as emu:
        env_for(emu)
        instance = dg.DagsterInstance.ephemeral()
        first = run_sync_job(instance)
        assert materialization_metadata(first, "reservations")["rows_seen"] == 2000
        before = api_requests(emu)
        quiet = run_sync_job(instance)
        quiet_requests = api_requests(emu) - before
        assert quiet_requests <= 20, quiet_requests
        meta = materialization_metadata(quiet, "reservations")
        assert meta["rows_seen"] == 0 and meta["inserted"] == 0

        figures = emu.world.churn(30, new_per_worker=1, changed_share=0.0)  # every worker busy
        assert figures["created"] >= 400
        before = api_requests(emu)
        busy = run_sync_job(instance)
        busy_requests = api_requests(emu) - before
        assert busy_requests <= 40, busy_requests
        meta = materialization_metadata(busy, "reservations")
        ever = {r["sid"] for r in emu.world.ever()}
        engine = create_warehouse_engine(_url())
        with engine.connect() as conn:
            stored = set(conn.execute(sa.select(reservations.c.sid)).scalars())
        engine.dispose()
        assert stored == ever
        assert meta["events_applied"] > 400 and meta["rows_seen"] == 0


def _url() -> str:
    import os

    return os.environ["WAREHOUSE_URL"]


def test_the_switch_turns_the_feed_off(env_for):
    with Emulator(small_world(), Faults()) as emu:
        env_for(emu, TASKROUTER_EVENTS="off")
        run_sync_job()
        emu.world.advance(10)
        meta = materialization_metadata(run_sync_job(), "reservations")
        assert emu.server.stats.events_requests == 0
        assert meta["events_applied"] == 0 and meta["rows_seen"] == len(emu.world.truth())
        assert set(meta["list_sweeps"].values()) == {"events feed off (TASKROUTER_EVENTS=0)"}


def check_result(result: dg.ExecuteInProcessResult, name: str) -> dg.AssetCheckEvaluation:
    found = [e for e in result.get_asset_check_evaluations() if e.check_name == name]
    assert len(found) == 1, [e.check_name for e in result.get_asset_check_evaluations()]
    return found[0]


def run_daily_checks() -> dg.ExecuteInProcessResult:
    from pipelines.definitions import build_definitions

    job = build_definitions().resolve_job_def("taskrouter_daily_checks")
    return job.execute_in_process(instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)


@pytest.fixture
def synced(env_for) -> Iterator[Emulator]:  # type: ignore[no-untyped-def]
    with Emulator(small_world(workers_per_workspace=4, reservations_per_worker=40,
                              arrivals_per_hour=4.0), Faults()) as emu:
        env_for(emu, EVENTS_RECONCILE_DAYS="5")
        run_sync_job()
        emu.world.advance(60)
        run_sync_job()
        yield emu


def test_reconciliation_matches_taskrouter_and_warns_when_the_warehouse_disagrees(synced):
    result = run_daily_checks()
    check = check_result(result, "counts_match_taskrouter_statistics")
    meta = {k: getattr(v, "value", v) for k, v in check.metadata.items()}
    assert check.passed, meta["differences"]
    assert meta["days_compared"] == 5 * 2 and meta["days_skipped"] == 0
    assert check_result(result, "events_cover_the_last_30_days").passed

    # one accepted transition of 2026-11-01 goes missing, one reservation appears twice as many
    engine = create_warehouse_engine(_url())
    h = reservation_status_history.c
    with engine.begin() as conn:
        victim = conn.execute(
            sa.select(h.sid, h.date_updated).where(
                h.reservation_status == "accepted",
                h.date_updated >= datetime(2026, 11, 1, tzinfo=UTC),
                h.date_updated < datetime(2026, 11, 2, tzinfo=UTC)).limit(1)).one()
        conn.execute(reservation_status_history.delete().where(
            h.sid == victim[0], h.reservation_status == "accepted"))
        workspace = conn.execute(sa.select(reservations.c.workspace_sid)
                                 .where(reservations.c.sid == victim[0])).scalar_one()
    check = check_result(run_daily_checks(), "counts_match_taskrouter_statistics")
    meta = {k: getattr(v, "value", v) for k, v in check.metadata.items()}
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert meta["differences"] == [{
        "workspace_sid": workspace, "day": "2026-11-01", "statistic": "reservations_accepted",
        "taskrouter": meta["differences"][0]["taskrouter"],
        "warehouse": meta["differences"][0]["taskrouter"] - 1, "difference": -1}]

    # days before the feed began are not compared
    with engine.begin() as conn:
        conn.execute(event_cursors.update().values(
            coverage_start=datetime(2026, 11, 1, 12, tzinfo=UTC)))
    engine.dispose()
    check = check_result(run_daily_checks(), "counts_match_taskrouter_statistics")
    meta = {k: getattr(v, "value", v) for k, v in check.metadata.items()}
    assert check.passed and meta["days_compared"] == 2 and meta["days_skipped"] == 8
    assert all("before the events coverage began" in s["why"] for s in meta["skipped"])
