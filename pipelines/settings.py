"""Optional settings read once at definitions load, with the defaults the README lists.

Secrets are not read here: they reach resources through ``dg.EnvVar`` (see ``definitions.py``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import date

from pipelines.taskrouter.client import DEFAULT_BASE_URL, DEFAULT_CONCURRENCY


def _float(name: str, default: float | None) -> float | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number") from None


def _int(name: str, default: int) -> int:
    value = _float(name, default)
    assert value is not None
    return int(value)


def _text(name: str, default: str) -> str:
    return os.environ.get(name, "").strip() or default


def _reader_process(raw: str) -> str:
    """``auto`` (a first load reads in a child process), ``1`` (every sync) or ``0`` (none)."""
    value = raw.lower()
    for canonical, spellings in (("auto", ("auto",)), ("1", ("1", "true", "yes", "on")),
                                 ("0", ("0", "false", "no", "off"))):
        if value in spellings:
            return canonical
    raise ValueError(f"TASKROUTER_READER_PROCESS={raw!r}: use auto, 1 or 0")


def reader_process_choice(raw: str) -> bool | str:
    """A ``TASKROUTER_READER_PROCESS`` spelling as ``TaskRouterClient``'s ``reader_process``:
    True, False or "auto" (the one parser for the settings and the resource's config)."""
    return {"1": True, "0": False}.get(_reader_process(raw), "auto")


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


def load_settings() -> Settings:
    start = _text("SUMMARY_START_DATE", "2025-01-01")
    date.fromisoformat(start)  # fail at load with the variable's name in the traceback
    return Settings(
        base_url=_text("TASKROUTER_BASE_URL", DEFAULT_BASE_URL),
        workspace_sids=os.environ.get("TASKROUTER_WORKSPACE_SIDS", "").strip(),
        reporting_timezone=_text("REPORTING_TIMEZONE", "UTC"),
        summary_start_date=start,
        page_size=_int("TASKROUTER_PAGE_SIZE", 1000),
        concurrency=_int("TASKROUTER_CONCURRENCY", DEFAULT_CONCURRENCY),
        requests_per_second=_float("TASKROUTER_REQUESTS_PER_SECOND", None) or None,
        connect_timeout_s=float(_float("TASKROUTER_CONNECT_TIMEOUT_S", 5.0) or 5.0),
        read_timeout_s=float(_float("TASKROUTER_READ_TIMEOUT_S", 30.0) or 30.0),
        max_attempts=_int("TASKROUTER_MAX_ATTEMPTS", 6),
        reader_process=_reader_process(_text("TASKROUTER_READER_PROCESS", "auto")),
        batch_rows=_int("SYNC_BATCH_ROWS", 10_000),
        sync_cron=_text("SYNC_CRON", "*/5 * * * *"),
        auto_migrate=_text("WAREHOUSE_AUTO_MIGRATE", "1") not in ("0", "false", "no"),
        freshness_minutes=float(_float("FRESHNESS_MAX_AGE_MINUTES", 30.0) or 30.0),
    )
