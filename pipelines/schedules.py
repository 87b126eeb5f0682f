"""The sync job and its schedule, which never starts a sync while another is in flight."""


import dagster as dg

SYNC_JOB = "taskrouter_sync"
IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def build_sync_job() -> dg.JobDefinition:
    return dg.define_asset_job(
        SYNC_JOB,
        selection=dg.AssetSelection.assets("workers", "reservations"),
        description=(
            "One complete sync: workers, every worker's reservations, and the summary days "
            "those changes touched."
        ),
        tags={"dagster/max_retries": "0"},
    )


def build_sync_schedule(job: dg.JobDefinition, cron: str,
                        running: bool) -> dg.ScheduleDefinition:
    @dg.schedule(
        name=f"{SYNC_JOB}_schedule",
        job=job,
        cron_schedule=cron,
        execution_timezone="UTC",
        default_status=(
            dg.DefaultScheduleStatus.RUNNING if running else dg.DefaultScheduleStatus.STOPPED
        ),
        description=(
            "Syncs TaskRouter on SYNC_CRON. TaskRouter deletes finished tasks minutes after they "
            "end, so keep this frequent. A tick while a sync is in flight is skipped."
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
