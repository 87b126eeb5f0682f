"""A run's heartbeat, so that the sync schedule can tell a dead sync from a slow one.

A sync whose process dies (``kill -9``, OOM, a host crash) stays STARTED in the Dagster instance
forever, and the schedule skips every tick while a sync is in flight. Wherever a run executes
(``make sync``'s ``execute_in_process``, the daemon's run worker, a step process), the warehouse
resource starts a thread that writes one debug line to the run's event log every
``SYNC_HEARTBEAT_SECONDS`` (30). The thread beats whatever the sync is doing, so a sync that
waits out a long TaskRouter rate limit, or a slow query, keeps beating; only a process that is
gone stops. The schedule reads the newest event of each in-flight sync (any event counts, the
heartbeat guarantees one per interval) and takes a run silent for ``SYNC_DEAD_AFTER_SECONDS``
(90) for dead: it marks it failed, which also frees the ``taskrouter_api`` pool, and syncs.

The clock is the caller's: the schedule judges at its tick's time, so a test can judge at any
instant without waiting.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import dagster as dg

HEARTBEAT_ENV = "SYNC_HEARTBEAT_SECONDS"
DEAD_AFTER_ENV = "SYNC_DEAD_AFTER_SECONDS"
DEFAULT_HEARTBEAT_S = 30.0
DEFAULT_DEAD_AFTER_S = 90.0  # three missed beats; with the 5-minute cron, freed by the next tick
HEARTBEAT_MESSAGE = "heartbeat: this run's process is alive"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HeartbeatTiming:
    interval_s: float = DEFAULT_HEARTBEAT_S
    dead_after_s: float = DEFAULT_DEAD_AFTER_S


def _seconds(env: Mapping[str, str], name: str, default: float) -> tuple[float, str | None]:
    raw = env.get(name, "").strip()
    if not raw:
        return default, None
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        return default, f"{name}={raw!r} is not a number of seconds greater than 0 (default {default:g})"
    return value, None


def heartbeat_timing(environ: Mapping[str, str] | None = None) -> tuple[HeartbeatTiming, list[str]]:
    """The timing from the environment, and the problems with it (for the settings error)."""
    env = os.environ if environ is None else environ
    interval, bad_interval = _seconds(env, HEARTBEAT_ENV, DEFAULT_HEARTBEAT_S)
    dead_after, bad_dead = _seconds(env, DEAD_AFTER_ENV, DEFAULT_DEAD_AFTER_S)
    problems = [p for p in (bad_interval, bad_dead) if p]
    if not problems and dead_after < 2 * interval:
        problems.append(f"{DEAD_AFTER_ENV}={dead_after:g} must be at least twice "
                        f"{HEARTBEAT_ENV}={interval:g}, or a live sync could be taken for dead")
    return HeartbeatTiming(interval, dead_after), problems


class Heartbeat:
    """Calls ``beat`` now and then every ``interval`` seconds on a daemon thread until stopped.

    A failing beat is logged and retried at the next interval: the heartbeat never fails a run.
    """

    def __init__(self, beat: Callable[[], None], interval: float) -> None:
        self._beat = beat
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="run-heartbeat", daemon=True)

    def _safe_beat(self) -> None:
        try:
            self._beat()
        except Exception as error:  # noqa: BLE001 - the next beat may succeed
            log.warning("run heartbeat failed (%s); retrying in %gs", type(error).__name__,
                        self._interval)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._safe_beat()

    def start(self) -> Heartbeat:
        self._safe_beat()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self._interval + 10)


@contextmanager
def run_heartbeat(context: dg.InitResourceContext) -> Iterator[None]:
    """Beat into the run's event log while a resource of the run is open (no run: no beat)."""
    if context.dagster_run is None or context.instance is None:
        yield
        return
    timing, _problems = heartbeat_timing()
    run_log = context.log
    message = f"{HEARTBEAT_MESSAGE} (every {timing.interval_s:g}s)"
    heart = Heartbeat(lambda: run_log.debug(message), timing.interval_s).start()
    try:
        yield
    finally:
        heart.stop()


def last_sign_of_life(instance: dg.DagsterInstance, record: dg.RunRecord) -> float:
    """When the run last showed it was alive: its newest event (the heartbeat writes one every
    interval), or its creation / status change / start, whichever is latest (POSIX seconds)."""
    stamps = [record.create_timestamp.timestamp(), record.update_timestamp.timestamp(),
              record.start_time or 0.0]
    newest = instance.get_records_for_run(record.dagster_run.run_id, ascending=False, limit=1)
    stamps += [r.timestamp for r in newest.records]
    return max(stamps)
