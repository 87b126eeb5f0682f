"""Asset checks of the events feed: gaps it could not fill, and a daily reconciliation of the
warehouse with TaskRouter's CumulativeStatistics. Glue over ``pipelines.reconciliation`` and
``warehouse.feed``.
"""

# no ``from __future__ import annotations``: Dagster inspects the ``context`` annotation of
# check functions at definition time and rejects it as a string.
from datetime import UTC, datetime, timedelta

import dagster as dg

from pipelines.checks import THIS_RUN
from pipelines.reconciliation import reconcile_recent_days
from pipelines.resources import TaskRouterResource, WarehouseResource
from pipelines.settings import Settings
from warehouse.feed import Gap, read_gaps

RESERVATIONS = dg.AssetKey("reservations")
RECONCILE_CHECK = dg.AssetCheckKey(RESERVATIONS, "counts_match_taskrouter_statistics")
GAPS_CHECK = dg.AssetCheckKey(RESERVATIONS, "events_cover_the_last_30_days")
GAPS_THIS_RUN = dg.AssetCheckKey(RESERVATIONS, f"events_gaps{THIS_RUN}")
MAX_LISTED = 50


def _gaps_result(gaps: list[Gap], what: str) -> dg.AssetCheckResult:
    listed = [{"workspace_sid": g.workspace_sid, "from": g.gap_start.isoformat(),
               "to": g.gap_end.isoformat(), "detected_at": g.detected_at.isoformat()}
              for g in gaps[:MAX_LISTED]]
    return dg.AssetCheckResult(
        passed=not gaps,
        severity=dg.AssetCheckSeverity.WARN,
        description=None if not gaps else (
            f"{len(gaps)} events gap(s) {what}: reservations created and deleted in them are "
            "missing for good (see docs/events.md)"),
        metadata={"gaps": len(gaps), "gap_list": dg.MetadataValue.json(listed)},
    )


def build_event_checks(settings: Settings) -> list[dg.AssetChecksDefinition]:
    days = settings.reconcile_days

    @dg.asset_check(
        asset=RESERVATIONS,
        name=GAPS_CHECK.name,
        description=(
            "No stretch of the last 30 days lost its TaskRouter Events before a sync read them "
            "(a sync gap longer than TaskRouter's 30-day retention; table `event_gaps`). Warns: "
            "reservations created and deleted inside a gap are missing for good."
        ),
    )
    def events_cover_the_last_30_days(warehouse: WarehouseResource) -> dg.AssetCheckResult:
        since = datetime.now(UTC) - timedelta(days=30)
        with warehouse.engine(migrate=False) as engine:
            gaps = [g for g in read_gaps(engine) if g.gap_end >= since]
        return _gaps_result(gaps, "in the last 30 days")

    @dg.asset_check(
        asset=RESERVATIONS,
        name=GAPS_THIS_RUN.name,
        description=(
            "This sync found no events gap: its workspaces' cursors were within TaskRouter's "
            "30-day retention (warns with the gaps it recorded in `event_gaps`)."
        ),
    )
    def events_gaps_this_run(context: dg.AssetCheckExecutionContext,
                             warehouse: WarehouseResource) -> dg.AssetCheckResult:
        record = context.instance.get_run_record_by_id(context.run.run_id)
        started = record.start_time if record is not None else None
        since = datetime.fromtimestamp(started, UTC) if started else datetime.now(UTC)
        with warehouse.engine(migrate=False) as engine:
            gaps = read_gaps(engine, since=since)
        return _gaps_result(gaps, "found by this sync")

    @dg.asset_check(
        asset=RESERVATIONS,
        name=RECONCILE_CHECK.name,
        description=(
            f"For each workspace and each of the last {days} complete days "
            "(EVENTS_RECONCILE_DAYS, REPORTING_TIMEZONE days), TaskRouter's CumulativeStatistics "
            "(reservations created, accepted, rejected, timed out, canceled, rescinded) equal the "
            "warehouse's counts (date_created; the status history's transition times). Warns with "
            "the differences; skips days the events feed did not cover. One request per "
            "workspace and day: it runs in the daily checks job, not in every sync."
        ),
    )
    def counts_match_taskrouter_statistics(
        taskrouter: TaskRouterResource, warehouse: WarehouseResource
    ) -> dg.AssetCheckResult:
        with taskrouter.client() as client, warehouse.engine(migrate=False) as engine:
            workspaces = [w["sid"] for w in client.list_workspaces(taskrouter.configured_workspaces())]
            result = reconcile_recent_days(client, engine, workspaces,
                                           warehouse.reporting_timezone, days)
        listed = [d.as_dict() for d in result.differences[:MAX_LISTED]]
        bad_days = sorted({(d.workspace_sid, d.day) for d in result.differences})
        return dg.AssetCheckResult(
            passed=not result.differences,
            severity=dg.AssetCheckSeverity.WARN,
            description=None if not result.differences else (
                f"{len(bad_days)} workspace-day(s) disagree with TaskRouter's statistics, e.g. "
                + "; ".join(f"{d.day} {d.statistic}: TaskRouter {d.taskrouter}, warehouse "
                            f"{d.warehouse}" for d in result.differences[:3])),
            metadata={
                "days_compared": len(result.compared),
                "days_skipped": len(result.skipped),
                "days_mismatched": len(bad_days),
                "differences": dg.MetadataValue.json(listed),
                "skipped": dg.MetadataValue.json(result.skipped[:MAX_LISTED]),
                "reporting_timezone": warehouse.reporting_timezone,
            },
        )

    return [events_cover_the_last_30_days, events_gaps_this_run,
            counts_match_taskrouter_statistics]
