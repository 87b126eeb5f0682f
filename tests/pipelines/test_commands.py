"""The README's commands, run the way a user runs them: `dagster definitions validate`,
`make sync`, `make demo`, `make migrate`, `make dev`; a failure fits on one screen."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.helpers import PROJECT_ROOT, assert_matches_truth, assert_summary_consistent

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


def _make(clone: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    # reuse this venv instead of installing a new one: the clone's own code is what runs
    stamp = VENV / ".installed"
    return subprocess.run(
        ["make", "--no-print-directory", f"VENV={VENV}", "-o", str(stamp), *args],
        cwd=clone, env=env, capture_output=True, text=True, timeout=300,
    )


def _make_sync(clone: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return _make(clone, env, "sync")


def _screen(done: subprocess.CompletedProcess[str]) -> tuple[str, list[str]]:
    """Everything the terminal showed, and its non-empty lines."""
    output = done.stdout + done.stderr
    return output, [line for line in output.splitlines() if line.strip()]


def _log_of(output: str, clone: Path) -> str:
    """The log file a failure names (relative to the clone, where make ran)."""
    found = re.search(r"Full log: (\S+)", output)
    assert found, output
    path = Path(found.group(1))
    return (path if path.is_absolute() else clone / path).read_text(encoding="utf-8")


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


def test_make_sync_with_a_wrong_token_fails_on_one_screen(emulator, tmp_path):
    """What failed, the cause, the fix naming the credential variables, and the log with the
    full trace: at most 15 non-empty lines in all (make's own included), no secret, no figures."""
    clone = _fresh_copy(tmp_path)
    secret = "definitely-wrong-token-5521"
    env = _clean_env({**emulator.env(), "TWILIO_AUTH_TOKEN": secret}, clone / ".dagster_home")
    env.pop("DAGSTER_HOME")
    done = _make_sync(clone, env)
    assert done.returncode != 0
    output, lines = _screen(done)
    assert len(lines) <= 15, output
    assert "Sync FAILED" in output and "refused the credentials" in output
    for variable in ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_API_KEY_SID",
                     "TWILIO_API_KEY_SECRET", "TASKROUTER_BASE_URL"):
        assert variable in output, variable
    assert secret not in output
    assert "Sync figures" not in output and "table holds" not in output  # nothing was loaded
    assert "\x1b[" not in output  # no colour codes off a terminal
    log = _log_of(output, clone)
    assert "TaskRouterAuthError" in log and "Stack Trace" in log and secret not in log


def test_make_demo_with_a_bad_setting_fails_on_one_screen(tmp_path):
    clone = _fresh_copy(tmp_path)
    env = _clean_env({"TASKROUTER_PAGE_SIZE": "5000"}, clone / ".dagster_home")
    env.pop("DAGSTER_HOME")
    done = _make(clone, env, "demo")
    assert done.returncode != 0
    output, lines = _screen(done)
    assert len(lines) <= 12, output
    assert "Demo sync FAILED" in output and "TASKROUTER_PAGE_SIZE='5000'" in output
    assert "1 to 1000" in output and "Full log:" in output and "Traceback" not in output
    assert "SettingsError" in _log_of(output, clone)
    assert not (clone / "data" / "demo-state.json").exists()  # a failed demo advances nothing


def test_make_migrate_against_an_unreachable_server_fails_on_one_screen(tmp_path):
    clone = _fresh_copy(tmp_path)
    password = "Unreachable-Secret-77"
    env = _clean_env({"WAREHOUSE_URL": f"postgresql://someone:{password}@127.0.0.1:1/nowhere"},
                     clone / ".dagster_home")
    done = _make(clone, env, "migrate")
    assert done.returncode != 0
    output, lines = _screen(done)
    assert len(lines) <= 12, output
    assert "Migration FAILED" in output and "WAREHOUSE_URL" in output and "127.0.0.1:1" in output
    assert password not in output and "***" in output
    assert password not in _log_of(output, clone)


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
    from pipelines.cli import run_sync_job
    from pipelines.job_runner import print_figures
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
    print_figures(metadata)
    printed = capsys.readouterr().out
    with sa.create_engine(sync_env["WAREHOUSE_URL"]).connect() as conn:
        stored = conn.execute(sa.text("SELECT COUNT(*) FROM reservations")).scalar_one()
    assert stored > 0
    assert f"table holds {stored:,}" in printed and " 0 read" not in printed


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _listing(base_url: str, world: dict[str, str]) -> set[tuple[str, str, str]]:
    """Every reservation the emulator serves, read through TaskRouter's own URLs (the same
    seed gives the same credentials)."""
    import requests

    session = requests.Session()
    session.auth = (world["account_sid"], world["auth_token"])

    def pages(url: str, key: str) -> list[dict[str, str]]:
        items: list[dict[str, str]] = []
        while url:
            body = session.get(url, timeout=60).json()
            items += body[key]
            url = body["meta"]["next_page_url"]
        return items

    found = set()
    for ws in pages(f"{base_url}/v1/Workspaces?PageSize=1000", "workspaces"):
        for wk in pages(f"{base_url}/v1/Workspaces/{ws['sid']}/Workers?PageSize=1000", "workers"):
            url = f"{base_url}/v1/Workspaces/{ws['sid']}/Workers/{wk['sid']}/Reservations?PageSize=1000"
            found |= {(r["sid"], r["reservation_status"], r["date_updated"])
                      for r in pages(url, "reservations")}
    return found


def test_make_dev_serves_the_demos_world_at_the_demos_clock(tmp_path):
    """`make dev` without credentials starts the emulator where the last `make demo` left it
    (anchor, minutes advanced, size from data/demo-state.json): the same reservations, so a
    sync from the UI and the next demo agree."""
    from pipelines.cli import emulator_args, running_emulator

    clone = _fresh_copy(tmp_path)
    state = {"anchor": "2026-11-03T12:00:00+00:00", "minutes": 45, "runs": 4,
             "workers": 3, "reservations": 6}
    (clone / "data").mkdir(parents=True, exist_ok=True)
    (clone / "data" / "demo-state.json").write_text(json.dumps(state))
    with running_emulator(emulator_args(state)) as demo_world:  # what the last demo served
        world = dict(demo_world)
        expected = _listing(demo_world["base_url"], world)
        at_anchor = running_emulator(emulator_args({**state, "minutes": 0}))
        with at_anchor as first_world:
            assert _listing(first_world["base_url"], world) != expected  # the clock matters

    env = _clean_env({}, clone / ".dagster_home")
    dev = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "dev", "--port", str(_free_port())],
                           cwd=clone, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, start_new_session=True)
    lines: list[str] = []
    found = threading.Event()

    def read() -> None:
        assert dev.stdout is not None
        for line in dev.stdout:
            lines.append(line)
            if "local emulator at" in line:
                found.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert found.wait(timeout=240), "".join(lines)
        base_url = re.search(r"local emulator at (http://\S+?),", "".join(lines)).group(1)  # type: ignore[union-attr]
        assert _listing(base_url, world) == expected
        assert "45 minutes past its first run" in "".join(lines)
    finally:
        os.killpg(dev.pid, signal.SIGINT)
        try:
            dev.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(dev.pid, signal.SIGKILL)
            dev.wait()
