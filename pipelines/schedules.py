"""Jobs and schedules: the sync (never two at once) and the daily full-table checks."""


import dagster as dg

from pipelines.checks import FRESHNESS_CHECK, RESERVATIONS, SUMMARY, WORKERS

SYNC_JOB = "taskrouter_sync"
DAILY_CHECKS_JOB = "taskrouter_daily_checks"
IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]
SUMMARY_TOTALS_CHECK = dg.AssetCheckKey(SUMMARY, "day_totals_match_reservations")
# A sync still STARTED after this long is taken for dead (its process killed by OOM or a reboot
# leaves it STARTED forever): run monitoring (enabled in .dagster_home and deploy/dagster.yaml)
# terminates it, and the schedule, which skips ticks while a sync is in flight, resumes. Three
# hours is far above a full 15,000-worker sync under TaskRouter's rate limits.
SYNC_MAX_RUNTIME_S = 3 * 3600


def _default_status(running: bool) -> dg.DefaultScheduleStatus:
    return dg.DefaultScheduleStatus.RUNNING if running else dg.DefaultScheduleStatus.STOPPED


def build_sync_job(shards: int = 1) -> dg.JobDefinition:
    """Workers, reservations (which refresh the changed summary days) and the cheap checks.

    The checks of the two assets come with them; the summary-totals check is added (it runs
    after ``reservations``, over the days this sync touched); freshness is left to the daily
    job, since right after a sync it is trivially true.

    One process unless ``shards`` (``SYNC_SHARDS``) asks for more: Dagster's default
    multiprocess executor starts a Python process per step, and each one imports Dagster and
    the project again, which cost a sync launched by the daemon or the UI ~45 s on 2 cores for
    ~2 s of work. Shards need processes to run side by side, so they get Dagster's default
    executor, multiprocess (``make sync`` runs ``execute_in_process`` either way).
    """
    return dg.define_asset_job(
        SYNC_JOB,
        selection=(
            dg.AssetSelection.assets(WORKERS, RESERVATIONS)
            - dg.AssetSelection.checks(FRESHNESS_CHECK)
        ) | dg.AssetSelection.checks(SUMMARY_TOTALS_CHECK),
        description=(
            "One complete sync: workers, every worker's reservations, the summary days those "
            "changes touched, and checks over the rows this run changed."
        ),
        tags={"dagster/max_retries": "0", "dagster/max_runtime": str(SYNC_MAX_RUNTIME_S)},
        # shards: Dagster's default (multiprocess unless run config picks in_process)
        executor_def=dg.in_process_executor if shards <= 1 else None,
    )


def build_daily_checks_job() -> dg.JobDefinition:
    """Every asset check over whole tables; materializes nothing, never calls TaskRouter.
    In one process, like the sync: a dozen short queries are not worth a process each."""
    return dg.define_asset_job(
        DAILY_CHECKS_JOB,
        selection=dg.AssetSelection.checks_for_assets(WORKERS, RESERVATIONS, SUMMARY),
        description=(
            "Full-table data-quality checks (unique sids, required columns, date order, "
            "unknown statuses, summary totals) and sync freshness. Read-only."
        ),
        executor_def=dg.in_process_executor,
    )


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
            "is in flight is skipped. Starts stopped unless SYNC_SCHEDULE_RUNNING=1."
        ),
    )
    def taskrouter_sync_schedule(context: dg.ScheduleEvaluationContext):  # type: ignore[no-untyped-def]
        in_flight = context.instance.get_run_records(
            filters=dg.RunsFilter(job_name=SYNC_JOB, statuses=IN_FLIGHT), limit=1
        )
        if in_flight:
            run_id = in_flight[0].dagster_run.run_id
            return dg.SkipReason(f"{SYNC_JOB} run {run_id} is still in flight; skipping this tick")
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
