"""Alerts: Dagster OSS delivers none, so two sensors post to a webhook (``ALERT_WEBHOOK_URL``).

- ``taskrouter_run_failure_alert``: any failed run of this code location (a sync, the daily
  checks, a backfill; also a dead sync the schedule marked failed).
- ``taskrouter_staleness_alert``: ``reservations`` not synced for ``FRESHNESS_MAX_AGE_MINUTES``
  (the same limit as its freshness policy and the ``last_sync_is_recent`` check), posted once
  when it goes stale and once when it is fresh again.

The body is JSON with a ``text`` line (Slack, Mattermost and Teams-style incoming webhooks show
it) and the fields a script needs. It never holds a secret: the Twilio secrets, the warehouse
and Dagster database passwords and the webhook URL itself are masked in every text. Both
sensors run by default when the variable is set at definitions load, and do nothing without it.
A headless ``make sync`` (cron) runs no sensor: cron users rely on its exit code.
"""

from __future__ import annotations

import json
import os
import re
import time
from typing import Any

import dagster as dg
import requests

from warehouse.engine import url_secrets

WEBHOOK_ENV = "ALERT_WEBHOOK_URL"
SOURCE = "taskrouter-warehouse"
RESERVATIONS = dg.AssetKey("reservations")
SECRET_VARIABLES = ("TWILIO_AUTH_TOKEN", "TWILIO_API_KEY_SECRET", "DAGSTER_PG_PASSWORD")
POST_TIMEOUT_S = 10.0
MAX_TEXT = 500


class AlertNotDelivered(RuntimeError):
    """The webhook refused or could not be reached (the tick fails, Dagster evaluates again)."""


def webhook_problem(environ: dict[str, str] | None = None) -> str | None:
    """Why ``ALERT_WEBHOOK_URL`` cannot be used (never echoing it: it may hold a token)."""
    raw = (os.environ if environ is None else environ).get(WEBHOOK_ENV, "").strip()
    if raw and not re.fullmatch(r"https?://[^/?#\s]+(/\S*)?", raw, flags=re.IGNORECASE):
        return f"{WEBHOOK_ENV} is not an http(s) URL (e.g. https://hooks.example.com/T0/B0/xyz)"
    return None


def _secrets() -> list[str]:
    env = os.environ
    found = [env.get(name, "") for name in SECRET_VARIABLES]
    found += url_secrets(env.get("WAREHOUSE_URL"))
    webhook = env.get(WEBHOOK_ENV, "").strip()
    found += [webhook, *[part for part in webhook.split("/") if len(part) >= 8]]
    return sorted({s for s in found if len(s) >= 4}, key=len, reverse=True)


def scrub(text: str) -> str:
    """``text`` with every known secret value masked, cut to ``MAX_TEXT`` characters."""
    for secret in _secrets():
        text = text.replace(secret, "***")
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT - 3] + "..."


def post_alert(payload: dict[str, Any]) -> bool:
    """POST ``payload`` (its texts scrubbed) to the webhook; False when none is configured."""
    url = os.environ.get(WEBHOOK_ENV, "").strip()
    if not url:
        return False
    body = {key: scrub(value) if isinstance(value, str) else value for key, value in payload.items()}
    body["source"] = SOURCE
    try:
        response = requests.post(url, data=json.dumps(body), timeout=POST_TIMEOUT_S,
                                 headers={"Content-Type": "application/json"})
    except requests.RequestException as error:
        raise AlertNotDelivered(f"alert webhook unreachable ({type(error).__name__})") from None
    if response.status_code >= 300:
        raise AlertNotDelivered(f"alert webhook answered HTTP {response.status_code}")
    return True


def _default_status() -> dg.DefaultSensorStatus:
    running = bool(os.environ.get(WEBHOOK_ENV, "").strip())
    return dg.DefaultSensorStatus.RUNNING if running else dg.DefaultSensorStatus.STOPPED


def failure_payload(instance: dg.DagsterInstance, run: dg.DagsterRun, message: str) -> dict[str, Any]:
    """What a failed run's alert says: the job, the run, the failed steps and their first error line."""
    failures = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
    steps: list[str] = []
    errors: list[str] = []
    for record in failures.records:
        event = record.event_log_entry.dagster_event
        if event is None or event.step_key is None:
            continue
        steps.append(event.step_key)
        error = getattr(event.event_specific_data, "error", None)
        while error is not None and error.cause is not None:  # the user's error, not Dagster's wrapper
            error = error.cause
        if error is not None and error.message.strip():
            errors.append(f"{event.step_key}: {error.message.strip().splitlines()[0]}")
    return {
        "kind": "run_failure",
        "text": f"[{SOURCE}] {run.job_name} run {run.run_id} failed: "
                + (errors[0] if errors else message),
        "job": run.job_name,
        "run_id": run.run_id,
        "failed_steps": steps,
        "errors": [scrub(e) for e in errors[:5]],
        "message": message,
    }


def build_alert_sensors(freshness_minutes: float) -> list[dg.SensorDefinition]:
    """The run-failure and staleness alert sensors (see the module docstring)."""
    status = _default_status()

    @dg.run_failure_sensor(
        name="taskrouter_run_failure_alert",
        default_status=status,
        minimum_interval_seconds=30,
        description=(f"Posts every failed run of this code location to {WEBHOOK_ENV} (JSON, "
                     "no secrets). Does nothing while the variable is unset."),
    )
    def taskrouter_run_failure_alert(context: dg.RunFailureSensorContext) -> dg.SkipReason | None:
        payload = failure_payload(context.instance, context.dagster_run,
                                  context.failure_event.message or "")
        if not post_alert(payload):
            return dg.SkipReason(f"{WEBHOOK_ENV} is not set: no alert sent")
        context.log.info(f"alert posted: {context.dagster_run.job_name} "
                         f"run {context.dagster_run.run_id} failed")
        return None

    @dg.sensor(
        name="taskrouter_staleness_alert",
        default_status=status,
        minimum_interval_seconds=60,
        description=(f"Posts to {WEBHOOK_ENV} when `reservations` has not been synced for "
                     f"{freshness_minutes:g} minutes (FRESHNESS_MAX_AGE_MINUTES), and again once "
                     "it is fresh. Does nothing while the variable is unset."),
    )
    def taskrouter_staleness_alert(context: dg.SensorEvaluationContext) -> dg.SkipReason:
        if not os.environ.get(WEBHOOK_ENV, "").strip():
            return dg.SkipReason(f"{WEBHOOK_ENV} is not set: no alert sent")
        event = context.instance.get_latest_materialization_event(RESERVATIONS)
        age = None if event is None else (time.time() - event.timestamp) / 60.0
        stale = age is None or age > freshness_minutes
        was = context.cursor or "fresh"
        if stale == (was == "stale"):
            return dg.SkipReason(f"reservations still {'stale' if stale else 'fresh'}")
        if stale:
            seen = "has never been synced" if age is None else f"was last synced {age:.0f} minutes ago"
            payload = {"kind": "stale", "text": f"[{SOURCE}] reservations {seen} (limit "
                       f"{freshness_minutes:g} minutes): is the sync schedule running?"}
        else:
            payload = {"kind": "fresh_again", "text": f"[{SOURCE}] reservations are fresh again "
                       f"(last synced {age:.0f} minutes ago)"}
        payload.update({"asset": "reservations", "max_age_minutes": freshness_minutes,
                        "age_minutes": None if age is None else round(age, 1)})
        post_alert(payload)
        context.update_cursor("stale" if stale else "fresh")
        return dg.SkipReason(f"alert posted: reservations {payload['kind']}")

    return [taskrouter_run_failure_alert, taskrouter_staleness_alert]
