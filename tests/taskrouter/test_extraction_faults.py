"""Extraction under the faults a real API throws: every kind at 15%, through the loading functions
and through the Dagster job; the table ends equal to the emulator's truth and the figures show
the retries. Also: retries draw on one budget, Retry-After is honoured and capped, and 401/403
stop at once.
"""

from __future__ import annotations

import contextlib
import logging

import pytest

from pipelines.loading import (
    list_workers_by_workspace,
    load_reservations,
    resolve_workspaces,
)
from pipelines.taskrouter import (
    TaskRouterAuthError,
    TaskRouterError,
)
from pipelines.taskrouter.emulator import FAULT_KINDS, Emulator, Faults
from tests.helpers import (
    assert_matches_truth,
    assert_summary_consistent,
    make_client,
    materialization_metadata,
    run_sync_job,
    small_world,
    sync_with_functions,
)
from warehouse.engine import create_warehouse_engine
from warehouse.migrate import ensure_schema


def server_faults(emu: Emulator) -> int:
    return sum(emu.server.stats.as_dict()["faults"].values())


@pytest.mark.parametrize("kind", FAULT_KINDS)
def test_each_fault_kind_at_15_percent_loads_exactly_the_truth(kind, sqlite_url):
    faults = Faults(fault_rate=0.15, fault_kinds=(kind,), slow_seconds=1.0, seed=3)
    with Emulator(small_world(), faults) as emu:
        figures, client = sync_with_functions(emu, sqlite_url)
        injected = server_faults(emu)
        server = emu.server.stats.as_dict()
        truth = emu.world.truth()
    assert injected >= 3, "the fault rate must actually bite"
    assert figures.workers_failed == [] and figures.workers_skipped == []
    assert_matches_truth(sqlite_url, truth)
    stats = client.stats.snapshot()
    # one retry per injected fault, counted once (not once per layer), and every attempt counted
    assert stats["retries"] == injected
    assert stats["requests"] == server["api_requests"]
    assert figures.retries > 0 and figures.requests >= figures.pages + figures.retries


def test_dagster_job_under_every_fault_kind_with_default_retry_settings(emulator, sync_env,
                                                                        monkeypatch):
    emulator.server.set_faults(Faults(fault_rate=0.15, slow_seconds=1.0, seed=5))
    # the lists under faults, page after page (the events feed under faults: test_events_feed)
    monkeypatch.setenv("TASKROUTER_EVENTS", "0")
    monkeypatch.setenv("TASKROUTER_PAGE_SIZE", "10")
    monkeypatch.setenv("TASKROUTER_READ_TIMEOUT_S", "0.5")
    result = run_sync_job()
    assert result.success
    truth = emulator.world.truth()
    assert_matches_truth(sync_env["WAREHOUSE_URL"], truth)
    assert_summary_consistent(sync_env["WAREHOUSE_URL"])
    meta = materialization_metadata(result, "reservations")
    injected = server_faults(emulator)
    assert injected >= 5
    assert 0 < meta["retries"] <= injected
    assert meta["requests"] >= meta["pages"] + meta["retries"]
    assert meta["workers_failed"] == 0 and meta["workers_skipped"] == 0
    assert meta["inserted"] == len(truth)


def test_one_budget_bounds_attempts_when_failures_alternate_between_layers():
    # 500s are retried by urllib3, bad JSON by tenacity: together still max_attempts in all
    faults = Faults(fault_rate=1.0, fault_kinds=("500", "badjson"), seed=1)
    with Emulator(small_world(), faults) as emu, make_client(emu, max_attempts=4) as client:
        with pytest.raises(TaskRouterError):
            client.list_workspaces()
        assert emu.server.stats.as_dict()["api_requests"] == 4
        assert client.stats.snapshot()["requests"] == 4
        assert client.stats.snapshot()["retries"] == 3


def test_a_request_that_keeps_failing_stops_after_max_attempts_with_a_clear_error():
    faults = Faults(fault_rate=1.0, fault_kinds=("503",))
    with Emulator(small_world(), faults) as emu, make_client(emu, max_attempts=3) as client:
        with pytest.raises(TaskRouterError) as caught:
            client.list_workspaces()
        assert emu.server.stats.as_dict()["api_requests"] == 3
    assert caught.value.status == 503
    assert "/v1/Workspaces" in str(caught.value)


def test_retry_wait_is_bounded_by_max_retry_wait():
    faults = Faults(fault_rate=1.0, fault_kinds=("500",))
    with Emulator(small_world(), faults) as emu, \
            make_client(emu, max_attempts=50, backoff_factor=0.05, max_retry_wait=0.0) as client:
        with pytest.raises(TaskRouterError):
            client.list_workspaces()
        # the deadline has passed after the first failure: no retry starts
        assert emu.server.stats.as_dict()["api_requests"] == 1


def test_retry_after_is_honoured_and_capped():
    # server limit 1 request/s with no burst: the 2nd request is answered 429 + Retry-After: 1
    faults = Faults(requests_per_second=1, rate_limit_burst=1)
    with Emulator(small_world(), faults) as emu:
        with make_client(emu, retry_after_max=60.0) as client:
            client.list_workspaces()
            client.list_workspaces()
        arrivals = list(emu.server.stats.arrivals)
        assert len(arrivals) >= 3 and emu.server.stats.rate_limited >= 1
        # the retry waited for Retry-After (a lower bound: the client slept at least that long)
        assert arrivals[2] - arrivals[1] >= 0.95
    with make_client(emu, retry_after_max=7.0) as client:
        retry = client.session.get_adapter(emu.base_url).max_retries
        assert retry.parse_retry_after("3600") == 7.0
        assert retry.respect_retry_after_header


@pytest.mark.parametrize("forbidden", [False, True], ids=["401", "403"])
def test_refused_credentials_fail_at_once_without_retries(forbidden, caplog):
    world = small_world()
    with Emulator(world, Faults(forbidden=forbidden)) as emu:
        token = "not-the-token-S3CR3T" if not forbidden else None
        with make_client(emu, token=token) as client, pytest.raises(TaskRouterAuthError) as caught:
            list_workers_by_workspace(client, resolve_workspaces(client, None))
        assert emu.server.stats.as_dict()["requests"] == 1, "no retries, no hammering"
        assert client.stats.snapshot()["retries"] == 0
        message = str(caught.value)
        assert f"HTTP {403 if forbidden else 401}" in message
        assert "TWILIO_ACCOUNT_SID / TWILIO_AUTH_TOKEN" in message
        assert emu.world.auth_token not in message and "S3CR3T" not in message
    assert "S3CR3T" not in caplog.text


def test_credentials_revoked_mid_sync_stop_the_sync_without_hammering(sqlite_url):
    with Emulator(small_world(workers_per_workspace=80), Faults()) as emu:
        engine = create_warehouse_engine(sqlite_url)
        ensure_schema(engine)
        with make_client(emu, concurrency=4) as client:
            listing = list_workers_by_workspace(client, resolve_workspaces(client, None))
            before = emu.server.stats.as_dict()["requests"]
            emu.world.auth_token = "rotated"  # the token was rotated upstream
            with pytest.raises(TaskRouterAuthError):
                load_reservations(client, engine, listing)
        engine.dispose()
        after = emu.server.stats.as_dict()["requests"]
    # only the reads already started or queued (the window: 8 x concurrency) sent a request,
    # not one per remaining worker
    assert 1 <= after - before <= 32


def test_requests_in_flight_never_exceed_the_concurrency_even_while_others_back_off(sqlite_url):
    faults = Faults(latency_ms=20, fault_rate=0.2, fault_kinds=("500", "503", "reset"), seed=4)
    with Emulator(small_world(workers_per_workspace=20), faults) as emu:
        figures, client = sync_with_functions(emu, sqlite_url, concurrency=3,
                                              backoff_factor=0.1, backoff_max=0.4)
        stats = emu.server.stats.as_dict()
        assert_matches_truth(sqlite_url, emu.world.truth())
    assert figures.retries > 0 and figures.workers_failed == []
    assert stats["max_in_flight"] == 3, "the pool uses its slots, and never more"


def test_a_request_leaves_the_emulators_in_flight_count_before_its_reply_is_sent():
    # one client thread, request after request: had the emulator counted a request until
    # after its reply was written, the next request could arrive first and be seen as a
    # second one in flight (what made the test above read 4 under load)
    faults = Faults(fault_rate=0.5, fault_kinds=("429", "500", "503", "reset", "truncated",
                                                 "badjson"), seed=2)
    with Emulator(small_world(), faults) as emu, make_client(emu, concurrency=1) as client:
        for _ in range(40):
            with contextlib.suppress(TaskRouterError):  # out of attempts: still answered
                client.get_json(f"{emu.base_url}/v1/Workspaces")
            assert emu.server.stats.in_flight == 0
        stats = emu.server.stats.as_dict()
    assert sum(stats["faults"].values()) >= 10
    assert stats["max_in_flight"] == 1


def test_no_connection_pool_full_warnings_at_full_concurrency(sqlite_url, caplog):
    caplog.set_level(logging.WARNING, logger="urllib3")
    with Emulator(small_world(workers_per_workspace=24), Faults(latency_ms=5)) as emu:
        figures, client = sync_with_functions(emu, sqlite_url, concurrency=12)
        assert_matches_truth(sqlite_url, emu.world.truth())
    assert figures.workers == 48
    assert "Connection pool is full" not in caplog.text


def test_unreadable_retry_after_falls_back_to_backoff(sqlite_url):
    faults = Faults(fault_rate=0.3, fault_kinds=("429",), retry_after="soon-ish", seed=8)
    with Emulator(small_world(), faults) as emu:
        figures, client = sync_with_functions(emu, sqlite_url)
        injected = server_faults(emu)
        assert_matches_truth(sqlite_url, emu.world.truth())
    assert injected > 0 and client.stats.snapshot()["retries"] == injected
    assert figures.workers_failed == []
