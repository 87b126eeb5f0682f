"""An API that misbehaves in ways a fault rate does not cover: a rate limit far below what the
client sends (every 429 carrying the same Retry-After), pages that point back at themselves,
next page URLs that cannot be parsed, and JSON that the fast decoder refuses but JSON allows.
Each ends in a complete load or in that one worker failing with a clear reason, never in a
stuck or aborted sync.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from pipelines.taskrouter import emulator as emulator_module
from pipelines.taskrouter.emulator import Emulator, Faults
from pipelines.taskrouter.ratelimit import RateLimiter
from tests.helpers import assert_matches_truth, small_world, sync_with_functions, warehouse_frame


def test_a_rate_limit_far_below_the_clients_pace_still_loads_everything(sqlite_url):
    """10 requests/s on the server, every 429 saying ``Retry-After: 1``, and the client on its
    defaults (no limit of its own, 6 attempts, eight readers): the 429s slow the whole client
    down instead of sending its retries back together (before: most workers failed)."""
    faults = Faults(requests_per_second=10.0, retry_after_header=True, retry_after="1")
    with Emulator(small_world(workers_per_workspace=10), faults) as emu:
        figures, client = sync_with_functions(
            emu, sqlite_url, requests_per_second=None, max_attempts=6, concurrency=8,
            backoff_factor=0.5, backoff_max=30.0, retry_after_max=60.0, read_timeout=30.0)
        stats = emu.server.stats.as_dict()
        assert_matches_truth(sqlite_url, emu.world.truth())
    assert figures.workers_failed == []
    assert stats["rate_limited"] > 0, "the server's limit must actually bite"
    assert client.limiter.slowdowns > 0
    # the client settled near the server's pace instead of hammering it
    assert stats["rate_limited"] < stats["api_requests"] / 2


def test_the_limiter_halves_the_achieved_rate_once_per_second_and_recovers():
    limiter = RateLimiter(None)
    assert not limiter.enabled
    for _ in range(20):  # unlimited: as fast as the caller asks
        limiter.acquire()
        time.sleep(0.005)
    limiter.slow_down()
    assert limiter.enabled and limiter.adapting
    achieved_half = limiter.rate
    assert RateLimiter.MIN_RATE <= achieved_half < 150  # about half of ~190/s
    limiter.slow_down()  # the same overload answered again within the second: no second cut
    assert limiter.rate == achieved_half and limiter.slowdowns == 1
    time.sleep(1.05)
    limiter.acquire()
    assert limiter.rate > achieved_half  # a second without 429 lets it climb back

    configured = RateLimiter(20.0)
    configured.slow_down()
    assert configured.rate <= 10.0 and configured.adapting
    time.sleep(1.05)
    configured.acquire()
    assert configured.rate <= 20.0  # never above what was configured


def test_a_page_that_points_back_at_itself_fails_that_worker_not_the_sync(sqlite_url, monkeypatch):
    original = emulator_module._Handler._meta

    def looping(self: Any, path: str, query: dict[str, str], key: str, *args: Any) -> dict[str, Any]:
        meta = original(self, path, query, key, *args)
        if key == "reservations" and query.get("PageToken"):
            meta["next_page_url"] = meta["url"]  # page 2 says: next is page 2 again
        return meta

    monkeypatch.setattr(emulator_module._Handler, "_meta", looping)
    with Emulator(small_world(workers_per_workspace=2), Faults()) as emu:
        started = time.monotonic()
        figures, _ = sync_with_functions(emu, sqlite_url)  # page_size 10: 3 pages a worker
        elapsed = time.monotonic() - started
    assert elapsed < 30
    assert len(figures.workers_failed) == 4 and figures.workers_read == 4


@pytest.mark.parametrize("reader_process", [False, True])
def test_an_unparseable_next_page_url_fails_that_worker_with_a_reason(sqlite_url, caplog,
                                                                      reader_process):
    with Emulator(small_world(workers_per_workspace=2),
                  Faults(next_page_base_url="http://127.0.0.1:99999")) as emu:
        figures, _ = sync_with_functions(emu, sqlite_url, reader_process=reader_process)
    assert len(figures.workers_failed) == 4
    assert "next page URL that cannot be followed" in caplog.text
    assert "ValueError" not in caplog.text


@pytest.mark.parametrize("reader_process", [False, True])
def test_json_with_a_lone_surrogate_loads_with_a_replacement_character(sqlite_url, monkeypatch,
                                                                       reader_process):
    """``"\\ud83d"`` (half an emoji) is valid JSON that orjson refuses and no database driver
    can encode: the page loads through the standard library, the half character as U+FFFD."""
    original = emulator_module._Handler._route

    def with_half_emoji(self: Any, path: str, query: dict[str, str]) -> bytes:
        body = original(self, path, query)
        return body.replace(b'"worker_name": "', b'"worker_name": "\\ud83d', 1).replace(
            b'"worker_name":"', b'"worker_name":"\\ud83d', 1)

    monkeypatch.setattr(emulator_module._Handler, "_route", with_half_emoji)
    with Emulator(small_world(workers_per_workspace=2), Faults()) as emu:
        figures, _ = sync_with_functions(emu, sqlite_url, reader_process=reader_process)
        rows = emu.world.truth()
    assert figures.workers_failed == [] and figures.rejected == 0
    stored = warehouse_frame(sqlite_url)
    assert len(stored) == len(rows)
    assert stored["worker_name"].str.startswith("\ufffd").sum() >= 1
