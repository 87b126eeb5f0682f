"""A sync process SIGKILLed in the middle of its load, then run again, converges to the truth.

Both sides are real processes: the emulator (``python -m pipelines.taskrouter.emulator``) and a
sync running ``pipelines.loading`` (the functions the Dagster assets call; a plain process starts
in a second where a Dagster run needs ten). The sync commits small batches and is killed once
some are committed; the rerun, through the Dagster job, must load exactly the truth with no
duplicates and a summary equal to its GROUP BY.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa

from tests.helpers import (
    ANCHOR,
    PROJECT_ROOT,
    assert_matches_truth,
    assert_summary_consistent,
    run_sync_job,
)
from warehouse.engine import create_warehouse_engine

SYNC_SCRIPT = """
import os
from pipelines.loading import list_workers_by_workspace, load_reservations, load_workers
from pipelines.loading import resolve_workspaces
from pipelines.taskrouter import ClientOptions, TaskRouterClient, credentials_from_env
from warehouse.engine import create_warehouse_engine
from warehouse.migrate import ensure_schema

engine = create_warehouse_engine(os.environ["WAREHOUSE_URL"])
ensure_schema(engine)
with TaskRouterClient(credentials_from_env(), os.environ["TASKROUTER_BASE_URL"],
                      ClientOptions(page_size=10, concurrency=1)) as client:
    workspaces = resolve_workspaces(client, None)
    load_workers(client, engine, workspaces)
    load_reservations(client, engine, list_workers_by_workspace(client, workspaces),
                      batch_rows=30)
"""


@pytest.fixture
def emulator_process() -> Iterator[dict[str, Any]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "pipelines.taskrouter.emulator", "--seed", "11", "--workspaces", "2",
         "--workers", "20", "--reservations", "30", "--latency-ms", "30",
         "--anchor", ANCHOR.isoformat()],
        stdout=subprocess.PIPE, text=True, cwd=PROJECT_ROOT,
    )
    try:
        assert process.stdout is not None
        yield json.loads(process.stdout.readline())
    finally:
        process.terminate()
        process.wait(timeout=10)


def _count(engine: sa.Engine) -> tuple[int, int]:
    try:
        with engine.connect() as conn:
            row = conn.exec_driver_sql(
                "SELECT COUNT(*), COUNT(DISTINCT sid) FROM reservations"
            ).one()
            return int(row[0]), int(row[1])
    except sa.exc.DBAPIError:
        return 0, 0  # the schema is not there yet


@pytest.mark.parametrize("database", ["sqlite_url", "postgres_url"])
def test_sigkill_mid_load_then_rerun_converges_to_the_truth(
    database, request, emulator_process, tmp_path: Path, monkeypatch
):
    url = request.getfixturevalue(database)
    emu = emulator_process
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "TASKROUTER_"))},
        "TASKROUTER_BASE_URL": emu["base_url"],
        "TWILIO_ACCOUNT_SID": emu["account_sid"],
        "TWILIO_AUTH_TOKEN": emu["auth_token"],
        "WAREHOUSE_URL": url,
        "DAGSTER_HOME": str(tmp_path / "dh"),
    }
    (tmp_path / "dh").mkdir()
    truth = requests.get(f"{emu['base_url']}/_emulator/truth",
                         auth=(emu["account_sid"], emu["auth_token"]), timeout=30).json()
    total = len(truth["reservations"])
    assert total == 1200

    engine = create_warehouse_engine(url)
    # one worker (30 rows, 3 pages of 30 ms) per committed batch
    sync = subprocess.Popen([sys.executable, "-c", SYNC_SCRIPT], env=env,
                            cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while _count(engine)[0] < 90 and sync.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert sync.poll() is None, "the sync ended before it could be killed"
        os.kill(sync.pid, signal.SIGKILL)
        sync.wait(timeout=30)
    finally:
        if sync.poll() is None:
            sync.kill()
            sync.wait()
    assert sync.returncode == -signal.SIGKILL
    loaded, distinct = _count(engine)
    assert 90 <= loaded < total and loaded == distinct, "killed part-way, nothing duplicated"

    for name, value in env.items():
        if name.startswith(("TWILIO_", "TASKROUTER_", "WAREHOUSE_", "DAGSTER_HOME")):
            monkeypatch.setenv(name, value)
    result = run_sync_job()
    assert result.success
    assert _count(engine) == (total, total)
    engine.dispose()
    assert_matches_truth(url, truth["reservations"])
    assert_summary_consistent(url)
