"""Backfills of reservation_daily_status_counts as the UI launches them: one run over a partition
range (BackfillPolicy.single_run), recomputing exactly that range with the sync's SQL."""

from __future__ import annotations

from datetime import date, timedelta

import dagster as dg
import pandas as pd
import sqlalchemy as sa

from tests.conftest import ANCHOR
from tests.helpers import expected_daily_counts, run_sync_job, stored_daily_counts
from warehouse.engine import create_warehouse_engine

SUMMARY = dg.AssetKey("reservation_daily_status_counts")
RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"


def launch_backfill(instance: dg.DagsterInstance, first: date, last: date) -> dg.ExecuteInProcessResult:
    """What the backfill daemon does for a single-run backfill: one run of the asset job over
    the range, tagged with its first and last partition key."""
    from pipelines.definitions import build_definitions

    defs = build_definitions()
    job = defs.resolve_implicit_global_asset_job_def()
    return job.execute_in_process(
        instance=instance,
        asset_selection=[SUMMARY],
        tags={RANGE_START: first.isoformat(), RANGE_END: last.isoformat()},
    )


def in_range(frame: pd.DataFrame, first: date, last: date) -> pd.DataFrame:
    return frame[(frame["day"] >= first) & (frame["day"] <= last)].reset_index(drop=True)


def test_thirty_day_backfill_is_one_run_and_recomputes_exactly_the_range(
    emulator, sync_env, monkeypatch
):
    monkeypatch.setenv("SUMMARY_START_DATE", (ANCHOR.date() - timedelta(days=60)).isoformat())
    url = sync_env["WAREHOUSE_URL"]
    first, last = ANCHOR.date() - timedelta(days=29), ANCHOR.date()  # 30 partitions
    outside = first - timedelta(days=1)
    with dg.instance_for_test() as instance:
        assert run_sync_job(instance).success
        expected = expected_daily_counts(url)
        assert outside in set(expected["day"]), "the world must reach past the range"

        # damage the summary inside and just outside the range
        engine = create_warehouse_engine(url)
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM reservation_daily_status_counts WHERE day >= :d"),
                         {"d": first + timedelta(days=3)})
            conn.execute(sa.text("UPDATE reservation_daily_status_counts SET reservation_count = 999"
                                 " WHERE day IN (:a, :b)"), {"a": first, "b": outside})
            conn.execute(sa.text(
                "INSERT INTO reservation_daily_status_counts VALUES (:d, 'WSx', 'WKx', 'ghost', 5)"
            ), {"d": first + timedelta(days=1)})
        engine.dispose()
        runs_before = {r.run_id for r in instance.get_runs()}

        result = launch_backfill(instance, first, last)
        assert result.success
        new_runs = [r for r in instance.get_runs() if r.run_id not in runs_before]
        assert len(new_runs) == 1 and new_runs[0].run_id == result.run_id
        mats = result.asset_materializations_for_node(SUMMARY.path[-1])
        assert sorted(m.partition for m in mats) == [
            (first + timedelta(days=n)).isoformat() for n in range(30)]
        meta = {k: getattr(v, "value", v) for k, v in mats[0].metadata.items()}
        assert meta["days_refreshed"] == 30
        assert (meta["first_day"], meta["last_day"]) == (first.isoformat(), last.isoformat())
        assert "| status | reservations |" in meta["counts_by_status"]
        assert meta["reservations"] == int(in_range(expected, first, last)["reservation_count"].sum())
        assert isinstance(meta["seconds"], float)
        assert "reservation_count" in {c.name for c in meta["dagster/column_schema"].columns}
        status = instance.get_status_by_partition(SUMMARY, [first.isoformat(), last.isoformat()],
                                                  defs_partitions(sync_env))
        assert set(status.values()) == {dg.AssetPartitionStatus.MATERIALIZED}

        stored = stored_daily_counts(url)
        # inside the range: exactly the GROUP BY recomputation (the ghost row is gone)
        assert in_range(stored, first, last).values.tolist() == \
            in_range(expected, first, last).values.tolist()
        # outside it: untouched, damage included
        damaged = stored[stored["day"] == outside]
        assert set(damaged["reservation_count"]) == {999}

        # the summary check ran in the same run, after the recompute, over the range's days
        [evaluation] = result.get_asset_check_evaluations()
        assert evaluation.check_name == "day_totals_match_reservations" and evaluation.passed
        check_meta = {k: getattr(v, "value", v) for k, v in evaluation.metadata.items()}
        assert check_meta["days_compared"] == 30
        assert check_meta["scope"] == "days of this run's partitions"

        again = launch_backfill(instance, first, last)
        assert again.success
        assert stored_daily_counts(url).values.tolist() == stored.values.tolist()


def defs_partitions(_env: dict[str, str]) -> dg.PartitionsDefinition:
    from pipelines.definitions import build_definitions

    partitions = build_definitions().resolve_assets_def(SUMMARY).partitions_def
    assert partitions is not None
    return partitions


def test_backfill_policy_and_partitions_are_what_the_ui_needs(sync_env):
    from pipelines.definitions import build_definitions

    summary = build_definitions().resolve_assets_def(SUMMARY)
    assert summary.backfill_policy == dg.BackfillPolicy.single_run()
    assert summary.backfill_policy.max_partitions_per_run is None
    partitions = summary.partitions_def
    assert isinstance(partitions, dg.DailyPartitionsDefinition)
    assert partitions.end_offset == 1
    assert partitions.timezone == "UTC"
