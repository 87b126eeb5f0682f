"""The one ``Definitions`` object: everything Dagster sees is listed here.

Optional settings take their defaults here, at load time; secrets (Twilio credentials and the
warehouse URL, which may hold a password) are passed as ``dg.EnvVar`` only when set, because
an unset ``EnvVar`` fails at launch while a missing credential should fail with our message.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

import dagster as dg

from pipelines.assets import build_assets
from pipelines.checks import build_checks
from pipelines.event_checks import build_event_checks
from pipelines.resources import TaskRouterResource, WarehouseResource
from pipelines.schedules import (
    build_daily_checks_job,
    build_daily_checks_schedule,
    build_sync_job,
    build_sync_schedule,
)
from pipelines.settings import SettingsError, load_settings
from warehouse.engine import DEFAULT_WAREHOUSE_URL

T = TypeVar("T")


def _env_or_none(name: str) -> dg.EnvVar | None:
    return dg.EnvVar(name) if os.environ.get(name, "").strip() else None


def _scheduled(name: str, cron: str, build: Callable[[str], T]) -> T:
    """``build(cron)``; a cron Dagster refuses fails naming the variable, not the schedule."""
    try:
        return build(cron)
    except dg.DagsterInvalidDefinitionError as error:
        if "cron" not in str(error).lower():
            raise
        raise SettingsError(
            f"{name}={cron!r} is not a cron expression: use 5 fields (minute hour day month "
            "weekday), e.g. '*/5 * * * *' (every 5 minutes) or '0 6 * * *' (06:00 UTC daily)"
        ) from None


def build_definitions() -> dg.Definitions:
    from pipelines.notices import silence_dagster_notices

    silence_dagster_notices()  # before the decorators below emit them
    settings = load_settings()
    assets, _daily = build_assets(settings)
    sync_job = build_sync_job()
    running = settings.schedules_running
    schedule = _scheduled("SYNC_CRON", settings.sync_cron,
                          lambda cron: build_sync_schedule(sync_job, cron, running=running))
    checks_job = build_daily_checks_job()
    checks_schedule = _scheduled(
        "DAILY_CHECKS_CRON", settings.daily_checks_cron,
        lambda cron: build_daily_checks_schedule(checks_job, cron, running=running),
    )
    taskrouter = TaskRouterResource(
        account_sid=_env_or_none("TWILIO_ACCOUNT_SID"),
        auth_token=_env_or_none("TWILIO_AUTH_TOKEN"),
        api_key_sid=_env_or_none("TWILIO_API_KEY_SID"),
        api_key_secret=_env_or_none("TWILIO_API_KEY_SECRET"),
        base_url=settings.base_url,
        workspace_sids=settings.workspace_sids,
        page_size=settings.page_size,
        concurrency=settings.concurrency,
        requests_per_second=settings.requests_per_second,
        connect_timeout_s=settings.connect_timeout_s,
        read_timeout_s=settings.read_timeout_s,
        max_attempts=settings.max_attempts,
        reader_process=settings.reader_process,
    )
    warehouse = WarehouseResource(
        url=_env_or_none("WAREHOUSE_URL") or DEFAULT_WAREHOUSE_URL,
        reporting_timezone=settings.reporting_timezone,
        auto_migrate=settings.auto_migrate,
    )
    return dg.Definitions(
        assets=assets,
        asset_checks=[*build_checks(settings), *build_event_checks(settings)],
        jobs=[sync_job, checks_job],
        schedules=[schedule, checks_schedule],
        resources={"taskrouter": taskrouter, "warehouse": warehouse},
    )


defs = build_definitions()
