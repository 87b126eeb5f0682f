"""Command-line entry points behind ``make sync``, ``make demo``, ``make dev``, ``make migrate``
and ``make report``.

Sync and demo run the real ``taskrouter_sync`` job through Dagster (``execute_in_process`` on
the project-local ``DAGSTER_HOME`` instance), so runs show up in ``make dev``'s UI afterwards.
What they print is decided in ``pipelines.console``: a few lines on the terminal, the full
trace in ``data/logs/``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from pipelines.console import (
    CommandLog,
    Problem,
    api_root,
    explain,
    innermost,
    plain,
    scrub,
    shown_path,
    step_failures,
    warehouse_shown,
)
from pipelines.notices import silence_dagster_notices

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEMO_STATE = PROJECT_ROOT / "data" / "demo-state.json"
DEMO_STEP_MINUTES = 15
DEMO_WORLD = {"workspaces": 2, "workers": 25, "reservations": 40}
DEV_PORT = 3000
# `dagster dev` itself warns that `dg dev` supersedes it; dg needs another package and project
# layout, and the warning is printed before any of our code runs: filtered by its text.
DEV_WARNING_FILTER = "ignore:Function `dev_command` is superseded"
_scrub = scrub  # the name tests and older callers use


def _ensure_dagster_home() -> None:
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(PROJECT_ROOT / ".dagster_home")))
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").touch(exist_ok=True)


@dataclass
class SyncOutcome:
    """A finished ``taskrouter_sync`` run, as the commands report it."""

    success: bool
    metadata: dict[str, dict[str, Any]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)  # "step: message", secrets scrubbed
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # step, class, message


def _execute_sync(log: CommandLog | None = None) -> SyncOutcome:
    """Run ``taskrouter_sync`` in this process; with ``log``, Dagster's events go to its file
    and only progress reaches the terminal, otherwise to Dagster's console logger."""
    _ensure_dagster_home()
    silence_dagster_notices()
    import dagster as dg

    from pipelines.definitions import defs

    instance = dg.DagsterInstance.get()
    job = defs.resolve_job_def("taskrouter_sync")
    if log is not None:
        job = job.with_logger_defs({"command": log.dagster_logger()})
        run_config: dict[str, Any] = {"loggers": {"command": {}}}
    else:
        level = os.environ.get("SYNC_LOG_LEVEL", "INFO").upper()
        run_config = {"loggers": {"console": {"config": {"log_level": level}}}}
    result = job.execute_in_process(instance=instance, raise_on_error=False, run_config=run_config)
    outcome = SyncOutcome(result.success)
    for event in result.all_events:
        if event.event_type_value == "ASSET_MATERIALIZATION":
            mat = event.event_specific_data.materialization  # type: ignore[union-attr]
            if mat.partition is None:
                outcome.metadata[mat.asset_key.to_user_string()] = {
                    k: getattr(v, "value", v) for k, v in mat.metadata.items()
                }
    for event in result.get_step_failure_events():
        # a sync with failed workers fails its last step with the figures of what it did load
        failure = getattr(event.event_specific_data, "user_failure_data", None)
        if failure is not None and "rows_seen" in failure.metadata:
            outcome.metadata.setdefault("reservations", {
                k: getattr(v, "value", v) for k, v in failure.metadata.items()})
    for step, cls_name, message in step_failures(result):
        outcome.failures.append((step, cls_name, scrub(message)))
        outcome.errors.append(scrub(f"{step}: {cls_name}: {message.strip()}"))
    return outcome


def run_sync_job() -> tuple[bool, dict[str, dict[str, Any]], list[str]]:
    """Execute ``taskrouter_sync``; returns success, metadata per asset, and error messages."""
    outcome = _execute_sync()
    return outcome.success, outcome.metadata, outcome.errors


def _print_figures(metadata: dict[str, dict[str, Any]], say: Any = print) -> None:
    """The figures of what a sync loaded; nothing for an asset that reported none (a failed
    step has no figures, and guessing them would print false ones)."""
    res = metadata.get("reservations")
    wk = metadata.get("workers")
    if res:
        workers = (wk or {}).get("workers", res.get("workers", 0))
        say(f"Sync figures: {res.get('workspaces', 0)} workspace(s), {workers} worker(s), "
            f"{res.get('pages', 0)} page(s), {res.get('requests', 0)} request(s), "
            f"{res.get('retries', 0)} retries")
        sweeps = res.get("list_sweeps") or {}
        swept = (f"every worker's list read in {len(sweeps)} workspace(s) "
                 f"({'; '.join(sorted(set(sweeps.values())))})" if sweeps
                 else "no list sweep due (events cover the rest)")
        say(f"  events: {res.get('events_applied', 0):,} reservation event(s) applied "
            f"({res.get('events_read', 0):,} read) in {res.get('event_windows', 0)} window(s); "
            f"{swept}")
        say(f"  reservations: {res.get('inserted', 0):,} inserted, {res.get('updated', 0):,} "
            f"updated, {res.get('filled', 0):,} completed; {res.get('rows_seen', 0):,} list "
            f"record(s) read, {res.get('unchanged', 0):,} unchanged, "
            f"{res.get('rejected', 0):,} rejected, in {res.get('seconds', 0):.2f}s; "
            f"table holds {res.get('dagster/row_count', 0):,}; "
            f"summary days refreshed: {res.get('days_refreshed', 0)}")
    if wk:
        say(f"  workers: {wk.get('workers', 0)} in {wk.get('workspaces', 0)} workspace(s): "
            f"{wk.get('inserted', 0)} inserted, {wk.get('updated', 0)} updated, "
            f"{wk.get('unchanged', 0)} unchanged")


def _sync_problem(label: str, outcome: SyncOutcome) -> Problem:
    step, cls_name, message = outcome.failures[0] if outcome.failures else ("?", "Error", "")
    others = len(outcome.failures) - 1
    what = f"{label} FAILED in step {step}" + (f" (and {others} more step(s))" if others > 0 else "")
    return explain(what + ".", cls_name, message)


def _run_and_report(log: CommandLog, label: str) -> SyncOutcome | None:
    """Run the sync and print its figures, or its one-screen failure (then return None)."""
    started = time.monotonic()
    try:
        outcome = _execute_sync(log)
    except KeyboardInterrupt as error:
        log.fail(log.exception(error, f"{label} interrupted."))
        return None
    except Exception as error:  # noqa: BLE001 - definitions that do not load, a broken instance
        log.fail(log.exception(error, f"{label} FAILED before it started."))
        return None
    _print_figures(outcome.metadata, log.say)
    if not outcome.success:
        for line in outcome.errors:
            log.write(f"failed step: {line}")
        log.fail(_sync_problem(label, outcome))
        return None
    log.say(f"{label} finished in {time.monotonic() - started:.1f}s")
    return outcome


def sync_main() -> int:
    with CommandLog("sync", os.environ.get("SYNC_LOG_LEVEL", "INFO")) as log:
        log.say(f"Sync: TaskRouter at {api_root()} into {warehouse_shown()} (log: {log.shown})")
        return 0 if _run_and_report(log, "Sync") else 1


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
    """The demo's world: its anchor, the minutes its clock has advanced, its size and runs."""
    state: dict[str, Any] = {}
    if DEMO_STATE.exists():
        state = json.loads(DEMO_STATE.read_text())
    if "anchor" not in state:
        state["anchor"] = datetime.now(UTC).replace(second=0, microsecond=0).isoformat()
    state.setdefault("minutes", 0)
    state.setdefault("runs", 0)
    for key in ("workers", "reservations"):  # files written before sizes were kept
        state.setdefault(key, DEMO_WORLD[key])
    return state


def _save_demo_state(state: dict[str, Any]) -> None:
    DEMO_STATE.parent.mkdir(parents=True, exist_ok=True)
    DEMO_STATE.write_text(json.dumps(state))


def emulator_args(state: dict[str, Any]) -> list[str]:
    """The emulator command line for the demo's world at its current clock (`make demo` and
    `make dev` both use it, so the UI and the demo see one world)."""
    return ["--workspaces", str(DEMO_WORLD["workspaces"]), "--workers", str(state["workers"]),
            "--reservations", str(state["reservations"]), "--anchor", state["anchor"],
            "--advance-minutes", str(state["minutes"])]


def _daily_counts_text(days: int = 10) -> str:
    from warehouse.engine import create_warehouse_engine
    from warehouse.report import build_report

    engine = create_warehouse_engine(os.environ.get("WAREHOUSE_URL"))
    try:
        report = build_report(engine, days=days)
    finally:
        engine.dispose()
    if report.counts.empty:
        return "(no summary rows yet)"
    table = report.counts.copy()
    table["total"] = table.sum(axis=1)
    table.index = [d.isoformat() for d in table.index]
    return (f"\nDaily reservation counts by status ({report.first} to {report.last}, "
            f"days in {report.zone}):\n{table.to_string()}\n")


def demo_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo DEMO_ARGS=", description="Run a sync against the local emulator.")
    parser.add_argument("--reset", action="store_true", help="start over with an empty warehouse")
    parser.add_argument("--workers", type=int, default=None, help="workers per workspace (25)")
    parser.add_argument("--reservations", type=int, default=None,
                        help="reservations per worker (40)")
    args = parser.parse_args(argv)
    if args.reset:
        for path in (DEMO_STATE, PROJECT_ROOT / "data" / "warehouse.db"):
            path.unlink(missing_ok=True)
    state = _load_demo_state()
    with CommandLog("demo") as log:
        for key in ("workers", "reservations"):
            wanted = getattr(args, key)
            if wanted is not None and wanted != state[key] and state["runs"]:
                log.fail(Problem(
                    "Demo not run.", f"The demo's world was made with --{key} {state[key]}.",
                    f'Run `make demo DEMO_ARGS="--reset --{key} {wanted}"` to start over.'))
                return 1
            if wanted is not None:
                state[key] = wanted
        if state["runs"]:
            state["minutes"] += DEMO_STEP_MINUTES
        try:
            return _demo_sync(log, state)
        except Exception as error:  # noqa: BLE001 - the emulator did not start, a bad file
            log.fail(log.exception(error, "Demo FAILED."))
            return 1


def _demo_sync(log: CommandLog, state: dict[str, Any]) -> int:
    with running_emulator(emulator_args(state)) as emu:
        for name in ("TWILIO_API_KEY_SID", "TWILIO_API_KEY_SECRET", "TASKROUTER_WORKSPACE_SIDS",
                     "WAREHOUSE_URL"):
            os.environ.pop(name, None)
        os.environ.update({
            "TASKROUTER_BASE_URL": emu["base_url"],
            "TWILIO_ACCOUNT_SID": emu["account_sid"],
            "TWILIO_AUTH_TOKEN": emu["auth_token"],
        })
        if state["runs"]:
            log.say(f"Incremental run #{state['runs'] + 1}: the emulator's clock is "
                    f"{state['minutes']} minutes past the first run; only new and changed "
                    f"reservations are written (log: {log.shown}).")
        else:
            log.say(f"First run: full load of {emu['reservations']:,} reservations from the "
                    f"emulator at {emu['base_url']} into data/warehouse.db (log: {log.shown}).")
        outcome = _run_and_report(log, "Demo sync")
    if outcome is None:
        return 1
    state["runs"] += 1
    _save_demo_state(state)
    log.say(_daily_counts_text())
    log.say("Run `make demo` again for an incremental sync, `make report` for data/report.html, "
            "or `make dev` to see it in Dagster.")
    return 0


# -- dev -------------------------------------------------------------------------------------
def _has_twilio_credentials() -> bool:
    env = os.environ
    return bool(
        (env.get("TWILIO_API_KEY_SID") and env.get("TWILIO_API_KEY_SECRET"))
        or (env.get("TWILIO_ACCOUNT_SID") and env.get("TWILIO_AUTH_TOKEN"))
    )


def _port_taken(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def _definitions_problem() -> Problem | None:
    """Load the definitions once here, so a bad setting is said on the terminal instead of
    as an empty graph in the UI (with the error under Deployment)."""
    silence_dagster_notices()
    try:
        from pipelines.definitions import build_definitions

        build_definitions()
    except Exception as error:  # noqa: BLE001 - any load error is what the UI would hide
        return explain("The Dagster definitions do not load, so `make dev` did not start.",
                       *innermost(error))
    return None


def dev_main(argv: list[str] | None = None) -> int:
    """``dagster dev`` on the project's workspace; on the emulator unless credentials are set,
    at the clock of the demo's world (see ``emulator_args``)."""
    parser = argparse.ArgumentParser(prog="make dev", description="The Dagster UI on this project.")
    parser.add_argument("--port", type=int, default=DEV_PORT, help=f"UI port ({DEV_PORT})")
    parser.add_argument("--host", default="127.0.0.1", help="UI address (127.0.0.1)")
    args, extra = parser.parse_known_args(argv or [])
    _ensure_dagster_home()
    if _port_taken(args.host, args.port):
        print("\n".join(Problem(
            f"`make dev` did not start: port {args.port} on {args.host} is in use.",
            "Another program (perhaps another `make dev`) listens there.",
            f"Stop it, or choose another port: make dev PORT={args.port + 1}").lines(None)),
            file=sys.stderr)
        return 1
    problem = _definitions_problem()
    if problem is not None:
        print("\n".join(problem.lines(None)), file=sys.stderr)
        return 1
    command = [sys.executable, "-m", "dagster", "dev", "-w", str(PROJECT_ROOT / "workspace.yaml"),
               "--host", args.host, "--port", str(args.port), *extra]
    url = f"http://{'localhost' if args.host in ('0.0.0.0', '::') else args.host}:{args.port}"
    if _has_twilio_credentials():
        print(f"Twilio credentials found: the UI runs against {api_root()}.")
        print(f"Dagster UI: {url} (Ctrl-C stops it)")
        return _run_until_stopped(command, dict(os.environ))
    state = _load_demo_state()
    _save_demo_state(state)  # a UI sync before any demo keeps the same world for the demo
    with running_emulator(emulator_args(state)) as emu:
        env = dict(os.environ)
        env.update({"TASKROUTER_BASE_URL": emu["base_url"], "TWILIO_ACCOUNT_SID": emu["account_sid"],
                    "TWILIO_AUTH_TOKEN": emu["auth_token"]})
        print(f"No Twilio credentials set: the UI runs against the local emulator at "
              f"{emu['base_url']}, at the clock of the last `make demo` "
              f"({state['minutes']} minutes past its first run).")
        print(f"Dagster UI: {url} (Ctrl-C stops it)")
        return _run_until_stopped(command, env)


def _run_until_stopped(command: list[str], env: dict[str, str]) -> int:
    """Run ``dagster dev`` and stop it (and so its webserver and daemon) when we are stopped.

    Its output passes through here, without colour codes unless stdout is a terminal.
    """
    import signal

    env["PYTHONWARNINGS"] = ",".join(filter(None, [env.get("PYTHONWARNINGS"), DEV_WARNING_FILTER]))
    child = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, errors="replace")

    def relay() -> None:
        assert child.stdout is not None
        for line in child.stdout:
            sys.stdout.write(plain(line, sys.stdout))
            sys.stdout.flush()

    relay_thread = threading.Thread(target=relay, daemon=True)
    relay_thread.start()

    def stop(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        code = child.wait()
    except KeyboardInterrupt:
        child.send_signal(signal.SIGINT)  # dagster dev shuts its services down on SIGINT
        try:
            child.wait(timeout=30)
            code = 0  # stopped as asked
        except subprocess.TimeoutExpired:
            child.kill()
            code = 1
    relay_thread.join(timeout=5)
    return code


# -- migrate and report ----------------------------------------------------------------------
def migrate_main(argv: list[str] | None = None) -> int:
    """``python -m warehouse.migrate`` with the one-screen error and the log file."""
    from warehouse import migrate

    with CommandLog("migrate") as log:
        log.say(f"Migrating {warehouse_shown()} (log: {log.shown})")
        try:
            migrate.main(argv or ["upgrade"])
        except SystemExit as stop:  # argparse and refused URLs have printed their message
            return stop.code if isinstance(stop.code, int) else 1
        except (Exception, KeyboardInterrupt) as error:  # noqa: BLE001
            log.fail(log.exception(error, "Migration FAILED (nothing was half-applied: "
                                   "each revision runs in one transaction)."))
            return 1
    return 0


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date: use YYYY-MM-DD") from None


def report_main(argv: list[str] | None = None) -> int:
    """Write the daily status report (``pipelines.report``) for the warehouse of WAREHOUSE_URL."""
    from pipelines.report import REPORT_PATH, write_report

    parser = argparse.ArgumentParser(prog="make report REPORT_ARGS=", description="Write the daily status report as HTML.")
    parser.add_argument("--from", dest="first", type=_day, help="first day (YYYY-MM-DD)")
    parser.add_argument("--to", dest="last", type=_day,
                        help="last day (default: the latest day with data)")
    parser.add_argument("--output", type=Path, default=REPORT_PATH,
                        help=f"where to write it ({shown_path(REPORT_PATH)})")
    args = parser.parse_args(argv)
    output = args.output if args.output.is_absolute() else Path.cwd() / args.output
    with CommandLog("report") as log:
        try:
            from warehouse.engine import create_warehouse_engine

            engine = create_warehouse_engine(os.environ.get("WAREHOUSE_URL"))
            try:
                report = write_report(engine, output, args.first, args.last, warehouse_shown())
            finally:
                engine.dispose()
        except Exception as error:  # noqa: BLE001
            log.fail(log.exception(error, "Report FAILED."))
            return 1
        rate = report.overall_rate
        log.say(f"Wrote {shown_path(output)}: {report.first} to {report.last} ({report.zone} days), "
                f"{report.total:,} reservations on {len(report.counts)} day(s), acceptance rate "
                f"{'n/a' if rate is None else f'{rate * 100:.1f}%'}.")
        log.say(f"Open it in a browser: {output.resolve().as_uri()}")
    return 0


COMMANDS = {"sync": lambda argv: sync_main(), "demo": demo_main, "dev": dev_main,
            "migrate": migrate_main, "report": report_main}


def main() -> None:
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command not in COMMANDS:
        print("usage: python -m pipelines.cli {sync|demo [--reset]|dev [--port N]|"
              "migrate [upgrade|current|downgrade REV]|report [--from D] [--to D]}",
              file=sys.stderr)
        sys.exit(2)
    sys.exit(COMMANDS[command](sys.argv[2:]))


if __name__ == "__main__":
    main()
