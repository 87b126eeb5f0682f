"""The whole pipeline through Dagster: emulator over HTTP -> taskrouter_sync -> real SQLite."""

from __future__ import annotations

from datetime import date, timedelta

import dagster as dg
import pytest
import sqlalchemy as sa

from pipelines.loading import list_workers_by_workspace, load_reservations, resolve_workspaces
from pipelines.taskrouter import TaskRouterClient, credentials_from_env
from tests.helpers import (
    ANCHOR,
    assert_matches_truth,
    assert_summary_consistent,
    materialization_metadata,
    run_sync_job,
    stored_daily_counts,
)
from warehouse.engine import create_warehouse_engine
from warehouse.migrate import ensure_schema


def test_full_sync_loads_exactly_the_truth(emulator, sync_env):
    result = run_sync_job()
    assert result.success
    truth = emulator.world.truth()
    assert len(truth) == 2 * 8 * 30
    assert_matches_truth(sync_env["WAREHOUSE_URL"], truth)
    meta = materialization_metadata(result, "reservations")
    assert meta["inserted"] == len(truth)
    assert meta["updated"] == 0 and meta["unchanged"] == 0
    assert meta["dagster/row_count"] == len(truth)
    assert meta["pages"] >= 16 and meta["requests"] >= meta["pages"]
    workers = materialization_metadata(result, "workers")
    assert workers["dagster/row_count"] == 16


def test_second_sync_changes_nothing_and_clock_advance_writes_only_changes(emulator, sync_env,
                                                                           monkeypatch):
    # list polling, every worker read every sync (the events feed has its own tests)
    monkeypatch.setenv("TASKROUTER_EVENTS", "0")
    url = sync_env["WAREHOUSE_URL"]
    run_sync_job()
    second = materialization_metadata(run_sync_job(), "reservations")
    assert (second["inserted"], second["updated"]) == (0, 0)
    assert second["unchanged"] == 480

    previous = {r["sid"]: (r["date_updated"], r["reservation_status"])
                for r in emulator.world.truth()}
    figures = emulator.world.advance(60)
    assert figures["changed"] and figures["created"] and figures["deleted"]
    truth = emulator.world.truth()
    changed = sum(1 for r in truth if r["sid"] in previous
                  and previous[r["sid"]] != (r["date_updated"], r["reservation_status"]))
    new = sum(1 for r in truth if r["sid"] not in previous)
    third = materialization_metadata(run_sync_job(), "reservations")
    assert (third["inserted"], third["updated"]) == (new, changed)
    assert third["unchanged"] == len(truth) - new - changed
    stored = assert_matches_truth(url, truth, allow_extra=True)
    deleted_upstream = set(previous) - {r["sid"] for r in truth}
    assert deleted_upstream and deleted_upstream <= set(stored.index), "deleted rows must stay"
    assert len(stored) == len(previous) + new
    assert_summary_consistent(url)


def test_summary_matches_group_by_after_every_sync_even_before_the_partition_start(
    emulator, sync_env, monkeypatch
):
    # the partitions start after most of the data: those days must still be summarized
    monkeypatch.setenv("SUMMARY_START_DATE", (ANCHOR.date() - timedelta(days=3)).isoformat())
    url = sync_env["WAREHOUSE_URL"]
    result = run_sync_job()
    assert_summary_consistent(url)
    days = set(stored_daily_counts(url)["day"])
    assert min(days) < ANCHOR.date() - timedelta(days=3)
    recorded = {m.partition for m in result.asset_materializations_for_node("reservations")
                if m.partition is not None}
    assert recorded and all(date.fromisoformat(k) >= ANCHOR.date() - timedelta(days=3)
                            for k in recorded)
    for _ in range(2):
        emulator.world.advance(45)
        run_sync_job()
        assert_summary_consistent(url)


def test_reporting_timezone_decides_the_day(emulator, sync_env, monkeypatch):
    monkeypatch.setenv("REPORTING_TIMEZONE", "America/New_York")
    run_sync_job()
    assert_summary_consistent(sync_env["WAREHOUSE_URL"], "America/New_York")
    # switching zones rebuilds the table instead of mixing days of two zones
    monkeypatch.setenv("REPORTING_TIMEZONE", "Asia/Kolkata")
    run_sync_job()
    assert_summary_consistent(sync_env["WAREHOUSE_URL"], "Asia/Kolkata")


def test_sync_killed_between_upsert_and_refresh_is_repaired_by_the_next(emulator, sync_env):
    url = sync_env["WAREHOUSE_URL"]
    # a sync that committed its upserts but died before the summary refresh
    engine = create_warehouse_engine(url)
    ensure_schema(engine)
    with TaskRouterClient(credentials_from_env(sync_env), emulator.base_url) as client:
        listing = list_workers_by_workspace(client, resolve_workspaces(client, None))
        load_reservations(client, engine, listing)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM reservation_daily_status_counts")).scalar() == 0
    engine.dispose()
    # the next sync reads nothing new from the API, yet repairs every day from persisted state
    result = run_sync_job()
    meta = materialization_metadata(result, "reservations")
    assert meta["inserted"] == 0
    assert meta["days_refreshed"] > 20
    assert_summary_consistent(url)


def test_materialize_all_assets_including_a_summary_partition(emulator, sync_env):
    from pipelines.assets import build_assets
    from pipelines.definitions import build_definitions
    from pipelines.settings import load_settings

    defs = build_definitions()
    assets, _ = build_assets(load_settings())
    day = (ANCHOR.date() - timedelta(days=1)).isoformat()
    result = dg.materialize(
        assets,
        resources={"taskrouter": defs.resources["taskrouter"], "warehouse": defs.resources["warehouse"]},
        partition_key=day,
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success
    summary = [m for m in result.asset_materializations_for_node("reservation_daily_status_counts")]
    assert summary and {m.partition for m in summary} == {day}
    assert "counts_by_status" in summary[-1].metadata  # the newest one carries the day's figures
    assert_summary_consistent(sync_env["WAREHOUSE_URL"])


def test_definitions_list_the_expected_assets_job_and_schedule(sync_env):
    from pipelines.definitions import build_definitions

    defs = build_definitions()
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {"workers", "reservations", "reservation_daily_status_counts"} <= keys
    assert defs.resolve_job_def("taskrouter_sync")
    schedule = defs.resolve_schedule_def("taskrouter_sync_schedule")
    assert schedule.cron_schedule == "*/5 * * * *"
    summary = defs.resolve_assets_def("reservation_daily_status_counts")
    assert summary.backfill_policy == dg.BackfillPolicy.single_run()
    partitions = summary.partitions_def
    assert isinstance(partitions, dg.DailyPartitionsDefinition)
    assert partitions.end_offset == 1


@pytest.mark.parametrize("tamper", ["token", "missing"])
def test_bad_credentials_fail_clearly_without_secrets_or_garbage(emulator, sync_env, monkeypatch,
                                                                 tamper, capsys, caplog):
    secret = "wrong-token-very-secret-9d8f7"
    if tamper == "token":
        monkeypatch.setenv("TWILIO_AUTH_TOKEN", secret)
    else:
        monkeypatch.delenv("TWILIO_AUTH_TOKEN")
        monkeypatch.delenv("TWILIO_ACCOUNT_SID")
    result = run_sync_job(raise_on_error=False)
    assert not result.success
    failure = result.get_step_failure_events()[0].event_specific_data.error
    text = failure.to_string()
    if tamper == "token":
        assert "refused the credentials" in text and "TWILIO_AUTH_TOKEN" in text
    else:
        assert "TWILIO_ACCOUNT_SID" in text and "TWILIO_API_KEY_SID" in text
    everything = text + capsys.readouterr().out + caplog.text
    assert secret not in everything
    assert emulator.world.auth_token not in everything
    engine = create_warehouse_engine(sync_env["WAREHOUSE_URL"])
    tables = set(sa.inspect(engine).get_table_names())
    with engine.connect() as conn:
        for table in {"reservations", "workers"} & tables:
            assert conn.execute(sa.text(f"SELECT COUNT(*) FROM {table}")).scalar() == 0
    engine.dispose()


def test_unknown_workspace_fails_clearly(emulator, sync_env, monkeypatch):
    monkeypatch.setenv("TASKROUTER_WORKSPACE_SIDS", "WS" + "0" * 32)
    result = run_sync_job(raise_on_error=False)
    assert not result.success
    text = result.get_step_failure_events()[0].event_specific_data.error.to_string()
    assert "WS" + "0" * 32 in text and "TASKROUTER_WORKSPACE_SIDS" in text


def test_configured_workspace_subset_is_all_that_loads(emulator, sync_env, monkeypatch):
    first = sorted(emulator.world.workspaces)[0]
    monkeypatch.setenv("TASKROUTER_WORKSPACE_SIDS", f" {first} ,")
    run_sync_job()
    truth = [r for r in emulator.world.truth() if r["workspace_sid"] == first]
    assert_matches_truth(sync_env["WAREHOUSE_URL"], truth)
