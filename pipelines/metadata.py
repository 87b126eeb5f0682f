"""What the catalog and each materialization show: table schemas and names, row counts, a
sync's figures and each summary day's, shared by the assets, the shard ops and the checks.

Only reads (the warehouse's dialect, counts); nothing here loads or writes data.
"""

import os
import re
from collections.abc import Iterable
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pipelines.figures import SyncFigures
from warehouse import dictionary
from warehouse import schema as warehouse_schema
from warehouse.engine import DEFAULT_WAREHOUSE_URL, WarehouseUrlError, normalize_url
from warehouse.lifecycle import KNOWN_STATUSES
from warehouse.schema import reservation_daily_status_counts as counts_table
from warehouse.summary import SummaryRefresh

GROUP = "taskrouter"
SUMMARY_KEY = dg.AssetKey("reservation_daily_status_counts")
RESERVATIONS_KEY = dg.AssetKey("reservations")
TASKROUTER_POOL = "taskrouter_api"  # concurrency pool of every step that calls the TaskRouter API
# Who answers for these assets in the catalog; change it to your team (or e-mail addresses).
OWNERS = ["team:taskrouter-warehouse"]
# the asset -> the warehouse table it is (catalog metadata)
ASSET_TABLES = {"workers": "workers", "reservations": "reservations",
                "reservation_daily_status_counts": "reservation_daily_status_counts"}


def warehouse_dialect(url: str | None = None) -> sa.Dialect:
    """The dialect of ``WAREHOUSE_URL`` (or ``url``), without connecting; SQLite's when the URL
    is unusable (the run reports that, with its fix, when it opens the warehouse)."""
    try:
        parsed = normalize_url(url if url is not None else os.environ.get("WAREHOUSE_URL"))
    except WarehouseUrlError:
        parsed = normalize_url(DEFAULT_WAREHOUSE_URL)
    return parsed.get_dialect()()


def table_schema(table: sa.Table, dialect: sa.Dialect | None = None) -> dg.TableSchema:
    """The catalog's column schema: the warehouse's own types (``WAREHOUSE_URL``'s dialect unless
    given), nullability, uniqueness and the data dictionary's descriptions."""
    compile_for = dialect or warehouse_dialect()
    single_key = len(table.primary_key.columns) == 1
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                c.name,
                str(c.type.compile(dialect=compile_for)).lower(),
                description=dictionary.describe(table.name, c.name) or None,
                constraints=dg.TableColumnConstraints(
                    nullable=bool(c.nullable), unique=bool(c.primary_key and single_key)),
            )
            for c in table.columns
        ]
    )


def table_name(table: str, url: str | None = None) -> str:
    """``database.table`` (PostgreSQL: ``database.public.table``) for ``dagster/table_name``;
    SQLite names the database by its file name. Never carries credentials."""
    try:
        parsed = normalize_url(url if url is not None else os.environ.get("WAREHOUSE_URL"))
    except WarehouseUrlError:
        return table
    database = parsed.database or ""
    if parsed.get_backend_name() == "sqlite":
        database = Path(database).stem if database and database != ":memory:" else "main"
    elif parsed.get_backend_name() == "postgresql":
        database = f"{database}.public" if database else "public"
    return f"{database}.{table}" if database else table


def definition_line(table: str) -> int:
    """The line of ``warehouse/schema.py`` where ``table`` is declared (1 when not found)."""
    path = Path(warehouse_schema.__file__)
    pattern = re.compile(rf"^\s*\"{re.escape(table)}\",\s*$")
    lines = path.read_text().splitlines()
    for number, line in enumerate(lines, start=1):
        if pattern.match(line) and number > 1 and "sa.Table(" in lines[number - 2]:
            return number - 1
    return 1


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


def summary_day_metadata(engine: Engine, days: Iterable[date], refreshed_by: str,
                         zone: str) -> dict[date, dict[str, Any]]:
    """Each day's own figures, under the one set of keys every path that writes a summary
    partition uses (the sync, a backfill of one day or a range): ``dagster/row_count`` (the
    day's rows in the table), ``reservations`` and one number per status, so the UI plots the
    daily status counts partition by partition."""
    c = counts_table.c
    wanted = sorted(set(days))
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
    result: dict[date, dict[str, Any]] = {}
    for day in wanted:
        statuses = per_day.get(day, {})
        totals = {status: 0 for status in KNOWN_STATUSES}  # every known status, 0 included
        totals.update({status: total for status, (_rows, total) in statuses.items()})
        lines = ["| status | reservations |", "|---|---:|"]
        lines += [f"| {status} | {total} |" for status, total in sorted(totals.items()) if total]
        result[day] = {
            "dagster/row_count": sum(rows for rows, _t in statuses.values()),
            "reservations": sum(totals.values()),
            **{f"reservations_{status}": total for status, total in sorted(totals.items())},
            "counts_by_status": dg.MetadataValue.md("\n".join(lines)),
            "day": day.isoformat(),
            "reporting_timezone": zone,
            "refreshed_by": refreshed_by,
        }
    return result


def summary_materializations(engine: Engine, days: Iterable[date], refreshed_by: str, zone: str,
                             partition_keys: set[str]) -> list[dg.AssetMaterialization]:
    """One materialization per summary partition among ``days``, with that day's figures."""
    wanted = [d for d in days if d.isoformat() in partition_keys]
    return [
        dg.AssetMaterialization(asset_key=SUMMARY_KEY, partition=day.isoformat(), metadata=meta)
        for day, meta in summary_day_metadata(engine, wanted, refreshed_by, zone).items()
    ]


def record_summary_days(
    context: dg.AssetExecutionContext,
    refresh: SummaryRefresh,
    daily: dg.DailyPartitionsDefinition,
    engine: Engine,
) -> None:
    """Tell Dagster which summary partitions the sync's refresh just rewrote, each with its
    day's figures (the same keys as a backfill's: ``summary_day_metadata``).

    Days outside the partitions definition are still refreshed in the table; they simply have
    no partition to record.
    """
    if not refresh.days:
        return
    for materialization in summary_materializations(
        engine, refresh.days, "taskrouter_sync", refresh.zone, set(daily.get_partition_keys())
    ):
        context.log_event(materialization)


def days_listing(days: list[date], limit: int = 100) -> list[str]:
    """The refreshed days for metadata: all of them, or the first and last ``limit // 2``."""
    keys = [d.isoformat() for d in sorted(days)]
    if len(keys) <= limit:
        return keys
    return [*keys[:limit // 2], f"... {len(keys) - limit} more ...", *keys[-(limit // 2):]]

