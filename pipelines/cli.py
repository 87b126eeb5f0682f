"""Command-line entry points behind ``make sync``, ``make demo``, ``make dev``, ``make migrate``
and ``make report``: ``python -m pipelines.cli {sync|demo|dev|migrate|report}``.

Each command is a function here or in its own module: sync in ``pipelines.job_runner`` (the
job run in this process), demo and dev in ``pipelines.demo``.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import date
from pathlib import Path

from pipelines.console import CommandLog, api_root, scrub, shown_path, warehouse_shown
from pipelines.demo import demo_main, dev_main, emulator_args, running_emulator, stop_process
from pipelines.job_runner import run_and_report, run_sync_job

__all__ = ["demo_main", "dev_main", "emulator_args", "main", "migrate_main", "report_main",
           "run_sync_job", "running_emulator", "stop_process", "sync_main"]
_scrub = scrub  # the name tests and older callers use


def sync_main() -> int:
    with CommandLog("sync", os.environ.get("SYNC_LOG_LEVEL", "INFO")) as log:
        log.say(f"Sync: TaskRouter at {api_root()} into {warehouse_shown()} (log: {log.shown})")
        return 0 if run_and_report(log, "Sync") else 1


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
