"""Materialization metadata that explains itself: figures as plottable numbers, column schemas,
refreshed days, and per-day counts by status."""

from __future__ import annotations

import dagster as dg

from tests.helpers import run_sync_job, stored_daily_counts

NUMERIC = ("dagster/row_count", "inserted", "updated", "unchanged", "rejected", "rows_seen",
           "pages", "requests", "retries", "seconds", "rows_per_second")


def test_sync_materializations_carry_numbers_schema_and_days(emulator, sync_env):
    result = run_sync_job()
    by_asset: dict[str, dg.AssetMaterialization] = {}
    partitions: list[dg.AssetMaterialization] = []
    for node in ("workers", "reservations"):
        for mat in result.asset_materializations_for_node(node):
            if mat.partition is None:
                by_asset[mat.asset_key.to_user_string()] = mat
            else:
                partitions.append(mat)
    for name in ("workers", "reservations"):
        metadata = by_asset[name].metadata
        for key in NUMERIC:
            assert isinstance(metadata[key], dg.IntMetadataValue | dg.FloatMetadataValue), (name, key)
        schema = metadata["dagster/column_schema"].value
        assert "sid" in {c.name for c in schema.columns}
    reservations = by_asset["reservations"].metadata
    days = reservations["summary_days"].value
    assert reservations["days_refreshed"].value == len(days) > 20
    assert reservations["dagster/row_count"].value == 480
    assert "****" in reservations["warehouse"].value or "sqlite" in reservations["warehouse"].value

    # one materialization per refreshed partition, with its own counts by status
    stored = stored_daily_counts(sync_env["WAREHOUSE_URL"])
    totals = stored.groupby("day")["reservation_count"].sum()
    assert len(partitions) == len(days)
    for mat in partitions:
        metadata = mat.metadata
        day_total = int(totals[[d for d in totals.index if d.isoformat() == mat.partition][0]])
        assert metadata["reservations"].value == day_total
        assert metadata["counts_by_status"].value.startswith("| status | reservations |")
        assert metadata["refreshed_by"].value == "taskrouter_sync"
