"""``make sync``'s command against each database: the warehouse equals the emulator's truth,
after a full sync and again after an incremental one.

The sync runs as its own process (``python -m pipelines.cli sync``, what ``make sync`` runs),
with a fresh ``DAGSTER_HOME`` per database, against the in-process emulator over loopback HTTP.
The three databases sync at the same time (the processes mostly wait on Dagster's start-up), so
the test costs about one sync instead of three. Summaries use ``America/New_York`` across its
November DST change.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import PROJECT_ROOT, assert_matches_truth, assert_summary_consistent

ZONE = "America/New_York"
DATABASES = {"sqlite": "sqlite_url", "postgresql": "postgres_url", "mariadb": "mariadb_url"}


def available_databases(request: pytest.FixtureRequest) -> dict[str, str]:
    """The scratch database of each kind; an unreachable server skips only its own kind
    (REQUIRE_SERVICES=1 makes the fixture fail the test instead)."""
    urls, skipped = {}, []
    for kind, fixture in DATABASES.items():
        try:
            urls[kind] = request.getfixturevalue(fixture)
        except pytest.skip.Exception as reason:
            skipped.append(f"{kind}: {reason}")
    if skipped:
        print("databases skipped:", "; ".join(skipped))
    return urls


def run_cli_syncs(envs: dict[str, dict[str, str]]) -> dict[str, tuple[int, str, str]]:
    """``python -m pipelines.cli sync`` once per database, all at the same time."""
    procs = {kind: subprocess.Popen([sys.executable, "-m", "pipelines.cli", "sync"],
                                    cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
             for kind, env in envs.items()}
    results = {}
    for kind, proc in procs.items():
        try:
            out, err = proc.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        results[kind] = (proc.returncode, out, err)
    return results


def test_cli_sync_equals_truth_full_then_incremental(request, emulator, tmp_path: Path):
    urls = available_databases(request)
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("TWILIO_", "TASKROUTER_", "WAREHOUSE_", "SYNC_", "SUMMARY_",
                                 "REPORTING_"))}
    envs = {}
    for kind, url in urls.items():
        home = tmp_path / f"dagster_home_{kind}"
        home.mkdir()
        envs[kind] = base | emulator.env() | {
            "WAREHOUSE_URL": url, "DAGSTER_HOME": str(home), "REPORTING_TIMEZONE": ZONE,
            "PYTHONWARNINGS": "ignore"}

    first = run_cli_syncs(envs)
    truth = emulator.world.truth()
    for kind, (code, out, err) in first.items():
        assert code == 0, f"{kind}: {err[-3000:]}"
        assert f"{len(truth):,} inserted" in out, f"{kind}: {out}"
        assert_matches_truth(urls[kind], truth)
        assert_summary_consistent(urls[kind], ZONE)

    before = {r["sid"] for r in truth}
    figures = emulator.world.advance(60)
    assert figures["changed"] and figures["created"] and figures["deleted"]
    second = run_cli_syncs(envs)
    truth = emulator.world.truth()
    for kind, (code, _out, err) in second.items():
        assert code == 0, f"{kind}: {err[-3000:]}"
        stored = assert_matches_truth(urls[kind], truth, allow_extra=True)
        # rows TaskRouter deleted stay, those created and deleted between the syncs arrive from
        # its events; nothing else is extra
        ever = {r["sid"] for r in emulator.world.ever()}
        assert before | {r["sid"] for r in truth} <= set(stored.index) == ever, kind
        assert_summary_consistent(urls[kind], ZONE)
    for _code, out, err in [*first.values(), *second.values()]:
        assert emulator.world.auth_token not in out + err
