"""Sharded syncs on Dagster's multiprocess executor, 4 shards, into PostgreSQL.

Each run goes through ``dg.execute_job`` on a reconstructable ``taskrouter_sync`` and a
persistent test instance (multiprocess execution needs both), so every shard is its own step in
its own process, all writing to one PostgreSQL warehouse at once. The emulator serves them over
loopback from this process.
"""

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from pipelines.taskrouter.emulator import Emulator, Faults
from tests.helpers import (
    PROJECT_ROOT,
    SUMMARY_START,
    assert_matches_truth,
    assert_summary_consistent,
    small_world,
)

SHARDS = 4
WORKSPACES = 3  # 4 shards over 3 workspaces: one split in two hash buckets, two whole
MULTIPROCESS = {
    "execution": {"config": {"multiprocess": {
        "max_concurrent": SHARDS,
        # forkserver: steps fork from a process that already imported Dagster and the project
        "start_method": {"forkserver": {"preload_modules": ["pipelines.definitions"]}},
    }}},
}


def sharded_sync_job(env: dict[str, str], checks: bool = True) -> dg.JobDefinition:
    """``taskrouter_sync`` (or just ``reservations`` without checks), rebuilt in every step process.

    The environment travels with the job because forkserver children inherit the environment the
    fork server started with (an earlier test's emulator and database), not the test's.
    """
    os.environ.clear()
    os.environ.update(env)
    from pipelines.definitions import build_definitions

    defs = build_definitions()
    if checks:
        return defs.resolve_job_def("taskrouter_sync")
    slim = dg.define_asset_job(
        "reservations_only", selection=dg.AssetSelection.assets("reservations").without_checks()
    )
    return dg.Definitions.merge(defs, dg.Definitions(jobs=[slim])).resolve_job_def(slim.name)


@pytest.fixture
def shard_emulator() -> Iterator[Emulator]:
    world = small_world(workspaces=WORKSPACES, workers_per_workspace=6, reservations_per_worker=15)
    with Emulator(world, Faults()) as emu:
        yield emu


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as inst:
        yield inst


@pytest.fixture
def shard_env(monkeypatch: pytest.MonkeyPatch, shard_emulator: Emulator, postgres_url: str) -> str:
    for name in ("TWILIO_API_KEY_SID", "TWILIO_API_KEY_SECRET", "TASKROUTER_WORKSPACE_SIDS",
                 "REPORTING_TIMEZONE", "TASKROUTER_REQUESTS_PER_SECOND"):
        monkeypatch.delenv(name, raising=False)
    env = {**shard_emulator.env(), "WAREHOUSE_URL": postgres_url, "SYNC_SHARDS": str(SHARDS),
           "SUMMARY_START_DATE": SUMMARY_START, "SYNC_SHARD_RETRIES": "0",
           "TASKROUTER_SWEEP_INTERVAL_MINUTES": "0"}  # every sync reads the lists in shards
    for key, value in env.items():
        monkeypatch.setenv(key, value)  # the step processes inherit this environment
    return postgres_url


def sync(instance: dg.DagsterInstance, checks: bool = False) -> dg.JobExecutionResult:
    """One multiprocess run; ``checks=True`` runs the whole ``taskrouter_sync`` job."""
    job = dg.build_reconstructable_job(
        __name__, sharded_sync_job.__name__,
        reconstructable_kwargs={"env": dict(os.environ), "checks": checks},
        reconstructor_working_directory=str(PROJECT_ROOT),
    )
    return dg.execute_job(job, instance=instance, run_config=MULTIPROCESS, raise_on_error=False)


def reservations_metadata(result: dg.JobExecutionResult) -> dict[str, Any]:
    for mat in result.asset_materializations_for_node("reservations"):
        if mat.partition is None and mat.asset_key == dg.AssetKey("reservations"):
            return {k: getattr(v, "value", v) for k, v in mat.metadata.items()}
    raise AssertionError("no materialization of reservations")


def shard_steps(result: dg.JobExecutionResult) -> dict[str, int]:
    """Each load_shard step that started, with the pid of the process it ran in."""
    return {e.step_key: e.pid for e in result.all_events
            if e.event_type_value == "STEP_START" and "load_shard" in (e.step_key or "")}


def failure_text(result: dg.JobExecutionResult) -> str:
    return " ".join(str(e.event_specific_data.error)  # type: ignore[union-attr]
                    for e in result.all_events if e.event_type_value == "STEP_FAILURE")


def test_four_shards_in_separate_processes_equal_the_truth_then_nothing_then_the_changes(
    shard_emulator, shard_env, instance
):
    url, world = shard_env, shard_emulator.world
    first = sync(instance, checks=True)  # the real job: workers, sharded reservations, checks
    assert first.success, failure_text(first)
    steps = shard_steps(first)
    assert sorted(steps) == [f"reservations.load_shard[shard_{i}_of_{SHARDS}]"
                             for i in range(1, SHARDS + 1)]
    assert len(set(steps.values())) == SHARDS, "each shard ran in its own process"
    truth = world.truth()
    assert len(truth) == WORKSPACES * 6 * 15
    assert_matches_truth(url, truth)
    assert_summary_consistent(url)
    meta = reservations_metadata(first)
    assert meta["shards"] == SHARDS and meta["workspaces"] == WORKSPACES
    assert meta["workers"] == WORKSPACES * 6
    assert (meta["inserted"], meta["updated"], meta["unchanged"]) == (len(truth), 0, 0)
    assert meta["days_refreshed"] > 0
    # the summary refresh ran once, after every shard, and recorded its partitions there
    finish = [e for e in first.all_events if e.event_type_value == "ASSET_MATERIALIZATION"
              and e.asset_key == dg.AssetKey("reservation_daily_status_counts")]
    assert finish and {e.step_key for e in finish} == {"reservations.finish_sync"}

    second = reservations_metadata(sync(instance))
    assert (second["inserted"], second["updated"], second["unchanged"]) == (0, 0, len(truth))
    assert second["days_refreshed"] == 0

    previous = {r["sid"]: (r["date_updated"], r["reservation_status"]) for r in truth}
    assert world.advance(60)["changed"]
    truth = world.truth()
    # what TaskRouter showed since, deleted or not: the lists and the events together
    ever = {r["sid"]: (r["date_updated"], r["reservation_status"]) for r in world.ever()}
    changed = sum(1 for s, version in ever.items() if s in previous and previous[s] != version)
    new = sum(1 for s in ever if s not in previous)
    third = sync(instance)
    assert third.success, failure_text(third)
    meta = reservations_metadata(third)
    assert (meta["inserted"], meta["updated"]) == (new, changed)
    stored = assert_matches_truth(url, truth, allow_extra=True)
    assert len(stored) == len(previous) + new == len(ever)  # rows deleted upstream stay
    assert_summary_consistent(url)


def test_a_failing_shard_leaves_the_other_shards_loaded_and_a_rerun_completes(
    shard_emulator, shard_env, instance, monkeypatch
):
    url, world = shard_env, shard_emulator.world
    # the last workspace is one whole shard (shard_4_of_4); every one of its workers answers 500
    doomed = list(world.workers)[-1]  # the listing order: planned last
    bad = tuple(w.sid for w in world.live_workers(doomed))
    shard_emulator.server.set_faults(Faults(failing_workers=bad))
    monkeypatch.setenv("TASKROUTER_MAX_ATTEMPTS", "2")

    failed = sync(instance)
    assert not failed.success
    text = failure_text(failed)
    assert f"{len(bad)} worker(s) could not be read after retries" in text
    assert "shard_4_of_4" in text
    assert shard_emulator.server.stats.faults["failing_worker"] == 2 * len(bad)
    truth = world.truth()
    stored = assert_matches_truth(url, [r for r in truth if r["workspace_sid"] != doomed],
                                  allow_extra=True)
    # the doomed workspace's reservations came from its events, without url and links
    extra = stored[stored["workspace_sid"] == doomed]
    assert len(extra) <= len(bad) * 15 and extra["url"].isna().all()
    assert_summary_consistent(url)  # the refresh still ran for everything that loaded

    shard_emulator.server.set_faults(Faults())
    rerun = sync(instance)
    assert rerun.success, failure_text(rerun)
    meta = reservations_metadata(rerun)
    assert (meta["inserted"], meta["filled"]) == (len(bad) * 15 - len(extra), len(extra))
    assert_matches_truth(url, truth)
    assert_summary_consistent(url)
