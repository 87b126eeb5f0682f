"""Optional settings read once at definitions load, with the defaults the README lists. Every
value is checked there; the bad ones fail together in one ``SettingsError`` naming each variable.

The client's tuning becomes one ``ClientOptions`` here (``client_options``), for the Dagster
resource and, through it, the reader process. Secrets are not read here: they reach resources
through ``dg.EnvVar`` (see ``definitions.py``).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any, Protocol, TypeVar
from zoneinfo import ZoneInfo

from pipelines.taskrouter.options import (
    DEFAULT_BASE_URL,
    DEFAULT_CONCURRENCY,
    MAX_PAGE_SIZE,
    ClientOptions,
)

# The yes/no spellings every switch accepts (any case, spaces trimmed).
TRUE_SPELLINGS = ("1", "true", "yes", "on")
FALSE_SPELLINGS = ("0", "false", "no", "off")
_WHOLE_NUMBER = re.compile(r"[+-]?\d+")
MAX_SHARDS = 256  # SYNC_SHARDS above it runs this many
T = TypeVar("T")


class SettingsError(ValueError):
    """Optional settings that cannot be used; the message names each variable and its fix."""


def _shown(raw: str) -> str:
    """A bad value for a message (these variables hold no secrets; long values are cut)."""
    return repr(raw if len(raw) <= 60 else raw[:57] + "...")


def parse_flag(name: str, raw: str | None, default: bool) -> bool:
    """A yes/no variable: 1/true/yes/on or 0/false/no/off in any case; empty means ``default``."""
    value = (raw or "").strip().lower()
    if not value:
        return default
    if value in TRUE_SPELLINGS:
        return True
    if value in FALSE_SPELLINGS:
        return False
    raise SettingsError(
        f"{name}={_shown(raw or '')} is not a yes/no value: use {'/'.join(TRUE_SPELLINGS)} to "
        f"switch it on or {'/'.join(FALSE_SPELLINGS)} to switch it off (any case; "
        f"unset or empty means {'on' if default else 'off'})"
    )


def _reader_process(raw: str) -> str:
    """``auto`` (a first load reads in a child process), ``1`` (every sync) or ``0`` (none)."""
    value = raw.strip().lower()
    if value == "auto":
        return "auto"
    try:
        return "1" if parse_flag("TASKROUTER_READER_PROCESS", value, False) else "0"
    except SettingsError:
        raise SettingsError(
            f"TASKROUTER_READER_PROCESS={_shown(raw)}: use auto, 1 or 0 "
            f"(also {'/'.join(TRUE_SPELLINGS[1:])} or {'/'.join(FALSE_SPELLINGS[1:])})"
        ) from None


def reader_process_choice(raw: str) -> bool | str:
    """A ``TASKROUTER_READER_PROCESS`` spelling as ``TaskRouterClient``'s ``reader_process``:
    True, False or "auto" (the one parser for the settings and the resource's config)."""
    return {"1": True, "0": False}.get(_reader_process(raw), "auto")


class _Environment:
    """Reads the optional variables and collects every problem, so one error lists them all."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self.problems: list[str] = []

    def raw(self, name: str) -> str:
        return self.environ.get(name, "").strip()

    def text(self, name: str, default: str) -> str:
        return self.raw(name) or default

    def whole(self, name: str, default: int, low: int, high: int | None = None) -> int:
        raw = self.raw(name)
        if not raw:
            return default
        wanted = (f"a whole number from {low} to {high}" if high is not None
                  else f"a whole number, at least {low}")
        if not _WHOLE_NUMBER.fullmatch(raw):
            return self._problem(f"{name}={_shown(raw)} is not a whole number: use {wanted} "
                                 f"(default {default})", default)
        value = int(raw)
        if value < low or (high is not None and value > high):
            return self._problem(f"{name}={_shown(raw)} is out of range: use {wanted} "
                                 f"(default {default})", default)
        return value

    def positive(self, name: str, default: float | None, unset: str) -> float | None:
        """A finite number > 0; ``unset`` says what leaving it out means."""
        raw = self.raw(name)
        if not raw:
            return default
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value > 0):
            return self._problem(f"{name}={_shown(raw)} is not a number greater than 0: use "
                                 f"e.g. {default if default is not None else 10:g}, or leave "
                                 f"it unset for {unset}", default)
        return value

    def flag(self, name: str, default: bool) -> bool:
        try:
            return parse_flag(name, self.environ.get(name), default)
        except SettingsError as error:
            return self._problem(str(error), default)

    def reader_process(self, name: str, default: str) -> str:
        try:
            return _reader_process(self.text(name, default))
        except SettingsError as error:
            return self._problem(str(error), default)

    def zone(self, name: str, default: str) -> str:
        raw = self.text(name, default)
        try:
            ZoneInfo(raw)
        except Exception:  # noqa: BLE001 - ZoneInfoNotFoundError, ValueError, OSError by key
            return self._problem(f"{name}={_shown(raw)} is not an IANA time zone: use a name "
                                 f"such as UTC, Europe/Berlin or America/New_York "
                                 f"(default {default})", default)
        return raw

    def day(self, name: str, default: str) -> str:
        raw = self.text(name, default)
        try:
            return date.fromisoformat(raw).isoformat()
        except ValueError:
            return self._problem(f"{name}={_shown(raw)} is not a date: use YYYY-MM-DD "
                                 f"(default {default})", default)

    def http_url(self, name: str, default: str) -> str:
        raw = self.text(name, default)
        if not re.fullmatch(r"https?://[^/?#\s]+(/\S*)?", raw, flags=re.IGNORECASE):
            # not echoed: an API root could carry user:password@
            return self._problem(f"{name} is not an http(s) URL: use e.g. {default} "
                                 "(or the emulator's http://127.0.0.1:PORT)", default)
        return raw

    def shards(self) -> int:
        return min(self.whole("SYNC_SHARDS", 1, 1), MAX_SHARDS)

    def _problem(self, message: str, fallback: T) -> T:
        self.problems.append(message)
        return fallback

    def check(self) -> None:
        """One ``SettingsError`` naming every problem found, if any."""
        if self.problems:
            raise SettingsError(
                "Invalid settings in the environment (fix or unset these variables):\n  - "
                + "\n  - ".join(self.problems)
            )


# The client's tuning: the same names in ``Settings`` and in the resource's config.
CLIENT_TUNING = ("page_size", "concurrency", "requests_per_second", "connect_timeout_s",
                 "read_timeout_s", "max_attempts", "reader_process")


class ClientTuning(Protocol):
    """``Settings`` or the ``TaskRouterResource`` config: what ``client_options`` reads."""

    page_size: int
    concurrency: int
    requests_per_second: float | None
    connect_timeout_s: float
    read_timeout_s: float
    max_attempts: int
    reader_process: str


def client_options(tuning: ClientTuning, requests_per_second: float | None = None) -> ClientOptions:
    """The one place the client's options are built (``requests_per_second``: a shard's share)."""
    return ClientOptions(
        page_size=tuning.page_size, concurrency=tuning.concurrency,
        requests_per_second=tuning.requests_per_second,
        connect_timeout=tuning.connect_timeout_s, read_timeout=tuning.read_timeout_s,
        max_attempts=tuning.max_attempts,
        reader_process=reader_process_choice(tuning.reader_process),
    ).with_rate(requests_per_second)


@dataclass(frozen=True)
class Settings:
    base_url: str
    workspace_sids: str
    reporting_timezone: str
    summary_start_date: str
    page_size: int
    concurrency: int
    requests_per_second: float | None
    connect_timeout_s: float
    read_timeout_s: float
    max_attempts: int
    reader_process: str
    batch_rows: int
    sync_cron: str
    auto_migrate: bool
    freshness_minutes: float
    daily_checks_cron: str = "0 6 * * *"
    schedules_running: bool = False
    events: bool = True  # follow TaskRouter's Events between list sweeps (pipelines.event_feed)
    sweep_interval_minutes: int = 60  # full list read at most this often (TaskRouter's clock)
    events_overlap_seconds: int = 120  # each events window re-reads this much of the last one
    events_window_events: int = 5_000  # reservation events held in memory per window
    reconcile_days: int = 7  # days the CumulativeStatistics reconciliation check compares
    sync_shards: int = 1  # shard steps per sync (SQLite runs one); the planner reads it again
    shard_retries: int = 1  # Dagster retries of a shard step that raised

    def client_options(self) -> ClientOptions:
        return client_options(self)

    def client_tuning(self) -> dict[str, Any]:
        """The tuning as the ``TaskRouterResource`` config takes it (the same names)."""
        return {name: getattr(self, name) for name in CLIENT_TUNING}


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """The optional settings from the environment, each checked: a bad value fails here (at
    definitions load) with one ``SettingsError`` naming every bad variable and what it accepts."""
    env = _Environment(os.environ if environ is None else environ)
    settings = Settings(
        base_url=env.http_url("TASKROUTER_BASE_URL", DEFAULT_BASE_URL),
        workspace_sids=env.raw("TASKROUTER_WORKSPACE_SIDS"),
        reporting_timezone=env.zone("REPORTING_TIMEZONE", "UTC"),
        summary_start_date=env.day("SUMMARY_START_DATE", "2025-01-01"),
        page_size=env.whole("TASKROUTER_PAGE_SIZE", MAX_PAGE_SIZE, 1, MAX_PAGE_SIZE),
        concurrency=env.whole("TASKROUTER_CONCURRENCY", DEFAULT_CONCURRENCY, 1),
        requests_per_second=env.positive("TASKROUTER_REQUESTS_PER_SECOND", None, "no limit"),
        connect_timeout_s=env.positive("TASKROUTER_CONNECT_TIMEOUT_S", 5.0, "5 seconds") or 5.0,
        read_timeout_s=env.positive("TASKROUTER_READ_TIMEOUT_S", 30.0, "30 seconds") or 30.0,
        max_attempts=env.whole("TASKROUTER_MAX_ATTEMPTS", 6, 1),
        reader_process=env.reader_process("TASKROUTER_READER_PROCESS", "auto"),
        batch_rows=env.whole("SYNC_BATCH_ROWS", 10_000, 1),
        sync_cron=env.text("SYNC_CRON", "*/5 * * * *"),
        auto_migrate=env.flag("WAREHOUSE_AUTO_MIGRATE", True),
        freshness_minutes=env.positive("FRESHNESS_MAX_AGE_MINUTES", 30.0, "30 minutes") or 30.0,
        daily_checks_cron=env.text("DAILY_CHECKS_CRON", "0 6 * * *"),
        schedules_running=env.flag("SYNC_SCHEDULE_RUNNING", False),
        events=env.flag("TASKROUTER_EVENTS", True),
        sweep_interval_minutes=env.whole("TASKROUTER_SWEEP_INTERVAL_MINUTES", 60, 0),
        events_overlap_seconds=env.whole("TASKROUTER_EVENTS_OVERLAP_SECONDS", 120, 0, 86_400),
        events_window_events=env.whole("TASKROUTER_EVENTS_WINDOW_EVENTS", 5_000, 1000),
        reconcile_days=env.whole("EVENTS_RECONCILE_DAYS", 7, 0, 28),
        sync_shards=env.shards(),
        shard_retries=env.whole("SYNC_SHARD_RETRIES", 1, 0),
    )
    env.check()
    return settings


def shard_count(environ: Mapping[str, str] | None = None) -> int:
    """``SYNC_SHARDS`` as it is now (the planner reads it when the step runs), checked as
    ``load_settings`` checks it."""
    env = _Environment(os.environ if environ is None else environ)
    shards = env.shards()
    env.check()
    return shards
