"""`make sync` uses the DAGSTER_HOME the user set (cron reaching the production instance), and
the project-local one only when none is set."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import dagster as dg
import pytest

from tests.helpers import PROJECT_ROOT


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_sync_respects_an_existing_dagster_home(emulator, sync_env, tmp_path: Path):
    home = tmp_path / "operators_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((PROJECT_ROOT / ".dagster_home" / "dagster.yaml").read_text())
    env = {**os.environ, **sync_env, "DAGSTER_HOME": str(home)}
    env.pop("MAKEFLAGS", None)  # when `make test` runs this, its flags are not ours
    done = subprocess.run(["make", "-s", "sync"], cwd=PROJECT_ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Sync finished" in done.stdout
    with dg.DagsterInstance.from_config(str(home)) as instance:
        [record] = instance.get_run_records(dg.RunsFilter(job_name="taskrouter_sync"))
        assert record.dagster_run.status == dg.DagsterRunStatus.SUCCESS
