"""``make demo`` and ``make dev``: the local TaskRouter emulator, a sync against it, the UI on it.

The demo keeps its world in ``data/demo-state.json`` (its anchor, how far its clock has
advanced, its size), so each ``make demo`` is an incremental sync a few minutes later and
``make dev`` shows the same world.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from pipelines.console import CommandLog, Problem, api_root, explain, innermost, plain
from pipelines.job_runner import PROJECT_ROOT, ensure_dagster_home, run_and_report
from pipelines.notices import silence_dagster_notices

DEMO_STATE = PROJECT_ROOT / "data" / "demo-state.json"
DEMO_STEP_MINUTES = 15
DEMO_WORLD = {"workspaces": 2, "workers": 25, "reservations": 40}
DEV_PORT = 3000
# `dagster dev` itself warns that `dg dev` supersedes it; dg needs another package and project
# layout, and the warning is printed before any of our code runs: filtered by its text.
DEV_WARNING_FILTER = "ignore:Function `dev_command` is superseded"


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
        outcome = run_and_report(log, "Demo sync")
    if outcome is None:
        return 1
    state["runs"] += 1
    _save_demo_state(state)
    log.say(_daily_counts_text())
    log.say("Run `make demo` again for an incremental sync, `make report` for data/report.html, "
            "or `make dev` to see it in Dagster.")
    return 0


# -- dev --------------------------------------------------------------------------------------
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
    ensure_dagster_home()
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
