"""``make sync``'s command against each database: the warehouse equals the emulator's truth,
after a full sync and again after an incremental one.

The sync runs as its own process (``python -m pipelines.cli sync``, what ``make sync`` runs),
with a fresh ``DAGSTER_HOME``, against the in-process emulator over loopback HTTP. Summaries use
``America/New_York`` across its November DST change.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import PROJECT_ROOT
from tests.helpers import assert_matches_truth, assert_summary_consistent

ZONE = "America/New_York"


def run_cli_sync(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipelines.cli", "sync"], cwd=PROJECT_ROOT,
                          env=env, capture_output=True, text=True, timeout=300)


def test_cli_sync_equals_truth_full_then_incremental(warehouse_url, emulator, tmp_path: Path):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TWILIO_", "TASKROUTER_", "WAREHOUSE_", "SYNC_", "SUMMARY_",
                                "REPORTING_"))}
    home = tmp_path / "dagster_home"
    home.mkdir()
    env |= emulator.env() | {"WAREHOUSE_URL": warehouse_url, "DAGSTER_HOME": str(home),
                             "REPORTING_TIMEZONE": ZONE, "PYTHONWARNINGS": "ignore"}

    first = run_cli_sync(env)
    assert first.returncode == 0, first.stderr[-3000:]
    truth = emulator.world.truth()
    assert_matches_truth(warehouse_url, truth)
    assert_summary_consistent(warehouse_url, ZONE)
    assert f"{len(truth):,} inserted" in first.stdout, first.stdout

    before = {r["sid"] for r in truth}
    figures = emulator.world.advance(60)
    assert figures["changed"] and figures["created"] and figures["deleted"]
    second = run_cli_sync(env)
    assert second.returncode == 0, second.stderr[-3000:]
    truth = emulator.world.truth()
    stored = assert_matches_truth(warehouse_url, truth, allow_extra=True)
    # rows TaskRouter deleted stay; nothing else is extra
    assert set(stored.index) == before | {r["sid"] for r in truth}
    assert_summary_consistent(warehouse_url, ZONE)
    for out in (first.stdout + first.stderr, second.stdout + second.stderr):
        assert emulator.world.auth_token not in out
