"""A sync whose process died stops blocking the schedule within two minutes, while a live one
that only waits (a long TaskRouter rate limit) is never taken for dead.

The schedule judges at its tick's time (``scheduled_execution_time``), so these tests choose the
instant they evaluate at (a controlled clock) instead of sleeping for minutes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from pipelines.heartbeat import (
    DEAD_AFTER_ENV,
    HEARTBEAT_ENV,
    HEARTBEAT_MESSAGE,
    Heartbeat,
    heartbeat_timing,
    last_sign_of_life,
)
from pipelines.schedules import IN_FLIGHT, SYNC_JOB
from pipelines.taskrouter.emulator import Emulator, Faults
from tests.helpers import PROJECT_ROOT, small_world

DEADLINE_S = 120.0


def evaluate(instance: dg.DagsterInstance, at: float) -> dg.RunRequest | dg.SkipReason:
    """One evaluation of ``taskrouter_sync_schedule``, as the daemon would run it at the tick
    ``at`` (POSIX seconds)."""
    from pipelines.definitions import build_definitions

    schedule = build_definitions().resolve_schedule_def("taskrouter_sync_schedule")
    context = dg.build_schedule_context(
        instance=instance, scheduled_execution_time=datetime.fromtimestamp(at, UTC))
    return schedule(context)


def wait_for(what: str, condition, process: subprocess.Popen[str] | None = None):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + DEADLINE_S
    while True:
        value = condition()
        if value:
            return value
        if process is not None and process.poll() is not None:
            raise AssertionError(f"sync exited ({process.returncode}) before {what}: "
                                 f"{process.stderr.read()[-3000:] if process.stderr else ''}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.fixture
def rate_limited(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Emulator]:
    """TaskRouter answering 429 with ``Retry-After: 60`` after two requests: a sync that gets
    that far waits a minute without a single request, alive but making no progress."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((PROJECT_ROOT / ".dagster_home" / "dagster.yaml").read_text())
    faults = Faults(requests_per_second=0.001, rate_limit_burst=2, retry_after="60")
    with Emulator(small_world(workspaces=1, workers_per_workspace=2), faults) as emu:
        for name in ("TWILIO_API_KEY_SID", "TWILIO_API_KEY_SECRET", "TASKROUTER_WORKSPACE_SIDS",
                     "SYNC_CRON", "SYNC_SHARDS"):
            monkeypatch.delenv(name, raising=False)
        env = {**emu.env(), "WAREHOUSE_URL": f"sqlite:///{tmp_path / 'warehouse.db'}",
               "DAGSTER_HOME": str(home), HEARTBEAT_ENV: "0.2", DEAD_AFTER_ENV: "1"}
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        yield emu


def in_flight_record(instance: dg.DagsterInstance) -> dg.RunRecord | None:
    records = instance.get_run_records(dg.RunsFilter(job_name=SYNC_JOB, statuses=IN_FLIGHT))
    return records[0] if records else None


def test_a_killed_make_sync_is_freed_but_a_rate_limited_one_never(rate_limited, monkeypatch):
    emulator = rate_limited
    process = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "sync"], cwd=PROJECT_ROOT, env=dict(os.environ),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        with dg.DagsterInstance.from_config(os.environ["DAGSTER_HOME"]) as instance:
            record = wait_for("a STARTED sync", lambda: (r := in_flight_record(instance)) and
                              r.dagster_run.status == dg.DagsterRunStatus.STARTED and r, process)
            run_id = record.dagster_run.run_id
            # the sync reached TaskRouter's rate limit: it now waits a minute, sending nothing
            wait_for("the 429", lambda: emulator.server.stats.rate_limited > 0, process)
            stalled_at, requests = time.time(), emulator.server.stats.api_requests

            # 1. alive without progress: the heartbeat goes on for many times SYNC_DEAD_AFTER
            def beat_after_stall() -> float | None:
                latest = last_sign_of_life(instance, in_flight_record(instance) or record)
                return latest if latest > stalled_at + 4.0 else None

            heard = wait_for("heartbeats during the stall", beat_after_stall, process)
            assert emulator.server.stats.api_requests == requests  # no progress at all
            skipped = evaluate(instance, heard + 0.5)  # 4+ s after its last request, 0.5 s after a beat
            assert isinstance(skipped, dg.SkipReason) and run_id in (skipped.skip_message or "")
            beats = [r.timestamp for r in instance.get_records_for_run(run_id).records
                     if HEARTBEAT_MESSAGE in (r.event_log_entry.user_message or "")]
            assert heard in beats  # what kept it alive was the heartbeat

            # 2. kill -9 of the process group: the run is left STARTED
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
            killed_at = time.time()
            assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.STARTED
            monkeypatch.delenv(HEARTBEAT_ENV)  # judge with the shipped timing (30 s / 90 s)
            monkeypatch.delenv(DEAD_AFTER_ENV)
            assert isinstance(evaluate(instance, killed_at + 30), dg.SkipReason)  # too early to tell
            assert in_flight_record(instance) is not None

            # 3. two minutes later the schedule fails the dead run and syncs
            requested = evaluate(instance, killed_at + 120)
            assert isinstance(requested, dg.RunRequest)
            dead = instance.get_run_by_id(run_id)
            assert dead.status == dg.DagsterRunStatus.FAILURE
            assert in_flight_record(instance) is None
            [failure] = instance.get_records_for_run(
                run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records
            assert "silent for" in (failure.event_log_entry.message or "")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


def test_the_heartbeat_beats_at_once_then_every_interval_until_stopped():
    beats: list[float] = []
    heart = Heartbeat(lambda: beats.append(time.monotonic()), interval=0.05).start()
    assert len(beats) == 1  # the first beat is synchronous: a run is alive from its first step
    wait_for("three more beats", lambda: len(beats) >= 4)
    heart.stop()
    count = len(beats)
    time.sleep(0.2)
    assert len(beats) == count


def test_a_failing_beat_never_stops_the_heart():
    calls: list[int] = []

    def beat() -> None:
        calls.append(1)
        raise ConnectionError("instance database unreachable")

    heart = Heartbeat(beat, interval=0.02).start()
    wait_for("beats after failures", lambda: len(calls) >= 3)
    heart.stop()


def test_timing_comes_from_the_environment_and_is_checked():
    timing, problems = heartbeat_timing({})
    assert (timing.interval_s, timing.dead_after_s, problems) == (30.0, 90.0, [])
    timing, problems = heartbeat_timing({HEARTBEAT_ENV: "5", DEAD_AFTER_ENV: "20"})
    assert (timing.interval_s, timing.dead_after_s, problems) == (5.0, 20.0, [])
    _, problems = heartbeat_timing({HEARTBEAT_ENV: "soon"})
    assert problems and f"{HEARTBEAT_ENV}='soon'" in problems[0]
    _, problems = heartbeat_timing({HEARTBEAT_ENV: "60", DEAD_AFTER_ENV: "90"})
    assert problems and "at least twice" in problems[0]
