"""The production instance (deploy/dagster.yaml) runs real jobs on PostgreSQL, not only loads.

dagster-postgres is in the dev extra, so `make test` (and CI) run this on a fresh PostgreSQL
database with an empty password and no ``DAGSTER_PG_PORT`` (the default 5432).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from tests.helpers import PROJECT_ROOT

pytest.importorskip("dagster_postgres", reason="dagster-postgres is in the dev extra")

from pipelines.instance import InstanceConfigError, postgres_url  # noqa: E402

PG_VARIABLES = ("DAGSTER_PG_HOST", "DAGSTER_PG_DB", "DAGSTER_PG_USERNAME", "DAGSTER_PG_PASSWORD",
                "DAGSTER_PG_PORT")


def test_the_url_comes_from_the_environment_with_a_default_port_and_psycopg2():
    env = {"DAGSTER_PG_HOST": "db.internal", "DAGSTER_PG_DB": "dagster",
           "DAGSTER_PG_USERNAME": "ops", "DAGSTER_PG_PASSWORD": "p@ss:w/rd"}
    url = sa.make_url(postgres_url(env))
    assert url.drivername == "postgresql+psycopg2"
    assert (url.host, url.port, url.database, url.username) == ("db.internal", 5432, "dagster", "ops")
    assert url.password == "p@ss:w/rd"  # percent-encoded in the URL, decoded by the driver
    assert sa.make_url(postgres_url({**env, "DAGSTER_PG_PORT": "6543"})).port == 6543
    assert sa.make_url(postgres_url({**env, "DAGSTER_PG_PASSWORD": ""})).password is None


def test_missing_variables_are_named_together_and_the_password_never_shown():
    with pytest.raises(InstanceConfigError) as raised:
        postgres_url({"DAGSTER_PG_HOST": "h", "DAGSTER_PG_PASSWORD": "hunter2-secret",
                      "DAGSTER_PG_PORT": "five"})
    message = str(raised.value)
    assert "DAGSTER_PG_DB is not set" in message and "DAGSTER_PG_USERNAME is not set" in message
    assert "DAGSTER_PG_PORT='five'" in message
    assert "hunter2-secret" not in message


def test_dagster_job_execute_succeeds_on_the_production_instance(
    emulator, sync_env, postgres_url, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """The issue's command, on deploy/dagster.yaml, against a fresh PostgreSQL database."""
    home = tmp_path / "prod_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((PROJECT_ROOT / "deploy" / "dagster.yaml").read_text())
    database = sa.make_url(postgres_url)
    env = {key: value for key, value in os.environ.items() if key not in PG_VARIABLES}
    env.update(sync_env)
    env.update({"DAGSTER_HOME": str(home), "DAGSTER_PG_HOST": database.host or "127.0.0.1",
                "DAGSTER_PG_DB": database.database or "", "DAGSTER_PG_USERNAME": database.username
                or "postgres", "DAGSTER_PG_PASSWORD": ""})
    if database.port and database.port != 5432:
        env["DAGSTER_PG_PORT"] = str(database.port)
    done = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "job", "execute",
         "-m", "pipelines.definitions", "-j", "taskrouter_sync"],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]

    # the run, its events and the assets' materializations are in PostgreSQL
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        [record] = instance.get_run_records(dg.RunsFilter(job_name="taskrouter_sync"))
        assert record.dagster_run.status == dg.DagsterRunStatus.SUCCESS
        event = instance.get_latest_materialization_event(dg.AssetKey("reservations"))
        assert event is not None and event.run_id == record.dagster_run.run_id
    engine = sa.create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            runs = conn.execute(sa.text("SELECT count(*) FROM runs")).scalar_one()
    finally:
        engine.dispose()
    assert runs == 1
