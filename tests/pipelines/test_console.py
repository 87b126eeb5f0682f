"""What the commands print: one ``Problem`` per kind of failure, progress on the terminal and
everything in the log file, secrets in neither."""

from __future__ import annotations

import logging
import os

import dagster as dg
import pytest

from pipelines import console
from pipelines.console import MAX_WARNINGS, CommandLog, explain, innermost

SECRET = "tok-very-secret-4242"


@pytest.fixture
def logs(tmp_path, monkeypatch):
    monkeypatch.setenv("LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", SECRET)
    monkeypatch.setenv("TASKROUTER_BASE_URL", "https://user:pw@taskrouter.example.com:8443/x")
    return tmp_path / "logs"


@pytest.mark.parametrize(("cls_name", "message", "cause", "fix"), [
    ("TaskRouterAuthError", "TaskRouter refused the credentials (Authenticate). Check X | HTTP 401 "
     "| Twilio error 20003 | on /v1/Workspaces", "refused the credentials (Authenticate): HTTP 401",
     "TWILIO_AUTH_TOKEN"),
    ("MissingCredentials", "No TaskRouter credentials: set TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN.",
     "TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN", "make demo"),
    ("TaskRouterError", "TaskRouter request failed after 6 attempt(s): ConnectionError | on /v1/",
     "https://taskrouter.example.com:8443 could not be reached", "TASKROUTER_BASE_URL"),
    ("TaskRouterNotFound", "Not found | HTTP 404 | on /v1/Workspaces/WSx", "HTTP 404",
     "TASKROUTER_WORKSPACE_SIDS"),
    ("SettingsError", "Invalid settings in the environment (fix or unset these variables):\n"
     "  - SYNC_CRON='x' is not a cron expression", "SYNC_CRON='x'", "docs/configuration.md"),
    ("SchemaOutOfDate", "The warehouse is at revision 0003 but this version needs 0004.",
     "needs 0004", "make migrate"),
    ("OperationalError", '(psycopg.OperationalError) connection failed: connection to server at '
     '"10.0.0.9", port 5432 failed: Connection refused', "could not be opened", "WAREHOUSE_URL"),
    ("Failure", "2 worker(s) could not be read after retries (WK1, WK2); all other workers were "
     "loaded", "2 worker(s) could not be read", "next sync reads those workers again"),
    ("ZeroDivisionError", "division by zero", "ZeroDivisionError: division by zero", "log"),
])
def test_each_kind_of_failure_gets_its_cause_and_fix(logs, cls_name, message, cause, fix):
    problem = explain("Sync FAILED.", cls_name, message)
    assert cause in problem.cause and fix in problem.fix, problem
    lines = problem.lines("data/logs/sync-1.log")
    assert lines[0] == "Sync FAILED." and lines[-1] == "  Full log: data/logs/sync-1.log"
    assert len(lines) <= 10 and "user:pw" not in "\n".join(lines)


def test_the_deepest_cause_is_the_one_explained():
    try:
        try:
            raise KeyError("inner")
        except KeyError as error:
            raise RuntimeError("outer") from error
    except RuntimeError as error:
        assert innermost(error) == ("KeyError", "'inner'")


def test_progress_on_the_terminal_everything_in_the_log_no_secret(logs, capsys):
    with CommandLog("sync") as log:
        logger = log.dagster_logger().logger_fn(dg.build_init_logger_context())

        def dagster_log(level: int, message: str, event: object = None) -> None:
            """As Dagster hands a record to a run's loggers: the line, its metadata aside."""
            logger.log(level, f"taskrouter_sync - run - step - {message}",
                       extra={"dagster_meta": {"dagster_event": event, "orig_message": message}})

        dagster_log(logging.INFO, "progress: workers 5/9")
        dagster_log(logging.INFO, f"a dict {SECRET}")
        dagster_log(logging.ERROR, "STEP_FAILURE", event=object())
        for n in range(MAX_WARNINGS + 2):
            logging.getLogger("pipelines.loading").warning("worker WK%d could not be read", n)
        log.say(f"figures with {SECRET}")
        path = log.path
    out, err = capsys.readouterr()
    assert "progress: workers 5/9" in out and "a dict" not in out and "STEP_FAILURE" not in err
    assert err.count("warning: worker WK") == MAX_WARNINGS and "more warnings in" in err
    assert SECRET not in out + err and "figures with ***" in out
    text = path.read_text(encoding="utf-8")
    assert "a dict ***" in text and "WK4 could not be read" in text and SECRET not in text
    assert path.parent == logs and path.name.startswith("sync-")
    assert not logging.getLogger().handlers or all(
        getattr(h, "baseFilename", "") != str(path) for h in logging.getLogger().handlers)


def test_old_logs_are_pruned_per_command(logs):
    logs.mkdir()
    for n in range(console.KEEP_LOGS + 5):
        (logs / f"sync-old-{n}.log").write_text("x")
        os.utime(logs / f"sync-old-{n}.log", (n, n))
    (logs / "report-old.log").write_text("x")
    with CommandLog("sync"):
        pass
    assert len(list(logs.glob("sync-*.log"))) == console.KEEP_LOGS
    assert not (logs / "sync-old-0.log").exists() and (logs / "report-old.log").exists()


def test_colour_codes_only_on_a_terminal(tmp_path):
    coloured = "\x1b[32m2026-12-06\x1b[0m - dagster - \x1b[34mINFO\x1b[0m - ready\n"
    with open(tmp_path / "out.txt", "w") as stream:
        assert console.plain(coloured, stream) == "2026-12-06 - dagster - INFO - ready\n"
