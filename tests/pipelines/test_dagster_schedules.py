"""Schedules: configurable cron, documented default status, no tick while a sync is in flight,
and the project instance's TaskRouter API pool."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest
import yaml

from tests.helpers import PROJECT_ROOT

TICK = datetime(2026, 11, 3, 12, 5, tzinfo=UTC)


@pytest.fixture
def defs(sync_env, monkeypatch: pytest.MonkeyPatch) -> dg.Definitions:
    for name in ("SYNC_CRON", "SYNC_SCHEDULE_RUNNING", "DAILY_CHECKS_CRON"):
        monkeypatch.delenv(name, raising=False)
    from pipelines.definitions import build_definitions

    return build_definitions()


def evaluate(defs: dg.Definitions, instance: dg.DagsterInstance) -> dg.RunRequest | dg.SkipReason:
    schedule = defs.resolve_schedule_def("taskrouter_sync_schedule")
    context = dg.build_schedule_context(instance=instance, scheduled_execution_time=TICK)
    return schedule(context)


def add_run(instance: dg.DagsterInstance, job_name: str, status: dg.DagsterRunStatus) -> str:
    run_id = str(uuid.uuid4())
    instance.add_run(dg.DagsterRun(job_name=job_name, run_id=run_id, status=status))
    return run_id


def test_defaults_every_five_minutes_and_stopped(defs):
    sync = defs.resolve_schedule_def("taskrouter_sync_schedule")
    assert sync.cron_schedule == "*/5 * * * *"
    assert sync.execution_timezone == "UTC"
    assert sync.default_status == dg.DefaultScheduleStatus.STOPPED
    assert sync.job_name == "taskrouter_sync"
    daily = defs.resolve_schedule_def("taskrouter_daily_checks_schedule")
    assert daily.cron_schedule == "0 6 * * *"
    assert daily.job_name == "taskrouter_daily_checks"
    assert daily.default_status == dg.DefaultScheduleStatus.STOPPED


def test_cron_and_running_status_come_from_the_environment(sync_env, monkeypatch):
    monkeypatch.setenv("SYNC_CRON", "*/2 * * * *")
    monkeypatch.setenv("DAILY_CHECKS_CRON", "30 4 * * *")
    monkeypatch.setenv("SYNC_SCHEDULE_RUNNING", "1")
    from pipelines.definitions import build_definitions

    defs = build_definitions()
    sync = defs.resolve_schedule_def("taskrouter_sync_schedule")
    assert sync.cron_schedule == "*/2 * * * *"
    assert sync.default_status == dg.DefaultScheduleStatus.RUNNING
    daily = defs.resolve_schedule_def("taskrouter_daily_checks_schedule")
    assert daily.cron_schedule == "30 4 * * *"
    assert daily.default_status == dg.DefaultScheduleStatus.RUNNING


def test_tick_requests_a_run_when_nothing_is_in_flight(defs):
    with dg.instance_for_test() as instance:
        # finished syncs and in-flight runs of other jobs do not hold a tick back
        add_run(instance, "taskrouter_sync", dg.DagsterRunStatus.SUCCESS)
        add_run(instance, "taskrouter_sync", dg.DagsterRunStatus.FAILURE)
        add_run(instance, "taskrouter_daily_checks", dg.DagsterRunStatus.STARTED)
        result = evaluate(defs, instance)
    assert isinstance(result, dg.RunRequest)


IN_FLIGHT = [dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
             dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]


def test_tick_is_skipped_while_a_sync_is_in_flight(defs):
    with dg.instance_for_test() as instance:
        add_run(instance, "taskrouter_sync", dg.DagsterRunStatus.SUCCESS)
        for status in IN_FLIGHT:
            run_id = add_run(instance, "taskrouter_sync", status)
            result = evaluate(defs, instance)
            assert isinstance(result, dg.SkipReason), status
            assert run_id in (result.skip_message or "")
            # once that run ends, the next tick syncs again
            instance.report_run_failed(instance.get_run_by_id(run_id))
            assert isinstance(evaluate(defs, instance), dg.RunRequest), status


def test_a_real_in_flight_sync_blocks_the_tick(defs, emulator):
    """The same through a run Dagster itself created for the job, mid-flight."""
    job = defs.resolve_job_def("taskrouter_sync")
    with dg.instance_for_test() as instance:
        run = instance.create_run_for_job(job_def=job, status=dg.DagsterRunStatus.STARTED)
        result = evaluate(defs, instance)
        assert isinstance(result, dg.SkipReason) and run.run_id in (result.skip_message or "")


def test_project_instance_config_is_valid_and_pools_the_taskrouter_api(defs, tmp_path: Path):
    text = (PROJECT_ROOT / ".dagster_home" / "dagster.yaml").read_text()
    config = yaml.safe_load(text)
    assert "run_queue" not in config  # would conflict with (and be ignored next to) `concurrency`
    (tmp_path / "dagster.yaml").write_text(text)
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        concurrency = instance.get_concurrency_config()
    assert concurrency.pool_config.default_pool_limit == 1
    assert concurrency.pool_config.pool_granularity.value == "run"
    assert concurrency.run_queue_config is not None
    assert concurrency.run_queue_config.max_concurrent_runs == 4
    assert defs.resolve_assets_def("workers").op.pool == "taskrouter_api"
    # reservations is graph-backed (pipelines/sharding.py): its steps that call TaskRouter pool
    graph = defs.resolve_assets_def("reservations").node_def
    pools = {op.name: op.pool for op in graph.iterate_op_defs()}
    assert pools["plan_shards"] == pools["load_shard"] == "taskrouter_api"
    assert defs.resolve_assets_def("reservation_daily_status_counts").op.pool is None


def test_production_instance_config_names_postgres_storage():
    config = yaml.safe_load((PROJECT_ROOT / "deploy" / "dagster.yaml").read_text())
    storage = config["storage"]["custom"]  # PostgreSQL from DAGSTER_PG_* (pipelines/instance.py)
    assert (storage["module"], storage["class"]) == ("pipelines.instance", "PostgresFromEnvironment")
    assert config["concurrency"]["pools"] == {"default_limit": 1, "granularity": "run"}
    assert config["run_coordinator"]["module"] == "dagster.core.run_coordinator"


def test_a_slot_left_by_a_killed_sync_does_not_hang_the_next_headless_sync(
    emulator, sync_env, tmp_path: Path
):
    """A `make sync` killed mid-run leaves its run STARTED and its pool slot claimed; with
    run-level pools the next headless sync still runs (op-level pools would wait forever)."""
    home = Path(sync_env["DAGSTER_HOME"])
    (home / "dagster.yaml").write_text((PROJECT_ROOT / ".dagster_home" / "dagster.yaml").read_text())
    from tests.helpers import run_sync_job

    with dg.DagsterInstance.from_config(str(home)) as instance:
        dead = add_run(instance, "taskrouter_sync", dg.DagsterRunStatus.STARTED)
        storage = instance.event_log_storage
        storage.initialize_concurrency_limit_to_default("taskrouter_api")
        claim = storage.claim_concurrency_slot("taskrouter_api", dead, "reservations")
        assert claim.is_claimed
        assert run_sync_job(instance).success


def test_a_dead_sync_cannot_hold_the_schedule_forever():
    """A sync whose process died stays STARTED, and the schedule skips ticks while one is in
    flight: the job carries a max runtime, and both instance configs enable the run monitoring
    that enforces it (Dagster's documented job timeout)."""
    import yaml

    from pipelines.definitions import defs
    from pipelines.schedules import SYNC_JOB, SYNC_MAX_RUNTIME_S
    from tests.helpers import PROJECT_ROOT

    job = defs.resolve_job_def(SYNC_JOB)  # get_job_def warns: "Found asset job named ..."
    assert job.tags["dagster/max_runtime"] == str(SYNC_MAX_RUNTIME_S)
    for config in (".dagster_home/dagster.yaml", "deploy/dagster.yaml"):
        settings = yaml.safe_load((PROJECT_ROOT / config).read_text())
        assert settings["run_monitoring"]["enabled"] is True, config
