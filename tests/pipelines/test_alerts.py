"""Alert sensors post to a webhook (a real HTTP server on 127.0.0.1) when one is configured:
failed runs and a stale ``reservations``; never a secret in the body."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import dagster as dg
import pytest

from pipelines.sensors import WEBHOOK_ENV, AlertNotDelivered
from pipelines.taskrouter.emulator import Emulator, Faults
from tests.helpers import run_sync_job, small_world

HOOK_TOKEN = "T0000-B1111-hook-token-ZZZZ"


class Webhook:
    """Collects the JSON bodies POSTed to it; answers ``status``."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.status = 200
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                hook.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
                self.send_response(hook.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/{HOOK_TOKEN}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def payloads(self) -> list[dict[str, Any]]:
        return [json.loads(body) for body in self.bodies]


@pytest.fixture
def webhook(monkeypatch: pytest.MonkeyPatch) -> Iterator[Webhook]:
    hook = Webhook()
    monkeypatch.setenv(WEBHOOK_ENV, hook.url)
    yield hook
    hook.server.shutdown()
    hook.server.server_close()


def sensor(name: str) -> dg.SensorDefinition:
    from pipelines.definitions import build_definitions

    return build_definitions().resolve_sensor_def(name)


def test_sensors_run_by_default_only_when_a_webhook_is_set(sync_env, monkeypatch):
    monkeypatch.delenv(WEBHOOK_ENV, raising=False)
    assert sensor("taskrouter_run_failure_alert").default_status == dg.DefaultSensorStatus.STOPPED
    monkeypatch.setenv(WEBHOOK_ENV, "https://hooks.example.com/x")
    for name in ("taskrouter_run_failure_alert", "taskrouter_staleness_alert"):
        assert sensor(name).default_status == dg.DefaultSensorStatus.RUNNING
    monkeypatch.setenv(WEBHOOK_ENV, "hooks.example.com/secret-path")
    from pipelines.definitions import build_definitions
    from pipelines.settings import SettingsError

    with pytest.raises(SettingsError) as raised:
        build_definitions()
    assert WEBHOOK_ENV in str(raised.value) and "secret-path" not in str(raised.value)


def test_a_failed_sync_is_posted_without_secrets(webhook, monkeypatch, tmp_path):
    token = "very-secret-auth-token-123"
    with Emulator(small_world(), Faults()) as emu:  # refuses the wrong token: 401
        env = {**emu.env(), "TWILIO_AUTH_TOKEN": token,
               "WAREHOUSE_URL": f"sqlite:///{tmp_path / 'w.db'}"}
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        with dg.instance_for_test() as instance:
            failed = run_sync_job(instance, raise_on_error=False)
            assert not failed.success
            context = dg.build_run_status_sensor_context(
                sensor_name="taskrouter_run_failure_alert", dagster_instance=instance,
                dagster_run=failed.dagster_run, dagster_event=failed.get_run_failure_event(),
            ).for_run_failure()
            assert sensor("taskrouter_run_failure_alert")(context) is None
    [body] = webhook.bodies
    [payload] = webhook.payloads()
    assert payload["kind"] == "run_failure" and payload["job"] == "taskrouter_sync"
    assert payload["run_id"] == failed.run_id and payload["source"] == "taskrouter-warehouse"
    assert payload["failed_steps"] and failed.run_id in payload["text"]
    assert "HTTP 401" in payload["text"] and payload["errors"]
    assert token.encode() not in body and HOOK_TOKEN.encode() not in body


def test_staleness_is_posted_once_and_recovery_once(webhook, emulator, sync_env, monkeypatch):
    with dg.instance_for_test() as instance:
        assert run_sync_job(instance).success

        def evaluate(cursor: str | None) -> tuple[dg.SkipReason, str | None]:
            context = dg.build_sensor_context(instance=instance, cursor=cursor)
            result = sensor("taskrouter_staleness_alert")(context)
            return result, context.cursor

        monkeypatch.setenv("FRESHNESS_MAX_AGE_MINUTES", "600")
        skipped, cursor = evaluate(None)
        assert webhook.bodies == [] and "fresh" in (skipped.skip_message or "")

        monkeypatch.setenv("FRESHNESS_MAX_AGE_MINUTES", "0.0001")  # 6 ms: stale by now
        time.sleep(0.05)
        _, cursor = evaluate(cursor)
        _, cursor = evaluate(cursor)  # still stale: no second post
        [stale] = webhook.payloads()
        assert stale["kind"] == "stale" and stale["asset"] == "reservations"
        assert stale["age_minutes"] is not None and "schedule" in stale["text"]

        monkeypatch.setenv("FRESHNESS_MAX_AGE_MINUTES", "600")
        _, cursor = evaluate(cursor)
        assert [p["kind"] for p in webhook.payloads()] == ["stale", "fresh_again"]
        assert HOOK_TOKEN not in json.dumps(webhook.payloads())


def test_no_webhook_no_post_and_a_refusing_webhook_fails_the_tick(webhook, emulator, sync_env,
                                                                    monkeypatch):
    monkeypatch.setenv("FRESHNESS_MAX_AGE_MINUTES", "0.0001")
    with dg.instance_for_test() as instance:
        webhook.status = 500
        with pytest.raises(AlertNotDelivered, match="HTTP 500"):
            sensor("taskrouter_staleness_alert")(dg.build_sensor_context(instance=instance))
        monkeypatch.delenv(WEBHOOK_ENV)
        skipped = sensor("taskrouter_staleness_alert")(dg.build_sensor_context(instance=instance))
        assert "not set" in (skipped.skip_message or "")
    assert len(webhook.bodies) == 1  # only the refused one
