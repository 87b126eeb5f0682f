"""The sync job's shape: one process unless shards are asked for, and which checks each job runs."""

from __future__ import annotations

import dagster as dg


def test_the_sync_runs_in_one_process_unless_shards_are_asked_for(sync_env, monkeypatch):
    from pipelines.definitions import build_definitions

    monkeypatch.delenv("SYNC_SHARDS", raising=False)
    defs = build_definitions()
    assert defs.resolve_job_def("taskrouter_sync").executor_def.name == "in_process"
    assert defs.resolve_job_def("taskrouter_daily_checks").executor_def.name == "in_process"
    monkeypatch.setenv("SYNC_SHARDS", "1")
    assert build_definitions().resolve_job_def("taskrouter_sync").executor_def.name == "in_process"
    monkeypatch.setenv("SYNC_SHARDS", "4")  # shards run side by side: Dagster's default executor
    sharded = build_definitions().resolve_job_def("taskrouter_sync").executor_def
    assert sharded.name == "multi_or_in_process_executor"


def test_the_sync_runs_only_run_scoped_checks_and_the_daily_job_only_whole_table_ones(sync_env):
    from pipelines.definitions import build_definitions

    defs = build_definitions()
    graph = defs.resolve_asset_graph()
    every = {key for key in graph.asset_check_keys}

    def checks_of(job: str) -> set[dg.AssetCheckKey]:
        return set(defs.resolve_job_def(job).asset_layer.asset_graph.asset_check_keys) & every

    sync, daily = checks_of("taskrouter_sync"), checks_of("taskrouter_daily_checks")
    assert sync and all(k.name.endswith("_this_run") for k in sync)
    assert daily and not any(k.name.endswith("_this_run") for k in daily)
    assert sync | daily == every and not sync & daily
    assert dg.AssetCheckKey(dg.AssetKey("reservations"), "last_sync_is_recent") in daily
