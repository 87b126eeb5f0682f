"""Shard planning: every worker in exactly one shard, stable buckets, the rate split, SQLite runs one."""

import subprocess
import sys
import zlib

import dagster as dg
import pytest

from pipelines.event_feed import FeedResult, SweepPlan
from pipelines.figures import SyncFigures
from pipelines.sharding import (
    ShardPart,
    ShardResult,
    ShardSpec,
    SweepOutcome,
    merge_figures,
    plan_shards,
    requested_shards,
    summarize_shards,
    worker_bucket,
)
from tests.helpers import (
    PROJECT_ROOT,
    assert_matches_truth,
    assert_summary_consistent,
    run_sync_job,
)


def fake_listing(workspaces: int, workers: int) -> dict[str, list[str]]:
    return {f"WS{w:032x}": [f"WK{w:04x}{i:028x}" for i in range(workers)] for w in range(workspaces)}


@pytest.mark.parametrize("workspaces,shards", [(1, 1), (1, 4), (3, 4), (2, 2), (5, 2), (4, 7)])
def test_shards_cover_every_worker_exactly_once(workspaces, shards):
    listing = fake_listing(workspaces, 200)
    specs = plan_shards(list(listing), shards)
    assert len(specs) == shards
    assert len({s.key for s in specs}) == shards
    seen: list[tuple[str, str]] = []
    for spec in specs:
        for ws, sids in spec.select(listing).items():
            seen += [(ws, sid) for sid in sids]
    everything = [(ws, sid) for ws, sids in listing.items() for sid in sids]
    assert sorted(seen) == sorted(everything)


def test_split_workspaces_get_even_hash_buckets_and_few_shards_get_whole_workspaces():
    listing = fake_listing(3, 4000)
    specs = plan_shards(list(listing), 4)
    assert [len(s.parts) for s in specs] == [1, 1, 1, 1]
    assert [(p.bucket, p.buckets) for s in specs for p in s.parts] == [(0, 2), (1, 2), (0, 1), (0, 1)]
    halves = [len(s.select(listing)[s.parts[0].workspace_sid]) for s in specs[:2]]
    assert sum(halves) == 4000 and min(halves) > 1800  # crc32 spreads sids evenly
    whole = plan_shards(list(fake_listing(5, 1)), 2)
    assert [[p.workspace_sid[-1] for p in s.parts] for s in whole] == [["0", "2", "4"], ["1", "3"]]


def test_buckets_are_stable_across_processes_and_hash_seeds():
    sids = [f"WK{i:032x}" for i in range(50)]
    expected = [zlib.crc32(s.encode()) % 4 for s in sids]
    assert [worker_bucket(s, 4) for s in sids] == expected
    code = ("from pipelines.sharding import worker_bucket;"
            f"print([worker_bucket(s, 4) for s in {sids!r}])")
    for seed in ("1", "2"):
        out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, check=True,
                             capture_output=True, text=True, env={"PYTHONHASHSEED": seed})
        assert out.stdout.strip() == str(expected)


def test_the_request_budget_is_divided_among_the_shards():
    specs = plan_shards(["WS1", "WS2"], 4, requests_per_second=50.0)
    assert [s.requests_per_second for s in specs] == [12.5] * 4
    assert sum(s.requests_per_second or 0 for s in specs) <= 50.0
    assert all(s.requests_per_second is None for s in plan_shards(["WS1"], 4))


def test_shard_count_comes_from_config_then_sync_shards(monkeypatch):
    monkeypatch.delenv("SYNC_SHARDS", raising=False)
    assert requested_shards(0) == 1
    monkeypatch.setenv("SYNC_SHARDS", "6")
    assert requested_shards(0) == 6
    assert requested_shards(3) == 3
    for bad in ("four", "0"):
        monkeypatch.setenv("SYNC_SHARDS", bad)
        with pytest.raises(ValueError, match="SYNC_SHARDS"):
            requested_shards(0)


def test_merged_figures_add_up():
    a = SyncFigures(workers=3, inserted=5, workers_failed=["WKa"], seconds=1.0)
    b = SyncFigures(workers=4, inserted=7, workers_skipped=["WKb"], seconds=2.0)
    total = merge_figures([a, b])
    assert (total.workers, total.inserted) == (7, 12)
    assert total.workers_failed == ["WKa"] and total.workers_skipped == ["WKb"]
    assert isinstance(ShardSpec(0, 1, ()).key, str)


def test_sqlite_runs_one_shard_and_says_so(emulator, sync_env, monkeypatch):
    monkeypatch.setenv("SYNC_SHARDS", "4")
    instance = dg.DagsterInstance.ephemeral()
    result = run_sync_job(instance)
    assert result.success
    shard_steps = {e.step_key for e in result.all_events
                   if e.event_type_value == "STEP_START" and "load_shard" in (e.step_key or "")}
    assert shard_steps == {"reservations.load_shard[shard_1_of_1]"}
    messages = [e.user_message for e in instance.all_logs(result.run_id)]
    assert any("SQLite warehouse: running 1 shard instead of 4" in m for m in messages)
    assert_matches_truth(sync_env["WAREHOUSE_URL"], emulator.world.truth())
    assert_summary_consistent(sync_env["WAREHOUSE_URL"])


def test_in_process_shards_on_postgres_equal_one_sync(emulator, sync_env, postgres_url, monkeypatch):
    """The in-process executor (``make sync``) runs the planned shards one after another."""
    monkeypatch.setenv("WAREHOUSE_URL", postgres_url)
    monkeypatch.setenv("SYNC_SHARDS", "3")
    result = run_sync_job()
    assert result.success
    assert len([e for e in result.all_events if e.event_type_value == "STEP_START"
                and "load_shard" in (e.step_key or "")]) == 3
    assert_matches_truth(postgres_url, emulator.world.truth())
    assert_summary_consistent(postgres_url)


def _shard(index: int, count: int, parts: tuple[ShardPart, ...], **figures: object) -> ShardResult:
    return ShardResult(ShardSpec(index, count, parts), SyncFigures(**figures),  # type: ignore[arg-type]
                       cpu_seconds=1.25)


def test_shards_are_summarized_without_dagster():
    """``finish_sync``'s arithmetic: figures added up, failing shards named, and only the sweeps
    that completed recorded (a workspace with a failed shard is swept again next time)."""
    plan = SweepPlan(whole={"WS1": "first sync", "WS2": "sweep interval elapsed"},
                     notices=["WS1: a gap"])
    sweeps = SweepOutcome(["WS1", "WS2", "WS3"], plan, planned_at=100.0)
    shards = [
        _shard(0, 3, (ShardPart("WS1", 0, 2),), workers=4, inserted=10, seconds=2.0),
        _shard(1, 3, (ShardPart("WS1", 1, 2),), workers=3, inserted=5, seconds=3.5),
        _shard(2, 3, (ShardPart("WS2"),), workers=2, inserted=1, workers_failed=["WKbad"],
               worker_failures={"WKbad": ("HTTP 500 after 6 attempts", 6)}),
    ]
    feed = FeedResult(SyncFigures(events_read=7, events_applied=5), notices=["WS3: refused"],
                      swept=["WS3"])
    summary = summarize_shards(sweeps, shards, feed, finished_at=112.5)
    assert (summary.figures.workers, summary.figures.inserted) == (9, 16)
    assert (summary.figures.events_read, summary.figures.workspaces) == (7, 3)
    assert summary.figures.seconds == 12.5
    assert summary.failing == ["shard_3_of_3"] and summary.failed
    # WS2's shard failed: swept again next time; WS3 was read whole by the events half
    assert summary.swept == ["WS1", "WS3"]
    meta = summary.metadata
    assert (meta["shards"], meta["shard_cpu_seconds"], meta["slowest_shard_seconds"]) == (3, 3.8, 3.5)
    assert meta["inserted"] == 16 and meta["workers_failed"] == 1
    assert meta["list_sweeps"].value == {"WS1": "first sync", "WS2": "sweep interval elapsed",
                                         "WS3": "Events refused by TaskRouter"}
    assert meta["events_notices"].value == ["WS1: a gap", "WS3: refused"]
    assert summary.failure() == ("1 worker(s) could not be read after retries (WKbad: HTTP 500 "
                                 "after 6 attempts); everything else was loaded, and the next "
                                 "sync reads these again (in shard_3_of_3)")
    assert summary.failure_metadata()["shards_failed"].value == ["shard_3_of_3"]


def test_a_clean_sync_records_every_sweep_and_does_not_fail():
    sweeps = SweepOutcome(["WS1"], SweepPlan(whole={"WS1": "first sync"}), planned_at=5.0)
    feed = FeedResult(SyncFigures(workers_failed=["WKx"]), swept=["WS9"])
    summary = summarize_shards(sweeps, [_shard(0, 1, (ShardPart("WS1"),), workers=2)], feed, 6.0)
    # a worker the events half could not read keeps its Events-refused workspace unswept
    assert summary.swept == ["WS1"] and summary.failing == [] and summary.failed
    quiet = summarize_shards(sweeps, [], FeedResult(SyncFigures()), 6.0)
    assert quiet.swept == ["WS1"] and not quiet.failed and quiet.metadata["shards"] == 0


def test_a_shard_logs_its_figures_as_one_sentence_not_a_dict():
    figures = SyncFigures(workspaces=1, workers=10, workers_read=9, workers_failed=["WK1", "WK1"],
                          rows_seen=1200, inserted=1000, updated=150, unchanged=50,
                          events_applied=3000, event_windows=2, requests=14, retries=1,
                          seconds=2.25)
    line = figures.describe()
    assert line == ("9 of 10 worker(s) read, 1 failed; 1,200 row(s): 1,000 inserted, 150 updated, "
                    "50 unchanged, 0 rejected; 3,000 event(s) applied in 2 window(s); "
                    "14 request(s), 1 retries, 2.2 s")
    assert "{" not in line
