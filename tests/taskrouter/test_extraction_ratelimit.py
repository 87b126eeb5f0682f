"""Concurrency under a rate limit: the client's own limiter keeps the server's observed rate near
R, the server's 429s are survived when the client does not limit itself, and the in-flight
window stays bounded however many workers there are.
"""

from __future__ import annotations

import threading
import time

import dagster as dg

from pipelines.taskrouter.emulator import Emulator, Faults, max_in_window
from pipelines.taskrouter.ratelimit import RateLimiter
from tests.helpers import (
    assert_matches_truth,
    make_client,
    materialization_metadata,
    run_sync_job,
    small_world,
    sync_with_functions,
)

RATE = 25.0


def test_client_limiter_keeps_the_server_within_its_limit_and_completes(sqlite_url):
    # ~120 requests at 25/s: several seconds, so the busiest 1-second window is meaningful.
    # 500s and resets are retried after 20-40 ms: without the limiter they would burst.
    faults = Faults(requests_per_second=RATE, fault_rate=0.15, fault_kinds=("500", "reset"))
    with Emulator(small_world(), faults) as emu:
        figures, client = sync_with_functions(emu, sqlite_url, requests_per_second=RATE,
                                              page_size=5, concurrency=8)
        stats = emu.server.stats.as_dict()
        assert_matches_truth(sqlite_url, emu.world.truth())
    assert stats["api_requests"] >= 3 * RATE and sum(stats["faults"].values()) >= 5
    # typically R + 1; in-process the GIL delays a few arrivals into the next window
    assert stats["max_requests_in_any_second"] <= 1.2 * RATE
    assert stats["rate_limited"] <= 2, "the client should rarely if ever meet the server's 429"
    assert figures.workers_failed == []
    assert client.stats.snapshot()["rate_limit_wait_s"] > 0


def test_limit_from_the_environment_through_dagster(emulator, sync_env, monkeypatch):
    emulator.server.set_faults(Faults(requests_per_second=RATE))
    monkeypatch.setenv("TASKROUTER_REQUESTS_PER_SECOND", str(RATE))
    monkeypatch.setenv("TASKROUTER_PAGE_SIZE", "5")
    result = run_sync_job()
    assert result.success
    stats = emulator.server.stats.as_dict()
    # typically R + 1; in-process the GIL delays a few arrivals into the next window
    assert stats["max_requests_in_any_second"] <= 1.2 * RATE
    assert_matches_truth(sync_env["WAREHOUSE_URL"], emulator.world.truth())


def test_server_429s_are_retried_when_the_client_does_not_limit_itself(sqlite_url):
    faults = Faults(requests_per_second=RATE)
    with Emulator(small_world(), faults) as emu:
        figures, client = sync_with_functions(emu, sqlite_url, requests_per_second=None,
                                              page_size=5, concurrency=8, max_attempts=10)
        stats = emu.server.stats.as_dict()
        assert_matches_truth(sqlite_url, emu.world.truth())
    assert stats["rate_limited"] > 0, "without its own limiter the client must meet 429s"
    assert client.stats.snapshot()["retries"] >= stats["rate_limited"]
    assert figures.retries > 0 and figures.workers_failed == []


def test_rate_limiter_spaces_calls_from_many_threads():
    limiter = RateLimiter(50)
    stamps: list[float] = []
    lock = threading.Lock()

    def take(n: int) -> None:
        for _ in range(n):
            limiter.acquire()
            with lock:
                stamps.append(time.monotonic())

    threads = [threading.Thread(target=take, args=(15,)) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(stamps) == 90
    # slots are 20 ms apart (51 fit in a closed 1 s window); a thread that wakes late can push
    # its stamp next to the following ones, hence the small margin
    assert max_in_window(stamps, 1.0) <= 56
    assert not RateLimiter(None).enabled and RateLimiter(0).acquire() == 0.0


def test_in_flight_window_is_bounded_so_memory_stays_flat():
    with Emulator(small_world(workers_per_workspace=40), Faults()) as emu, \
            make_client(emu, concurrency=3, page_size=1000) as client:
        ws = next(iter(emu.world.workers))
        sids = [w.sid for w in emu.world.live_workers(ws)]
        taken = 0

        def feed():
            nonlocal taken
            for sid in sids:
                taken += 1
                yield sid

        consumed = 0
        max_ahead = 0
        for read in client.read_reservations(ws, feed()):
            consumed += 1
            assert read.complete
            time.sleep(0.005)  # a slow consumer (the loader) must not make reads pile up
            max_ahead = max(max_ahead, taken - consumed)
        assert consumed == len(sids) == 40
        assert max_ahead <= 8 * 3  # 2 x the reader threads (4 x concurrency)


def test_final_figures_and_progress_reach_dagster(emulator, sync_env, monkeypatch):
    import pipelines.loading as loading

    monkeypatch.setattr(loading, "PROGRESS_EVERY_S", 0.0)
    emulator.server.set_faults(Faults(fault_rate=0.1, fault_kinds=("500",), seed=2))
    monkeypatch.setenv("TASKROUTER_PAGE_SIZE", "10")
    instance = dg.DagsterInstance.ephemeral()
    result = run_sync_job(instance)
    assert result.success
    logs = [entry.user_message for entry in instance.all_logs(result.run_id)]
    progress = [m for m in logs if m.startswith("progress: workers")]
    assert progress
    last = progress[-1]
    assert "workers 16/16" in last and "rows 480" in last and "requests" in last
    assert "retries" in last and "rows/s" in last and "left" in last
    meta = materialization_metadata(result, "reservations")
    for name in ("retries", "requests", "pages", "workers_skipped", "workers_failed"):
        assert name in meta
    assert meta["retries"] > 0
