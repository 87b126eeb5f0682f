"""Dagster assets: thin glue over ``pipelines.loading`` and ``warehouse``.

Each asset reads like its sentence: list workers, page reservations, upsert, refresh the
summary days that changed, report the figures.
"""



import time
import warnings
from collections.abc import Sequence
from datetime import date, timedelta
from pathlib import Path

import dagster as dg

from pipelines.loading import load_workers, resolve_workspaces
from pipelines.metadata import (
    ASSET_TABLES,
    GROUP,
    OWNERS,
    RESERVATIONS_KEY,
    TASKROUTER_POOL,
    count_rows,
    definition_line,
    figures_metadata,
    summary_materializations,
    table_name,
    table_schema,
    warehouse_dialect,
)
from pipelines.partitions import daily_partitions
from pipelines.report import REPORT_PATH
from pipelines.resources import TaskRouterResource, WarehouseResource
from pipelines.settings import Settings
from pipelines.sharding import build_reservations_asset
from warehouse import schema as warehouse_schema
from warehouse.schema import reservation_daily_status_counts as counts_table
from warehouse.schema import workers as workers_table
from warehouse.summary import refresh_range


def with_freshness_policy(assets: Sequence[dg.AssetsDefinition],
                          max_age_minutes: float) -> list[dg.AssetsDefinition]:
    """``reservations`` is expected to be synced every ``FRESHNESS_MAX_AGE_MINUTES`` (30): the
    UI flags it (warn at half that, fail past it) as soon as the schedule stops, not at the
    next daily freshness check. Dagster refuses windows under a minute."""
    fail = max(timedelta(minutes=max_age_minutes), timedelta(minutes=1))
    warn = fail / 2 if fail / 2 >= timedelta(minutes=1) else None
    policy = dg.FreshnessPolicy.time_window(fail_window=fail, warn_window=warn)

    def fresh(spec: dg.AssetSpec) -> dg.AssetSpec:
        if spec.key != RESERVATIONS_KEY:
            return spec
        return spec.replace_attributes(freshness_policy=policy)

    return list(dg.map_asset_specs(fresh, list(assets)))


def with_catalog_metadata(assets: Sequence[dg.AssetsDefinition],
                          url: str | None = None) -> list[dg.AssetsDefinition]:
    """Owners, ``dagster/table_name``, the column schema in the warehouse's dialect and code
    references (the asset's function and its table's declaration) on every asset."""
    dialect = warehouse_dialect(url)
    schema_file = str(Path(warehouse_schema.__file__).resolve())

    def catalogued(spec: dg.AssetSpec) -> dg.AssetSpec:
        name = ASSET_TABLES.get(spec.key.to_user_string())
        if name is None:
            return spec.replace_attributes(owners=OWNERS)
        table = warehouse_schema.metadata.tables[name]
        reference = dg.LocalFileCodeReference(file_path=schema_file, line_number=definition_line(
            name), label=f"table {name} (warehouse/schema.py)")
        return spec.replace_attributes(owners=OWNERS).merge_attributes(metadata={
            "dagster/table_name": table_name(name, url),
            "dagster/column_schema": table_schema(table, dialect),
            "dagster/code_references": dg.CodeReferencesMetadataValue(code_references=[reference]),
        })

    with warnings.catch_warnings():  # code references are beta: chosen knowingly, not news
        warnings.simplefilter("ignore", dg.BetaWarning)
        mapped = dg.map_asset_specs(catalogued, list(assets))
        return list(dg.with_source_code_references(mapped))  # type: ignore[arg-type]


def build_assets(settings: Settings) -> tuple[list[dg.AssetsDefinition], dg.DailyPartitionsDefinition]:
    daily = daily_partitions(settings)

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
            "range in one run. Each partition's metadata is that day's own figures: row count, "
            "reservations, one number per status. `make report` draws it in data/report.html."
        ),
        metadata={"dagster/column_schema": table_schema(counts_table),
                  "report": dg.MetadataValue.path(str(REPORT_PATH))},
    )
    def reservation_daily_status_counts(
        context: dg.AssetExecutionContext, warehouse: WarehouseResource
    ):  # type: ignore[no-untyped-def]
        started = time.monotonic()
        key_range = context.partition_key_range
        first, last = date.fromisoformat(key_range.start), date.fromisoformat(key_range.end)
        with warehouse.engine(migrate=False) as engine:  # a backfill never migrates
            refresh = refresh_range(engine, first, last, warehouse.reporting_timezone)
            per_day = summary_materializations(
                engine, refresh.days, f"backfill {first}..{last}", refresh.zone,
                set(context.partition_keys))
        context.log.info(
            f"summary {first}..{last}: {len(refresh.days)} day(s), {refresh.rows} row(s) in "
            f"{time.monotonic() - started:.2f}s"
            + (" (zone changed: rebuilt every day)" if refresh.rebuilt else "")
        )
        # Dagster stores this run's result on EVERY partition of the range; it carries no
        # figures, and the per-day materializations below come after it, so each partition's
        # newest materialization is its own day. (A result is still needed: without one the
        # summary check of the same run would be skipped.)
        yield dg.MaterializeResult()
        yield from per_day

    return [workers, reservations, reservation_daily_status_counts], daily
