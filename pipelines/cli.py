"""Command-line entry points behind ``make sync`` and ``make demo``.

Both run the real ``taskrouter_sync`` job through Dagster (``execute_in_process`` on the
project-local ``DAGSTER_HOME`` instance), so runs show up in ``make dev``'s UI afterwards.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
import warnings
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEMO_STATE = PROJECT_ROOT / "data" / "demo-state.json"
DEMO_STEP_MINUTES = 15
SECRET_VARIABLES = ("TWILIO_AUTH_TOKEN", "TWILIO_API_KEY_SECRET")


def _quiet_warnings() -> None:
    try:
        import dagster as dg

        warnings.filterwarnings("ignore", category=dg.BetaWarning)
        warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    except AttributeError:  # pragma: no cover - older Dagster names
        pass


def _ensure_dagster_home() -> None:
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(PROJECT_ROOT / ".dagster_home")))
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").touch(exist_ok=True)


def _scrub(text: str) -> str:
    """Belt and braces: no secret value leaves through a message we print (the Twilio secrets,
    and the password and secret query parameters of ``WAREHOUSE_URL``, in the forms
    ``warehouse.engine.url_secrets`` lists). Values shorter than 4 characters are left alone."""
    from warehouse.engine import url_secrets

    secrets = [os.environ.get(name) or "" for name in SECRET_VARIABLES]
    secrets += url_secrets(os.environ.get("WAREHOUSE_URL"))
    for value in sorted(set(secrets), key=len, reverse=True):  # longest first: no partial leftovers
        if len(value) >= 4:
            text = text.replace(value, "***")
    return text


def run_sync_job() -> tuple[bool, dict[str, dict[str, Any]], list[str]]:
    """Execute ``taskrouter_sync``; returns success, metadata per asset, and error messages."""
    _ensure_dagster_home()
    _quiet_warnings()
    import dagster as dg

    from pipelines.definitions import defs

    instance = dg.DagsterInstance.get()
    job = defs.resolve_job_def("taskrouter_sync")
    log_level = os.environ.get("SYNC_LOG_LEVEL", "INFO").upper()
    result = job.execute_in_process(
        instance=instance,
        raise_on_error=False,
        run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
    )
    metadata: dict[str, dict[str, Any]] = {}
    for event in result.all_events:
        if event.event_type_value == "ASSET_MATERIALIZATION":
            mat = event.event_specific_data.materialization  # type: ignore[union-attr]
            if mat.partition is None:
                metadata[mat.asset_key.to_user_string()] = {
                    k: getattr(v, "value", v) for k, v in mat.metadata.items()
                }
    errors = []
    for event in result.get_step_failure_events():
        # a sync with failed workers fails its last step with the figures of what it did load
        failure = getattr(event.event_specific_data, "user_failure_data", None)
        if failure is not None and "rows_seen" in failure.metadata:
            metadata.setdefault("reservations", {
                k: getattr(v, "value", v) for k, v in failure.metadata.items()})
        error = event.event_specific_data.error  # type: ignore[union-attr]
        cause = error.cause.message.strip() if error and error.cause else ""
        errors.append(_scrub(f"{event.step_key}: {error.message.strip() if error else ''} {cause}"))
    return result.success, metadata, errors


def _print_figures(metadata: dict[str, dict[str, Any]]) -> None:
    res = metadata.get("reservations", {})
    wk = metadata.get("workers", {})
    print(
        f"Sync figures: {res.get('workspaces', '?')} workspace(s), {wk.get('workers', res.get('workers', '?'))} "
        f"worker(s), {res.get('pages', '?')} page(s), {res.get('requests', '?')} request(s), "
        f"{res.get('retries', 0)} retries"
    )
    print(
        f"  reservations: {res.get('rows_seen', 0):,} read, {res.get('inserted', 0):,} inserted, "
        f"{res.get('updated', 0):,} updated, {res.get('unchanged', 0):,} unchanged, "
        f"{res.get('rejected', 0):,} rejected, in {res.get('seconds', 0):.2f}s "
        f"({res.get('rows_per_second', 0):,.0f} rows/s); table holds {res.get('dagster/row_count', 0):,}"
    )
    print(
        f"  workers: {wk.get('inserted', 0)} inserted, {wk.get('updated', 0)} updated, "
        f"{wk.get('unchanged', 0)} unchanged; summary days refreshed: {res.get('days_refreshed', 0)}"
    )


def sync_main() -> int:
    logging.basicConfig(level=logging.WARNING)
    started = time.monotonic()
    ok, metadata, errors = run_sync_job()
    _print_figures(metadata)
    if not ok:
        print("Sync FAILED:", file=sys.stderr)
        for line in errors:
            print(f"  {line}", file=sys.stderr)
        return 1
    print(f"Sync finished in {time.monotonic() - started:.1f}s")
    return 0


# -- demo ------------------------------------------------------------------------------------
@contextmanager
def running_emulator(args: list[str]):  # type: ignore[no-untyped-def]
    """Start the emulator in its own process and yield the JSON line it prints."""
    process = subprocess.Popen(
        [sys.executable, "-m", "pipelines.taskrouter.emulator", *args],
        stdout=subprocess.PIPE,
        text=True,
        cwd=PROJECT_ROOT,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            raise RuntimeError("the TaskRouter emulator did not start")
        info = json.loads(line)
        info["pid"] = process.pid
        yield info
    finally:
        stop_process(process, grace=10)


def stop_process(process: subprocess.Popen[Any], grace: float) -> None:
    """Ask a child process to stop; kill it if it is still running after ``grace`` seconds."""
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def _load_demo_state() -> dict[str, Any]:
    if DEMO_STATE.exists():
        return json.loads(DEMO_STATE.read_text())
    anchor = datetime.now(UTC).replace(second=0, microsecond=0).isoformat()
    return {"anchor": anchor, "minutes": 0, "runs": 0}


def _print_daily_counts(days: int = 10) -> None:
    import pandas as pd
    import sqlalchemy as sa

    from warehouse.engine import create_warehouse_engine
    from warehouse.schema import reservation_daily_status_counts as t

    engine = create_warehouse_engine(os.environ.get("WAREHOUSE_URL"))
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(t.c.day, t.c.reservation_status, sa.func.sum(t.c.reservation_count))
            .group_by(t.c.day, t.c.reservation_status)
        ).all()
    engine.dispose()
    if not rows:
        print("(no summary rows yet)")
        return
    frame = pd.DataFrame(rows, columns=["day", "status", "count"])
    table = frame.pivot_table(index="day", columns="status", values="count", aggfunc="sum",
                              fill_value=0).sort_index()
    table["total"] = table.sum(axis=1)
    shown = table.tail(days).astype(int)
    print(f"\nDaily reservation counts by status (last {len(shown)} of {len(table)} days, "
          f"{os.environ.get('REPORTING_TIMEZONE', 'UTC')}):")
    print(shown.to_string())
    print()


def demo_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a sync against the local emulator.")
    parser.add_argument("--reset", action="store_true", help="start over with an empty warehouse")
    parser.add_argument("--workers", type=int, default=25)
    parser.add_argument("--reservations", type=int, default=40)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.reset:
        for path in (DEMO_STATE, PROJECT_ROOT / "data" / "warehouse.db"):
            path.unlink(missing_ok=True)
    state = _load_demo_state()
    if state["runs"]:
        state["minutes"] += DEMO_STEP_MINUTES
    emulator_args = [
        "--workspaces", "2", "--workers", str(args.workers), "--reservations", str(args.reservations),
        "--anchor", state["anchor"], "--advance-minutes", str(state["minutes"]),
    ]
    with running_emulator(emulator_args) as emu:
        for name in ("TWILIO_API_KEY_SID", "TWILIO_API_KEY_SECRET", "TASKROUTER_WORKSPACE_SIDS",
                     "WAREHOUSE_URL"):
            os.environ.pop(name, None)
        os.environ.update({
            "TASKROUTER_BASE_URL": emu["base_url"],
            "TWILIO_ACCOUNT_SID": emu["account_sid"],
            "TWILIO_AUTH_TOKEN": emu["auth_token"],
        })
        if state["runs"]:
            print(f"Incremental run #{state['runs'] + 1}: the emulator's clock is "
                  f"{state['minutes']} minutes past the first run; only new and changed "
                  "reservations are written.")
        else:
            print(f"First run: full load of {emu['reservations']:,} reservations from the emulator "
                  f"at {emu['base_url']} into data/warehouse.db")
        ok, metadata, errors = run_sync_job()
    _print_figures(metadata)
    if not ok:
        print("Demo sync FAILED:", *errors, sep="\n  ", file=sys.stderr)
        return 1
    state["runs"] += 1
    DEMO_STATE.parent.mkdir(parents=True, exist_ok=True)
    DEMO_STATE.write_text(json.dumps(state))
    _print_daily_counts()
    print("Run `make demo` again for an incremental sync, or `make dev` to see it in Dagster.")
    return 0


def _has_twilio_credentials() -> bool:
    env = os.environ
    return bool(
        (env.get("TWILIO_API_KEY_SID") and env.get("TWILIO_API_KEY_SECRET"))
        or (env.get("TWILIO_ACCOUNT_SID") and env.get("TWILIO_AUTH_TOKEN"))
    )


def dev_main(argv: list[str] | None = None) -> int:
    """``dagster dev`` on the project's workspace; on the emulator unless credentials are set."""
    _ensure_dagster_home()
    command = [sys.executable, "-m", "dagster", "dev", "-w", str(PROJECT_ROOT / "workspace.yaml"),
               *(argv or [])]
    if _has_twilio_credentials():
        print("Twilio credentials found: the UI runs against TASKROUTER_BASE_URL "
              f"({os.environ.get('TASKROUTER_BASE_URL', 'https://taskrouter.twilio.com')}).")
        return _run_until_stopped(command)
    state = _load_demo_state()
    with running_emulator(["--workspaces", "2", "--workers", "25", "--reservations", "40",
                           "--anchor", state["anchor"]]) as emu:
        env = dict(os.environ)
        env.update({"TASKROUTER_BASE_URL": emu["base_url"], "TWILIO_ACCOUNT_SID": emu["account_sid"],
                    "TWILIO_AUTH_TOKEN": emu["auth_token"]})
        print(f"No Twilio credentials set: the UI runs against the local emulator at {emu['base_url']}.")
        return _run_until_stopped(command, env)


def _run_until_stopped(command: list[str], env: dict[str, str] | None = None) -> int:
    """Run ``dagster dev`` and stop it (and so its webserver and daemon) when we are stopped."""
    import signal

    child = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env)

    def stop(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        return child.wait()
    except KeyboardInterrupt:
        child.send_signal(signal.SIGINT)  # dagster dev shuts its services down on SIGINT
        try:
            return child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            return 1


def main() -> None:
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "dev":
        sys.exit(dev_main(sys.argv[2:]))
    if command == "sync":
        sys.exit(sync_main())
    if command == "demo":
        sys.exit(demo_main(sys.argv[2:]))
    print("usage: python -m pipelines.cli {sync|demo [--reset]|dev}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    main()
