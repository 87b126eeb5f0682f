"""Running ``taskrouter_sync`` in this process, as ``make sync`` and ``make demo`` do, and
saying how it went.

The real job runs through Dagster (``execute_in_process`` on the project-local
``DAGSTER_HOME`` instance unless one is set), so its runs show up in ``make dev``'s UI
afterwards. What reaches the terminal is decided in ``pipelines.console``: a few lines there,
the full trace in ``data/logs/``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.console import CommandLog, Problem, explain, scrub, step_failures
from pipelines.notices import silence_dagster_notices

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def ensure_dagster_home() -> None:
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


def execute_sync(log: CommandLog | None = None) -> SyncOutcome:
    """Run ``taskrouter_sync`` in this process; with ``log``, Dagster's events go to its file
    and only progress reaches the terminal, otherwise to Dagster's console logger."""
    ensure_dagster_home()
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
    outcome = execute_sync()
    return outcome.success, outcome.metadata, outcome.errors


def print_figures(metadata: dict[str, dict[str, Any]], say: Any = print) -> None:
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


def run_and_report(log: CommandLog, label: str) -> SyncOutcome | None:
    """Run the sync and print its figures, or its one-screen failure (then return None)."""
    started = time.monotonic()
    try:
        outcome = execute_sync(log)
    except KeyboardInterrupt as error:
        log.fail(log.exception(error, f"{label} interrupted."))
        return None
    except Exception as error:  # noqa: BLE001 - definitions that do not load, a broken instance
        log.fail(log.exception(error, f"{label} FAILED before it started."))
        return None
    print_figures(outcome.metadata, log.say)
    if not outcome.success:
        for line in outcome.errors:
            log.write(f"failed step: {line}")
        log.fail(_sync_problem(label, outcome))
        return None
    log.say(f"{label} finished in {time.monotonic() - started:.1f}s")
    return outcome
