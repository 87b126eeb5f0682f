"""A real backfill, end to end: dagster-webserver + dagster-daemon on the project's instance
config, a 30-partition backfill launched through GraphQL exactly as the UI's "Launch backfill"
does, executed by the daemon as ONE run over the range.

Slow (the daemon's polling and a run process: about a minute), so opt-in:
``DAGSTER_DAEMON_TESTS=1 pytest tests/pipelines/test_dagster_daemon_backfill.py``. The same range-run
path is covered by the fast tests/pipelines/test_dagster_backfill.py in every run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import requests
import sqlalchemy as sa

from tests.helpers import (
    ANCHOR,
    PROJECT_ROOT,
    assert_summary_consistent,
    free_port,
    run_sync_job,
    stored_daily_counts,
)
from warehouse.engine import create_warehouse_engine

pytestmark = pytest.mark.skipif(
    os.environ.get("DAGSTER_DAEMON_TESTS", "") != "1",
    reason="slow daemon test; set DAGSTER_DAEMON_TESTS=1",
)
DEADLINE_S = 300.0
BIN = Path(sys.executable).parent


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Interrupt the process group we started; kill it if it does not stop in time."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGINT)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@pytest.fixture
def deployment(emulator, sync_env, tmp_path: Path, monkeypatch) -> Iterator[str]:
    monkeypatch.setenv("SUMMARY_START_DATE", (ANCHOR.date() - timedelta(days=60)).isoformat())
    home = Path(sync_env["DAGSTER_HOME"])
    (home / "dagster.yaml").write_text((PROJECT_ROOT / ".dagster_home" / "dagster.yaml").read_text())
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert run_sync_job(instance).success
    env = {**os.environ, "SUMMARY_START_DATE": os.environ["SUMMARY_START_DATE"]}
    port = free_port()
    commands = [
        [str(BIN / "dagster-webserver"), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        [str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"],
    ]
    processes = []
    try:
        for n, command in enumerate(commands):
            log = (tmp_path / f"process{n}.log").open("w")
            processes.append(subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=log,
                                              stderr=subprocess.STDOUT, start_new_session=True))
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + DEADLINE_S
        while True:
            try:
                if requests.get(f"{base}/server_info", timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            assert all(p.poll() is None for p in processes), "webserver or daemon exited"
            assert time.monotonic() < deadline, "webserver not ready in time"
            time.sleep(0.5)
        yield f"{base}/graphql"
    finally:
        for process in processes:
            _stop(process)


def gql(url: str, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    response = requests.post(url, json={"query": query, "variables": variables or {}}, timeout=60)
    response.raise_for_status()
    body = response.json()
    assert "errors" not in body, body["errors"]
    return body["data"]


LAUNCH = """
mutation Launch($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
  }
}"""
STATUS = """
query Status($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    ... on PartitionBackfill { status numPartitions }
  }
}"""
RUNS = """
query Runs($tags: [ExecutionTag!]) {
  runsOrError(filter: {tags: $tags}) {
    ... on Runs { results { runId status tags { key value } } }
  }
}"""


def test_ui_backfill_of_thirty_days_runs_once_through_the_daemon(deployment, sync_env):
    first = ANCHOR.date() - timedelta(days=29)
    partitions = [(first + timedelta(days=n)).isoformat() for n in range(30)]
    engine = create_warehouse_engine(sync_env["WAREHOUSE_URL"])
    with engine.begin() as conn:  # damage that only the backfill can repair
        conn.execute(sa.text("DELETE FROM reservation_daily_status_counts WHERE day >= :d"),
                     {"d": first + timedelta(days=3)})
    engine.dispose()
    launched = gql(deployment, LAUNCH, {"params": {
        "assetSelection": [{"path": ["reservation_daily_status_counts"]}],
        "partitionNames": partitions,
    }})["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    backfill_id = launched["backfillId"]
    deadline = time.monotonic() + DEADLINE_S
    while True:
        status = gql(deployment, STATUS, {"id": backfill_id})["partitionBackfillOrError"]
        if status["status"] not in ("REQUESTED", "CANCELING"):
            break
        assert time.monotonic() < deadline, f"backfill still {status}"
        time.sleep(1)
    assert status == {"status": "COMPLETED_SUCCESS", "numPartitions": 30}
    runs = gql(deployment, RUNS, {"tags": [{"key": "dagster/backfill", "value": backfill_id}]})
    [run] = runs["runsOrError"]["results"]
    tags = {t["key"]: t["value"] for t in run["tags"]}
    assert run["status"] == "SUCCESS"
    assert tags["dagster/asset_partition_range_start"] == partitions[0]
    assert tags["dagster/asset_partition_range_end"] == partitions[-1]
    assert_summary_consistent(sync_env["WAREHOUSE_URL"])
    # each day's newest materialization carries that day's own figures, not the range's
    rows_per_day = stored_daily_counts(sync_env["WAREHOUSE_URL"]).groupby("day").size()
    with dg.DagsterInstance.from_config(sync_env["DAGSTER_HOME"]) as instance:
        for day in partitions:
            [record] = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey("reservation_daily_status_counts"),
                                      asset_partitions=[day]), limit=1, ascending=False).records
            meta = record.asset_materialization.metadata
            expected = int(rows_per_day.get(date.fromisoformat(day), 0))
            assert meta["dagster/row_count"].value == expected, day
            assert meta["refreshed_by"].value.startswith("backfill")
