"""Smoke test: the real ``dagster-webserver`` loads workspace.yaml, and its GraphQL API shows the
assets (with their latest metadata), checks (with their last evaluation), jobs and schedules.

Set ``SMOKE_GRAPHQL_OUT=/path.json`` to keep the GraphQL response for a report.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import requests

from pipelines.cli import stop_process
from tests.helpers import PROJECT_ROOT, free_port, run_sync_job

READY_TIMEOUT_S = 180.0

QUERY = """
query Smoke {
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError {
          __typename
          ... on PythonError { message }
          ... on RepositoryLocation {
            repositories {
              name
              jobs { name }
              schedules { name cronSchedule executionTimezone scheduleState { status } }
              assetNodes {
                assetKey { path }
                groupName
                kinds
                description
                isPartitioned
                backfillPolicy { policyType }
                assetMaterializations(limit: 1) {
                  partition
                  metadataEntries {
                    label
                    __typename
                    ... on IntMetadataEntry { intValue }
                    ... on FloatMetadataEntry { floatValue }
                    ... on TextMetadataEntry { text }
                    ... on MarkdownMetadataEntry { mdStr }
                    ... on TableSchemaMetadataEntry { schema { columns { name type } } }
                  }
                }
                assetChecksOrError {
                  __typename
                  ... on AssetChecks {
                    checks {
                      name
                      blocking
                      description
                      jobNames
                      executionForLatestMaterialization {
                        status
                        evaluation {
                          severity
                          success
                          metadataEntries {
                            label
                            ... on IntMetadataEntry { intValue }
                            ... on JsonMetadataEntry { jsonString }
                            ... on TextMetadataEntry { text }
                          }
                        }
                      }
                    }
                  }
                }
              }
            }
          }
        }
      }
    }
  }
}
"""


@pytest.fixture
def webserver(emulator, sync_env, tmp_path: Path) -> Iterator[str]:
    """A synced warehouse, then dagster-webserver on that instance; yields its GraphQL URL."""
    home = Path(sync_env["DAGSTER_HOME"])
    (home / "dagster.yaml").write_text((PROJECT_ROOT / ".dagster_home" / "dagster.yaml").read_text())
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert run_sync_job(instance).success  # so the UI has materializations and checks to show
    port = free_port()
    log = (tmp_path / "webserver.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "dagster_webserver", "-w", str(PROJECT_ROOT / "workspace.yaml"),
         "-h", "127.0.0.1", "-p", str(port)],
        cwd=PROJECT_ROOT, env={**os.environ, **sync_env}, stdout=log, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"dagster-webserver exited with {process.returncode}: "
                            + (tmp_path / "webserver.log").read_text()[-3000:])
            try:
                if requests.get(f"{base}/server_info", timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                pytest.fail("dagster-webserver not ready in time: "
                            + (tmp_path / "webserver.log").read_text()[-3000:])
            time.sleep(0.5)
        yield f"{base}/graphql"
    finally:
        stop_process(process, grace=20)
        log.close()


def graphql(url: str) -> dict[str, Any]:
    """The workspace query; retried while the code location is still loading."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        response = requests.post(url, json={"query": QUERY}, timeout=60)
        response.raise_for_status()
        body = response.json()
        assert "errors" not in body, body.get("errors")
        entries = body["data"]["workspaceOrError"]["locationEntries"]
        if entries and all(e["loadStatus"] == "LOADED" for e in entries):
            return body
        if time.monotonic() > deadline:
            pytest.fail(f"code location never loaded: {json.dumps(body)[:2000]}")
        time.sleep(0.5)


def test_webserver_shows_assets_checks_jobs_schedules_and_metadata(webserver, sync_env):
    body = graphql(webserver)
    out = os.environ.get("SMOKE_GRAPHQL_OUT")
    if out:
        Path(out).write_text(json.dumps(body, indent=1))
    text = json.dumps(body)
    for secret in (sync_env["TWILIO_AUTH_TOKEN"],):
        assert secret not in text
    [entry] = body["data"]["workspaceOrError"]["locationEntries"]
    location = entry["locationOrLoadError"]
    assert location["__typename"] == "RepositoryLocation", location
    [repo] = location["repositories"]
    assert {"taskrouter_sync", "taskrouter_daily_checks"} <= {j["name"] for j in repo["jobs"]}
    schedules = {s["name"]: s for s in repo["schedules"]}
    assert schedules["taskrouter_sync_schedule"]["cronSchedule"] == "*/5 * * * *"
    assert schedules["taskrouter_sync_schedule"]["scheduleState"]["status"] == "STOPPED"
    assert "taskrouter_daily_checks_schedule" in schedules

    nodes = {"/".join(n["assetKey"]["path"]): n for n in repo["assetNodes"]}
    assert {"workers", "reservations", "reservation_daily_status_counts"} <= set(nodes)
    summary = nodes["reservation_daily_status_counts"]
    assert summary["isPartitioned"] and summary["backfillPolicy"]["policyType"] == "SINGLE_RUN"
    for node in nodes.values():
        assert node["groupName"] == "taskrouter" and node["kinds"] and node["description"]

    latest = nodes["reservations"]["assetMaterializations"][0]
    entries = {e["label"]: e for e in latest["metadataEntries"]}
    assert entries["inserted"]["intValue"] == 480
    assert entries["dagster/row_count"]["intValue"] == 480
    assert entries["seconds"]["__typename"] == "FloatMetadataEntry"
    assert "sid" in {c["name"] for c in entries["dagster/column_schema"]["schema"]["columns"]}
    summary_latest = summary["assetMaterializations"][0]
    assert summary_latest["partition"]
    assert any(e["label"] == "counts_by_status" and e["mdStr"].startswith("| status")
               for e in summary_latest["metadataEntries"])

    checks = {(key, c["name"]): c for key, n in nodes.items()
              for c in n["assetChecksOrError"]["checks"]}
    # 7 whole-table and 7 run-scoped (*_this_run) table checks, freshness; the events gaps
    # (whole and this run) and the reconciliation with TaskRouter's statistics
    assert len(checks) == 18
    assert checks[("reservations", "sids_unique")]["blocking"] is True
    assert checks[("reservations", "sids_unique_this_run")]["blocking"] is True
    assert checks[("reservations", "statuses_known")]["blocking"] is False
    assert "taskrouter_daily_checks" in checks[("reservations", "last_sync_is_recent")]["jobNames"]
    for (_asset, name), check in checks.items():  # a sync never runs (or overwrites) a whole-table check
        assert ("taskrouter_sync" in check["jobNames"]) == name.endswith("_this_run"), name
    executed = checks[("reservations", "statuses_known_this_run")]["executionForLatestMaterialization"]
    assert executed["status"] == "SUCCEEDED"
    assert executed["evaluation"]["severity"] == "WARN" and executed["evaluation"]["success"]
