"""Jobs and schedules: the sync (never two at once) and the daily full-table checks."""

import time
from datetime import UTC, datetime

import dagster as dg

from pipelines.checks import RESERVATIONS, WORKERS
from pipelines.heartbeat import HeartbeatTiming, heartbeat_timing, last_sign_of_life

SYNC_JOB = "taskrouter_sync"
DAILY_CHECKS_JOB = "taskrouter_daily_checks"
IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]
# a run in these states has (or had) a process; a QUEUED one waits for the daemon's queue
PROCESS_STATES = frozenset(IN_FLIGHT) - {dg.DagsterRunStatus.QUEUED}
# A last resort behind the heartbeat (pipelines/heartbeat.py, which frees a dead sync within
# minutes, from the schedule itself): run monitoring, where the daemon runs it, ends a sync
# still running after three hours, far above a full 15,000-worker sync under rate limits.
SYNC_MAX_RUNTIME_S = 3 * 3600


def _default_status(running: bool) -> dg.DefaultScheduleStatus:
    return dg.DefaultScheduleStatus.RUNNING if running else dg.DefaultScheduleStatus.STOPPED


def build_sync_job(check_keys: list[dg.AssetCheckKey], shards: int = 1) -> dg.JobDefinition:
    """Workers, reservations (which refresh the changed summary days) and the cheap checks.

    Only ``check_keys``, the run-scoped checks (``*_this_run``, pipelines/checks.py), come with
    it, the summary's included (it runs after ``reservations``, over the days this sync
    touched): the whole-table checks keep their own results, which a sync never overwrites.
    Freshness is left to the daily job, since right after a sync it is trivially true, and so
    is the reconciliation with TaskRouter's statistics (a request per workspace and day).

    One process unless ``shards`` (``SYNC_SHARDS``) asks for more: Dagster's default
    multiprocess executor starts a Python process per step, and each one imports Dagster and
    the project again, many times the sync's own work (benchmarks/results/design-notes.md).
    Shards need processes to run side by side, so they get Dagster's default executor,
    multiprocess (``make sync`` runs ``execute_in_process`` either way).
    """
    return dg.define_asset_job(
        SYNC_JOB,
        selection=(
            dg.AssetSelection.assets(WORKERS, RESERVATIONS).without_checks()
            | dg.AssetSelection.checks(*check_keys)
        ),
        description=(
            "One complete sync: workers, every worker's reservations, the summary days those "
            "changes touched, and checks over the rows this run changed."
        ),
        tags={"dagster/max_retries": "0", "dagster/max_runtime": str(SYNC_MAX_RUNTIME_S)},
        # shards: Dagster's default (multiprocess unless run config picks in_process)
        executor_def=dg.in_process_executor if shards <= 1 else None,
    )


def build_daily_checks_job(check_keys: list[dg.AssetCheckKey]) -> dg.JobDefinition:
    """Every whole-table asset check; materializes nothing, never migrates, and calls TaskRouter
    only for the reconciliation with its statistics. In one process, like the sync: a few
    queries are not worth a process each."""
    return dg.define_asset_job(
        DAILY_CHECKS_JOB,
        selection=dg.AssetSelection.checks(*check_keys),
        description=(
            "Full-table data-quality checks (unique sids, required columns, date order, "
            "unknown statuses, summary totals), sync freshness, events gaps, and the daily "
            "reconciliation with TaskRouter's CumulativeStatistics. Writes nothing."
        ),
        executor_def=dg.in_process_executor,
    )


def fail_dead_run(instance: dg.DagsterInstance, record: dg.RunRecord, silent_s: float,
                  timing: HeartbeatTiming) -> str:
    """Mark a run whose process is gone as failed and free its pool slots; returns why."""
    run = record.dagster_run
    why = (f"{run.job_name} run {run.run_id} was {run.status.value} but silent for "
           f"{silent_s:.0f}s (its process writes a heartbeat every {timing.interval_s:g}s; "
           f"dead after {timing.dead_after_s:g}s): its process is gone (killed, out of memory, "
           "host restarted). Marked FAILED by taskrouter_sync_schedule; the next sync reloads "
           "what it did not finish.")
    instance.report_run_failed(run, message=why)
    if instance.event_log_storage.supports_global_concurrency_limits:
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
    return why


def build_sync_schedule(job: dg.JobDefinition, cron: str,
                        running: bool) -> dg.ScheduleDefinition:
    @dg.schedule(
        name=f"{SYNC_JOB}_schedule",
        job=job,
        cron_schedule=cron,
        execution_timezone="UTC",
        default_status=_default_status(running),
        description=(
            "Syncs TaskRouter on SYNC_CRON (default every 5 minutes, UTC). TaskRouter deletes "
            "finished tasks minutes after they end, so keep this frequent. A tick while a sync "
            "is in flight is skipped, unless that sync's process is dead (no heartbeat for "
            "SYNC_DEAD_AFTER_SECONDS, default 90): it is then marked failed and a sync starts. "
            "Starts stopped unless SYNC_SCHEDULE_RUNNING=1."
        ),
    )
    def taskrouter_sync_schedule(context: dg.ScheduleEvaluationContext):  # type: ignore[no-untyped-def]
        timing, _problems = heartbeat_timing()  # the problems failed the definitions' load
        tick = context.scheduled_execution_time
        now = tick.timestamp() if tick is not None else time.time()
        records = context.instance.get_run_records(
            filters=dg.RunsFilter(job_name=SYNC_JOB, statuses=IN_FLIGHT)
        )
        waiting: list[str] = []  # why each live (or queued) sync holds this tick back
        for record in records:
            run = record.dagster_run
            if run.status not in PROCESS_STATES:
                waiting.append(f"{SYNC_JOB} run {run.run_id} is queued")
                continue
            alive_at = last_sign_of_life(context.instance, record)
            if now - alive_at <= timing.dead_after_s:
                waiting.append(
                    f"{SYNC_JOB} run {run.run_id} is still in flight (last heartbeat "
                    f"{datetime.fromtimestamp(alive_at, UTC):%Y-%m-%d %H:%M:%S} UTC)")
                continue
            context.log.warning(fail_dead_run(context.instance, record, now - alive_at, timing))
        if waiting:
            return dg.SkipReason("; ".join(waiting) + "; skipping this tick")
        return dg.RunRequest()

    return taskrouter_sync_schedule


def build_daily_checks_schedule(job: dg.JobDefinition, cron: str,
                                running: bool) -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(
        name=f"{DAILY_CHECKS_JOB}_schedule",
        job=job,
        cron_schedule=cron,
        execution_timezone="UTC",
        default_status=_default_status(running),
        description=(
            "Runs the full-table checks on DAILY_CHECKS_CRON (default 06:00 UTC). Starts "
            "stopped unless SYNC_SCHEDULE_RUNNING=1."
        ),
    )
