"""The one ``Definitions`` object: everything Dagster sees is listed here.

Optional settings take their defaults here, at load time; secrets (Twilio credentials and the
warehouse URL, which may hold a password) are passed as ``dg.EnvVar`` only when set, because
an unset ``EnvVar`` fails at launch while a missing credential should fail with our message.
"""

from __future__ import annotations

import os

import dagster as dg

from pipelines.assets import build_assets, with_catalog_metadata, with_freshness_policy
from pipelines.checks import build_checks, run_scoped, whole_table
from pipelines.event_checks import build_event_checks
from pipelines.heartbeat import heartbeat_timing
from pipelines.resources import TaskRouterResource, WarehouseResource
from pipelines.schedules import (
    build_daily_checks_job,
    build_daily_checks_schedule,
    build_sync_job,
    build_sync_schedule,
)
from pipelines.sensors import build_alert_sensors, webhook_problem
from pipelines.settings import Settings, SettingsError, load_settings
from warehouse.engine import DEFAULT_WAREHOUSE_URL


def _env_or_none(name: str) -> dg.EnvVar | None:
    return dg.EnvVar(name) if os.environ.get(name, "").strip() else None


def _cron_problem(name: str, cron: str) -> str | None:
    """Why Dagster would refuse ``cron`` (the message names the variable), or None."""
    try:
        dg.ScheduleDefinition(name="cron_probe", cron_schedule=cron, target="*")
    except dg.DagsterInvalidDefinitionError as error:
        if "cron" not in str(error).lower():
            raise
        return (f"{name}={cron!r} is not a cron expression: use 5 fields (minute hour day month "
                "weekday), e.g. '*/5 * * * *' (every 5 minutes) or '0 6 * * *' (06:00 UTC daily)")
    return None


def _problems(error: SettingsError) -> list[str]:
    """The one-per-variable lines of a ``SettingsError`` (its message lists them as ``  - ``)."""
    lines = [line[4:] for line in str(error).splitlines() if line.startswith("  - ")]
    return lines or [str(error)]


def _checked_settings() -> Settings:
    """The settings, the cron expressions, the heartbeat and the webhook, every problem in ONE
    error: a bad cron used to be reported only after every other variable was fixed."""
    problems: list[str] = []
    try:
        settings: Settings | None = load_settings()
    except SettingsError as error:
        problems += _problems(error)
        settings = None
    crons = {
        "SYNC_CRON": settings.sync_cron if settings else
        os.environ.get("SYNC_CRON", "").strip() or "*/5 * * * *",
        "DAILY_CHECKS_CRON": settings.daily_checks_cron if settings else
        os.environ.get("DAILY_CHECKS_CRON", "").strip() or "0 6 * * *",
    }
    problems += [p for name, cron in crons.items() if (p := _cron_problem(name, cron))]
    problems += heartbeat_timing()[1]
    problems += [p for p in (webhook_problem(),) if p]
    if problems or settings is None:
        raise SettingsError(
            "Invalid settings in the environment (fix or unset these variables):\n  - "
            + "\n  - ".join(problems)
        )
    return settings


def build_definitions() -> dg.Definitions:
    from pipelines.notices import silence_dagster_notices

    silence_dagster_notices()  # before the decorators below emit them
    settings = _checked_settings()
    assets, _daily = build_assets(settings)
    assets = with_freshness_policy(with_catalog_metadata(assets), settings.freshness_minutes)
    checks = [*build_checks(settings), *build_event_checks(settings)]
    sync_job = build_sync_job(run_scoped(checks), settings.sync_shards)
    running = settings.schedules_running
    schedule = build_sync_schedule(sync_job, settings.sync_cron, running=running)
    checks_job = build_daily_checks_job(whole_table(checks))
    checks_schedule = build_daily_checks_schedule(checks_job, settings.daily_checks_cron,
                                                  running=running)
    taskrouter = TaskRouterResource(
        account_sid=_env_or_none("TWILIO_ACCOUNT_SID"),
        auth_token=_env_or_none("TWILIO_AUTH_TOKEN"),
        api_key_sid=_env_or_none("TWILIO_API_KEY_SID"),
        api_key_secret=_env_or_none("TWILIO_API_KEY_SECRET"),
        base_url=settings.base_url,
        workspace_sids=settings.workspace_sids,
        **settings.client_tuning(),
    )
    warehouse = WarehouseResource(
        url=_env_or_none("WAREHOUSE_URL") or DEFAULT_WAREHOUSE_URL,
        reporting_timezone=settings.reporting_timezone,
        auto_migrate=settings.auto_migrate,
    )
    return dg.Definitions(
        assets=assets,
        asset_checks=checks,
        jobs=[sync_job, checks_job],
        schedules=[schedule, checks_schedule],
        sensors=build_alert_sensors(settings.freshness_minutes),
        resources={"taskrouter": taskrouter, "warehouse": warehouse},
    )


defs = build_definitions()
