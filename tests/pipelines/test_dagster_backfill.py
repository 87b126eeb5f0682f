"""Backfills of reservation_daily_status_counts as the UI launches them: one run over a partition
range (BackfillPolicy.single_run), recomputing exactly that range with the sync's SQL."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import dagster as dg
import pandas as pd
import sqlalchemy as sa

from tests.helpers import ANCHOR, expected_daily_counts, run_sync_job, stored_daily_counts
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
        days = [first + timedelta(days=n) for n in range(30)]
        newest = newest_per_partition(instance, days)
        assert sorted(newest) == [d.isoformat() for d in days]
        expected_by_day = expected.groupby("day")
        for day in days:
            meta = newest[day.isoformat()]
            rows = expected_by_day.get_group(day) if day in expected_by_day.groups else expected[:0]
            assert meta["dagster/row_count"] == len(rows), day  # that day's rows, not the range's
            assert meta["reservations"] == int(rows["reservation_count"].sum())
            by_status = rows.groupby("reservation_status")["reservation_count"].sum().to_dict()
            for status in ("accepted", "completed", "rejected", "timeout", "canceled"):
                assert meta[f"reservations_{status}"] == by_status.get(status, 0), (day, status)
            assert meta["refreshed_by"] == f"backfill {first}..{last}"
            assert "| status | reservations |" in meta["counts_by_status"]
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

        # the summary checks ran in the same run, after the recompute: over the range's days
        # (passes), and over the whole table (fails: the damage outside the range is still there)
        checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
        assert set(checks) == {"summary_matches_reservations",
                               "summary_matches_reservations_this_run"}
        scoped = checks["summary_matches_reservations_this_run"]
        check_meta = {k: getattr(v, "value", v) for k, v in scoped.metadata.items()}
        assert scoped.passed and check_meta["days_compared"] == 30
        assert check_meta["scope"] == "days of this run's partitions"
        whole = checks["summary_matches_reservations"]
        whole_meta = {k: getattr(v, "value", v) for k, v in whole.metadata.items()}
        assert not whole.passed and whole_meta["mismatched_days"] == [outside.isoformat()]

        # a 5-day range: each day records its own figures again, not the range's totals
        five = [last - timedelta(days=n) for n in range(4, -1, -1)]
        again = launch_backfill(instance, five[0], five[-1])
        assert again.success
        assert stored_daily_counts(url).values.tolist() == stored.values.tolist()
        newest = newest_per_partition(instance, five)
        rows_per_day = stored.groupby("day").size().to_dict()
        assert [newest[d.isoformat()]["dagster/row_count"] for d in five] == \
            [rows_per_day.get(d, 0) for d in five]
        assert len(set(rows_per_day.get(d, 0) for d in five)) > 1  # the days really differ


def newest_per_partition(instance: dg.DagsterInstance, days: list[date]) -> dict[str, dict[str, Any]]:
    """Each day's newest materialization's metadata: what the UI shows and plots for it."""
    newest = {}
    for day in days:
        [record] = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=SUMMARY, asset_partitions=[day.isoformat()]),
            limit=1, ascending=False).records
        newest[day.isoformat()] = {k: getattr(v, "value", v)
                                   for k, v in record.asset_materialization.metadata.items()}
    return newest


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
