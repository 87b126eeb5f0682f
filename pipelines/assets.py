"""Dagster assets: thin glue over ``pipelines.loading`` and ``warehouse``.

Each asset reads like its sentence: list workers, page reservations, upsert, refresh the
summary days that changed, report the figures.
"""


import time
from datetime import date
from typing import Any

import dagster as dg
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pipelines.loading import (
    SyncFigures,
    load_workers,
    resolve_workspaces,
)
from pipelines.partitions import summary_start_date
from pipelines.report import REPORT_PATH
from pipelines.resources import TaskRouterResource, WarehouseResource
from pipelines.settings import Settings
from warehouse.schema import reservation_daily_status_counts as counts_table
from warehouse.schema import workers as workers_table
from warehouse.summary import SummaryRefresh, refresh_range

GROUP = "taskrouter"
SUMMARY_KEY = dg.AssetKey("reservation_daily_status_counts")
TASKROUTER_POOL = "taskrouter_api"  # concurrency pool of every step that calls the TaskRouter API


def table_schema(table: sa.Table) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[
            dg.TableColumn(c.name, str(c.type.compile(dialect=sa.dialects.sqlite.dialect())).lower(),
                           description=c.comment or "")
            for c in table.columns
        ]
    )


def count_rows(engine: Engine, table: sa.Table) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def figures_metadata(figures: SyncFigures) -> dict[str, Any]:
    return {
        "inserted": figures.inserted,
        "updated": figures.updated,
        "unchanged": figures.unchanged,
        "rejected": figures.rejected,
        "quarantined": figures.quarantined,
        "history_rows": figures.history_rows,
        "deleted_upstream": figures.deleted_upstream,
        "returned_upstream": figures.returned_upstream,
        "filled": figures.filled,
        "events_read": figures.events_read,
        "events_applied": figures.events_applied,
        "event_reservations": figures.event_reservations,
        "event_windows": figures.event_windows,
        "events_estimated": figures.events_estimated,
        "event_gaps": figures.event_gaps,
        "rows_seen": figures.rows_seen,
        "workspaces": figures.workspaces,
        "workers": figures.workers,
        "workers_skipped": len(figures.workers_skipped),
        "workers_failed": len(figures.workers_failed),
        "events_failed": len(figures.events_failed),
        "pages": figures.pages,
        "requests": figures.requests,
        "retries": figures.retries,
        "seconds": round(figures.seconds, 3),
        "rows_per_second": round(figures.rows_per_second, 1),
        "prepare_seconds": round(figures.prepare_seconds, 3),
        "write_seconds": round(figures.write_seconds, 3),
        "index_build_seconds": round(figures.index_build_seconds, 3),
    }


def status_markdown(engine: Engine, first: date | None = None, last: date | None = None) -> str:
    c = counts_table.c
    query = sa.select(c.reservation_status, sa.func.sum(c.reservation_count)).group_by(
        c.reservation_status
    )
    if first is not None and last is not None:
        query = query.where(c.day >= first, c.day <= last)
    with engine.connect() as conn:
        rows = conn.execute(query.order_by(c.reservation_status)).all()
    lines = ["| status | reservations |", "|---|---:|"]
    lines += [f"| {status} | {int(total)} |" for status, total in rows]
    return "\n".join(lines)


def build_assets(settings: Settings) -> tuple[list[dg.AssetsDefinition], dg.DailyPartitionsDefinition]:
    daily = dg.DailyPartitionsDefinition(
        start_date=summary_start_date(settings),  # the first day with data (pipelines/partitions.py)
        timezone=settings.reporting_timezone,
        end_offset=1,  # today is a partition too
    )

    @dg.asset(
        group_name=GROUP,
        kinds={"twilio", "sql"},
        description="Every TaskRouter worker of the configured workspaces (table `workers`).",
        pool=TASKROUTER_POOL,
        metadata={"dagster/column_schema": table_schema(workers_table)},
    )
    def workers(
        context: dg.AssetExecutionContext,
        taskrouter: TaskRouterResource,
        warehouse: WarehouseResource,
    ) -> dg.MaterializeResult:
        with taskrouter.client() as client, warehouse.engine() as engine:
            workspaces = resolve_workspaces(client, taskrouter.configured_workspaces())
            figures, _ = load_workers(client, engine, workspaces)
            total = count_rows(engine, workers_table)
        context.log.info(f"workers: {figures.workers} in {figures.workspaces} workspace(s), "
                         f"{figures.inserted} new, {figures.updated} changed")
        return dg.MaterializeResult(
            metadata={"dagster/row_count": total, **figures_metadata(figures),
                      "dagster/column_schema": table_schema(workers_table),
                      "warehouse": warehouse.display_url()}
        )

    # graph-backed: plan -> one step per shard -> summary refresh once (pipelines/sharding.py)
    from pipelines.sharding import build_reservations_asset  # imports this module's helpers

    reservations = build_reservations_asset(settings, daily, workers)

    @dg.asset(
        group_name=GROUP,
        kinds={"sql"},
        deps=[reservations],
        partitions_def=daily,
        backfill_policy=dg.BackfillPolicy.single_run(),
        description=(
            "Reservations per day (of date_created in REPORTING_TIMEZONE), workspace, worker and "
            "status (table `reservation_daily_status_counts`). Every taskrouter_sync refreshes "
            "the days it changed, so it needs no automation; a backfill recomputes its whole "
            "range in one run. `make report` draws it in data/report.html."
        ),
        metadata={"dagster/column_schema": table_schema(counts_table),
                  "report": dg.MetadataValue.path(str(REPORT_PATH))},
    )
    def reservation_daily_status_counts(
        context: dg.AssetExecutionContext, warehouse: WarehouseResource
    ) -> dg.MaterializeResult:
        started = time.monotonic()
        key_range = context.partition_key_range
        first, last = date.fromisoformat(key_range.start), date.fromisoformat(key_range.end)
        with warehouse.engine() as engine:
            refresh = refresh_range(engine, first, last, warehouse.reporting_timezone)
            seconds = time.monotonic() - started
            table = status_markdown(engine, first, last)
            reservations_in_range = sum_counts(engine, first, last)
        context.log.info(
            f"summary {first}..{last}: {len(refresh.days)} day(s), {refresh.rows} row(s)"
            + (" (zone changed: rebuilt every day)" if refresh.rebuilt else "")
        )
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": refresh.rows,
                "days_refreshed": len(refresh.days),
                "reservations": reservations_in_range,
                "seconds": round(seconds, 3),
                "first_day": str(first),
                "last_day": str(last),
                "reporting_timezone": refresh.zone,
                "counts_by_status": dg.MetadataValue.md(table),
                "dagster/column_schema": table_schema(counts_table),
            }
        )

    return [workers, reservations, reservation_daily_status_counts], daily


def record_summary_days(
    context: dg.AssetExecutionContext,
    refresh: SummaryRefresh,
    daily: dg.DailyPartitionsDefinition,
    engine: Engine,
) -> None:
    """Tell Dagster which summary partitions the sync's refresh just rewrote.

    Days outside the partitions definition are still refreshed in the table; they simply have
    no partition to record.
    """
    if not refresh.days:
        return
    valid = set(daily.get_partition_keys())
    c = counts_table.c
    wanted = [d for d in refresh.days if d.isoformat() in valid]
    per_day: dict[date, dict[str, tuple[int, int]]] = {d: {} for d in wanted}
    with engine.connect() as conn:
        for start in range(0, len(wanted), 500):  # rows and reservations per day and status
            for day, status, rows, total in conn.execute(
                sa.select(c.day, c.reservation_status, sa.func.count(),
                          sa.func.sum(c.reservation_count))
                .where(c.day.in_(wanted[start:start + 500]))
                .group_by(c.day, c.reservation_status)
            ):
                key = day if isinstance(day, date) else date.fromisoformat(str(day))
                per_day.setdefault(key, {})[str(status)] = (int(rows), int(total))
    for day in wanted:
        statuses = per_day.get(day, {})
        lines = ["| status | reservations |", "|---|---:|"]
        lines += [f"| {s} | {total} |" for s, (_rows, total) in sorted(statuses.items())]
        context.log_event(
            dg.AssetMaterialization(
                asset_key=SUMMARY_KEY,
                partition=day.isoformat(),
                metadata={
                    "dagster/row_count": sum(rows for rows, _t in statuses.values()),
                    "reservations": sum(total for _r, total in statuses.values()),
                    "counts_by_status": dg.MetadataValue.md("\n".join(lines)),
                    "refreshed_by": "taskrouter_sync",
                },
            )
        )


def days_listing(days: list[date], limit: int = 100) -> list[str]:
    """The refreshed days for metadata: all of them, or the first and last ``limit // 2``."""
    keys = [d.isoformat() for d in sorted(days)]
    if len(keys) <= limit:
        return keys
    return [*keys[:limit // 2], f"... {len(keys) - limit} more ...", *keys[-(limit // 2):]]


def sum_counts(engine: Engine, first: date, last: date) -> int:
    c = counts_table.c
    with engine.connect() as conn:
        total = conn.execute(
            sa.select(sa.func.sum(c.reservation_count)).where(c.day >= first, c.day <= last)
        ).scalar_one()
    return int(total or 0)
