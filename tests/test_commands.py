"""The README's commands, run the way a user runs them: `dagster definitions validate`, `make sync`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import PROJECT_ROOT
from tests.helpers import assert_matches_truth, assert_summary_consistent

VENV = Path(sys.prefix)


def _clean_env(extra: dict[str, str], home: Path) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items()
            if not k.startswith(("TWILIO_", "TASKROUTER_", "WAREHOUSE_", "REPORTING_", "DAGSTER_"))}
    return {**keep, **extra, "DAGSTER_HOME": str(home)}


def _fresh_copy(tmp_path: Path) -> Path:
    """The project's files as a fresh clone would have them (tracked + new, nothing ignored)."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=PROJECT_ROOT, check=True,
        capture_output=True, text=True,
    ).stdout.split()
    target = tmp_path / "clone"
    for name in files:
        source = PROJECT_ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def test_workspace_yaml_loads_with_dagster_cli(emulator, tmp_path):
    env = _clean_env({**emulator.env(), "WAREHOUSE_URL": f"sqlite:///{tmp_path / 'w.db'}"}, tmp_path)
    done = subprocess.run(
        [str(VENV / "bin" / "dagster"), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Validation successful" in done.stdout + done.stderr


def _make_sync(clone: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # reuse this venv instead of installing a new one: the clone's own code is what runs
    stamp = VENV / ".installed"
    return subprocess.run(
        ["make", "--no-print-directory", f"VENV={VENV}", "-o", str(stamp), "sync"],
        cwd=clone, env=env, capture_output=True, text=True, timeout=300,
    )


def test_make_sync_on_a_fresh_clone_with_only_environment_variables(emulator, tmp_path):
    clone = _fresh_copy(tmp_path)
    home = clone / ".dagster_home"
    env = _clean_env(emulator.env(), home)
    env.pop("DAGSTER_HOME")  # the Makefile sets the project-local one
    first = _make_sync(clone, env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "inserted" in first.stdout
    warehouse = clone / "data" / "warehouse.db"  # the default WAREHOUSE_URL, under the clone's root
    assert warehouse.exists()
    url = f"sqlite:///{warehouse}"
    assert_matches_truth(url, emulator.world.truth())
    assert_summary_consistent(url)
    assert (clone / ".dagster_home" / "dagster.yaml").exists()

    emulator.world.advance(60)  # the hourly list sweep is due (url and links come from lists)
    second = _make_sync(clone, env)
    assert second.returncode == 0, second.stdout + second.stderr
    assert_matches_truth(url, emulator.world.truth(), allow_extra=True)
    assert_summary_consistent(url)


def test_make_sync_exits_nonzero_with_a_clear_message_on_bad_credentials(emulator, tmp_path):
    clone = _fresh_copy(tmp_path)
    secret = "definitely-wrong-token-5521"
    env = _clean_env({**emulator.env(), "TWILIO_AUTH_TOKEN": secret}, clone / ".dagster_home")
    env.pop("DAGSTER_HOME")
    done = _make_sync(clone, env)
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert "refused the credentials" in output and "TWILIO_AUTH_TOKEN" in output
    assert secret not in output


@pytest.mark.parametrize("missing", ["TWILIO_AUTH_TOKEN"])
def test_make_sync_without_credentials_names_the_variables(emulator, tmp_path, missing):
    clone = _fresh_copy(tmp_path)
    env = _clean_env(emulator.env(), clone / ".dagster_home")
    env.pop("DAGSTER_HOME")
    env.pop(missing)
    done = _make_sync(clone, env)
    assert done.returncode != 0
    assert "TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN" in done.stdout + done.stderr
    engine = sa.create_engine(f"sqlite:///{clone / 'data' / 'warehouse.db'}")
    if (clone / "data" / "warehouse.db").exists():
        with engine.connect() as conn:
            tables = set(sa.inspect(conn).get_table_names())
            if "reservations" in tables:
                assert conn.execute(sa.text("SELECT COUNT(*) FROM reservations")).scalar() == 0
    engine.dispose()


def test_a_partly_failed_sync_prints_what_it_did_load(emulator, sync_env, monkeypatch, capsys):
    """`make sync` with workers that keep failing exits non-zero, and its figures show the rows
    that were loaded (carried by the failure of the run's last step, since nothing is materialized)."""
    from pipelines.cli import _print_figures, run_sync_job
    from pipelines.taskrouter.emulator import Faults

    workspace = next(iter(emulator.world.workers))
    failing = tuple(w.sid for w in emulator.world.live_workers(workspace)[:2])
    emulator.server.set_faults(Faults(failing_workers=failing))
    monkeypatch.setenv("TASKROUTER_MAX_ATTEMPTS", "1")
    import pipelines.definitions

    # the module's definitions were built from whatever environment first imported them
    monkeypatch.setattr(pipelines.definitions, "defs", pipelines.definitions.build_definitions())
    success, metadata, errors = run_sync_job()
    assert not success and any("could not be read" in e for e in errors)
    _print_figures(metadata)
    printed = capsys.readouterr().out
    with sa.create_engine(sync_env["WAREHOUSE_URL"]).connect() as conn:
        stored = conn.execute(sa.text("SELECT COUNT(*) FROM reservations")).scalar_one()
    assert stored > 0
    assert f"table holds {stored:,}" in printed and " 0 read" not in printed
