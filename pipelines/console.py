"""What `make sync`, `make demo`, `make migrate` and `make report` print, and where the rest goes.

The terminal gets a few short lines: what is running, progress, at most a few warnings, the
figures, and on failure one ``Problem`` (what failed, the cause in plain words, the fix, the log
file). Everything else (Dagster's events, Python logging, full tracebacks) goes to a log file,
``data/logs/<command>-<time>.log`` (``LOG_DIR`` moves it), so a failure fits on one screen and
the trace is still one `less` away. Secrets are scrubbed from both.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import textwrap
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import dagster as dg

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SECRET_VARIABLES = ("TWILIO_AUTH_TOKEN", "TWILIO_API_KEY_SECRET")
KEEP_LOGS = 50  # per command: a sync every 5 minutes keeps about four hours of logs
MAX_WARNINGS = 3  # on the terminal; the log has all of them
WIDTH = 100
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def scrub(text: str) -> str:
    """Belt and braces: no secret value leaves through a message we print or log (the Twilio
    secrets, and the password and secret query parameters of ``WAREHOUSE_URL``, in the forms
    ``warehouse.engine.url_secrets`` lists). Values shorter than 4 characters are left alone."""
    from warehouse.engine import url_secrets

    secrets = [os.environ.get(name) or "" for name in SECRET_VARIABLES]
    secrets += url_secrets(os.environ.get("WAREHOUSE_URL"))
    for value in sorted(set(secrets), key=len, reverse=True):  # longest first: no partial leftovers
        if len(value) >= 4:
            text = text.replace(value, "***")
    return text


def plain(text: str, stream: TextIO) -> str:
    """``text`` without colour codes unless ``stream`` is a terminal."""
    return text if _isatty(stream) else ANSI.sub("", text)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def api_root() -> str:
    """``TASKROUTER_BASE_URL`` as scheme://host[:port] (never a user:password@ part)."""
    raw = os.environ.get("TASKROUTER_BASE_URL", "").strip() or "https://taskrouter.twilio.com"
    try:
        parts = urlsplit(raw)
        host = parts.hostname or "?"
        return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}"
    except ValueError:
        return "(unparseable)"


def warehouse_shown() -> str:
    """``WAREHOUSE_URL`` with its password masked (or a note that it does not parse)."""
    from warehouse.engine import WarehouseUrlError, mask_url, normalize_url

    try:
        return mask_url(normalize_url(os.environ.get("WAREHOUSE_URL")))
    except WarehouseUrlError:
        return "(WAREHOUSE_URL does not parse)"


# -- the log file ----------------------------------------------------------------------------
def log_dir() -> Path:
    raw = os.environ.get("LOG_DIR", "").strip()
    path = Path(raw) if raw else PROJECT_ROOT / "data" / "logs"
    return path if path.is_absolute() else PROJECT_ROOT / path


def shown_path(path: Path) -> str:
    """A path as short as it can be said from the current directory."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


class _ScrubbingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return scrub(ANSI.sub("", super().format(record)))


class _Terminal(logging.Handler):
    """Python logging's warnings on the terminal: first line only, at most ``MAX_WARNINGS``."""

    def __init__(self, log: CommandLog) -> None:
        super().__init__(logging.WARNING)
        self.log = log

    def emit(self, record: logging.LogRecord) -> None:
        self.log.warn(record.getMessage())


@dataclass
class Problem:
    """A failure as the terminal shows it."""

    what: str
    cause: str
    fix: str

    def lines(self, log_path: str | None) -> list[str]:
        out = [self.what]
        out += _wrapped("Cause: ", self.cause)
        out += _wrapped("Fix: ", self.fix)
        if log_path:
            out.append(f"  Full log: {log_path}")
        return [scrub(line) for line in out]


def _wrapped(label: str, text: str, limit: int = 4) -> list[str]:
    lines: list[str] = []
    for paragraph in text.strip().splitlines() or [""]:
        lines += textwrap.wrap(paragraph.strip(), WIDTH - len(label) - 2) or [""]
    if len(lines) > limit:
        lines = [*lines[:limit - 1], "... (the rest is in the log)"]
    pad = " " * (len(label) + 2)
    return [f"  {label}{lines[0]}", *(pad + line for line in lines[1:])]


class CommandLog:
    """One command's log file, plus the terminal lines it prints (see module docstring)."""

    def __init__(self, command: str, level: str = "INFO") -> None:
        self.command = command
        self.level = level.upper()
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        self.path = log_dir() / f"{command}-{stamp}-{os.getpid()}.log"
        self.warnings = 0
        self._handlers: list[logging.Handler] = []
        self._root_level = logging.getLogger().level

    @property
    def shown(self) -> str:
        return shown_path(self.path)

    def __enter__(self) -> CommandLog:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._prune()
        file_handler = logging.FileHandler(self.path, encoding="utf-8", delay=False)
        file_handler.setFormatter(_ScrubbingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        file_handler.setLevel(self.level)
        self.file_handler = file_handler
        root = logging.getLogger()
        for handler in (file_handler, _Terminal(self)):
            root.addHandler(handler)
            self._handlers.append(handler)
        root.setLevel(min(logging.INFO, logging.getLevelName(self.level)))
        logging.getLogger("alembic").setLevel(logging.WARNING)  # Dagster's own storage set-up
        logging.captureWarnings(True)  # Python warnings go to the file, not the terminal
        return self

    def __exit__(self, *exc_info: object) -> None:
        root = logging.getLogger()
        for handler in self._handlers:
            root.removeHandler(handler)
            handler.close()
        root.setLevel(self._root_level)
        logging.captureWarnings(False)

    def _prune(self) -> None:
        old = sorted(self.path.parent.glob(f"{self.command}-*.log"), key=lambda p: p.stat().st_mtime)
        for path in old[:max(0, len(old) - (KEEP_LOGS - 1))]:
            path.unlink(missing_ok=True)

    # -- what goes where -------------------------------------------------------------------
    def write(self, text: str) -> None:
        """Into the log file only."""
        self.file_handler.stream.write(scrub(ANSI.sub("", text)).rstrip("\n") + "\n")
        self.file_handler.flush()

    def say(self, text: str) -> None:
        """A line on the terminal (stdout), and in the log."""
        print(scrub(text), flush=True)
        self.write(text)

    def warn(self, message: str) -> None:
        """A warning's first line on the terminal (stderr), the first few only."""
        self.warnings += 1
        first = scrub(message.strip().splitlines()[0] if message.strip() else "")
        if self.warnings <= MAX_WARNINGS:
            print(f"  warning: {textwrap.shorten(first, WIDTH * 2, placeholder=' ...')}",
                  file=sys.stderr, flush=True)
        elif self.warnings == MAX_WARNINGS + 1:
            print(f"  (more warnings in {self.shown})", file=sys.stderr, flush=True)

    def fail(self, problem: Problem) -> None:
        """The one-screen failure on stderr; the same lines close the log."""
        lines = problem.lines(self.shown)
        self.write("\n".join(lines))
        print("\n".join(lines), file=sys.stderr, flush=True)

    def exception(self, error: BaseException, what: str) -> Problem:
        """Log ``error``'s traceback and return its ``Problem``."""
        self.write("".join(traceback.format_exception(error)))
        cls_name, message = innermost(error)
        return explain(what, cls_name, message)

    def dagster_logger(self) -> dg.LoggerDefinition:
        """A Dagster logger for ``execute_in_process``: every event into the log file; on the
        terminal only progress lines and the first warnings (failures are summed up after)."""
        import dagster as dg  # here: report and migrate never load Dagster

        log = self

        class _DagsterTerminal(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                meta = getattr(record, "dagster_meta", None) or {}
                if meta.get("dagster_event") is not None:
                    return  # Dagster's own events: the log file has them
                message = str(meta.get("orig_message", record.getMessage()))
                if record.levelno == logging.WARNING:  # errors are summed up by the Problem
                    log.warn(message)
                elif message.startswith("progress:"):
                    print(f"  {scrub(message)}", flush=True)

        @dg.logger(description="Sync log: the file gets everything, the terminal progress.")
        def command_logger(_init_context: Any) -> logging.Logger:
            logger = logging.Logger(f"dagster.{log.command}", level=log.level)
            logger.addHandler(log.file_handler)
            logger.addHandler(_DagsterTerminal(logging.INFO))
            return logger

        return command_logger


# -- from an error to its problem ------------------------------------------------------------
def innermost(error: BaseException) -> tuple[str, str]:
    """The class name and message of the deepest cause (the one that says what went wrong)."""
    while error.__cause__ is not None:
        error = error.__cause__
    return type(error).__name__, str(error)


def innermost_info(info: Any) -> tuple[str, str]:
    """The same for Dagster's ``SerializableErrorInfo``: the deepest non-Dagster cause."""
    chain = [info]
    while getattr(chain[-1], "cause", None) is not None:
        chain.append(chain[-1].cause)
    user = [e for e in chain if not str(e.cls_name or "").startswith("Dagster")] or chain
    error = user[-1]
    message = str(error.message or "").strip()
    prefix = f"{error.cls_name}: "
    for marker in (prefix, f".{prefix}"):  # messages start with the qualified class name
        if marker in message.split("\n", 1)[0]:
            message = message.split(marker, 1)[1]
    return str(error.cls_name or "Error"), message


def _credentials_fix() -> str:
    env = os.environ
    if env.get("TWILIO_API_KEY_SID") and env.get("TWILIO_API_KEY_SECRET"):
        using = ("TWILIO_API_KEY_SID and TWILIO_API_KEY_SECRET (they are in use because both are "
                 "set; unset them to use TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN)")
    else:
        using = ("TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN (or set TWILIO_API_KEY_SID and "
                 "TWILIO_API_KEY_SECRET, which win when both are set)")
    return f"Check {using}, and that TASKROUTER_BASE_URL ({api_root()}) is the API they belong to."


def _details(message: str) -> tuple[str, str]:
    """A TaskRouter error's sentence and its ``| HTTP 401 | Twilio error 20003 | on /v1/…`` tail."""
    head, _, tail = message.partition(" | ")
    return head.strip(), ", ".join(p.strip() for p in tail.split(" | ") if p.strip())


def _first_sentence(text: str) -> str:
    first = text.strip().splitlines()[0] if text.strip() else ""
    return textwrap.shorten(first, 300, placeholder=" ...")


def explain(what: str, cls_name: str, message: str) -> Problem:
    """The cause in plain words and the fix, by the kind of error (one table, read top down)."""
    head, tail = _details(message)
    tail = f": {tail}" if tail else ""
    if cls_name == "TaskRouterAuthError":
        cause = head.split(". Check", 1)[0].rstrip(".")
        return Problem(what, f"{cause}{tail}", _credentials_fix())
    if cls_name == "MissingCredentials":
        return Problem(what, head, "Export those variables (or run `make demo`, which needs "
                       "none: it starts a local TaskRouter emulator).")
    if cls_name == "TaskRouterError" and "request failed after" in head:
        return Problem(what, f"TaskRouter at {api_root()} could not be reached. {head}{tail}",
                       f"Check TASKROUTER_BASE_URL ({api_root()}) and that this machine can reach "
                       "it (network, proxy, firewall); TASKROUTER_MAX_ATTEMPTS sets the attempts.")
    if cls_name == "TaskRouterNotFound":
        return Problem(what, f"{head}{tail}", "Check TASKROUTER_WORKSPACE_SIDS (leave it empty "
                       "for every workspace of the account) and TASKROUTER_BASE_URL.")
    if cls_name in ("SettingsError", "WarehouseUrlError", "SchemaOutOfDate"):
        lines = message.strip().splitlines()
        return Problem(what, "\n".join(lines[:6]),
                       "Fix or unset the variables named above (docs/configuration.md lists "
                       "every setting and what it accepts)." if cls_name != "SchemaOutOfDate"
                       else "Run `make migrate` with the same WAREHOUSE_URL.")
    if cls_name in ("OperationalError", "InterfaceError") and re.search(
            r"connect|refused|resolve|translate host|timeout expired|Access denied|password",
            message, re.IGNORECASE):
        return Problem(what, f"The warehouse {warehouse_shown()} could not be opened: "
                       f"{_first_sentence(message)}",
                       "Check WAREHOUSE_URL (host, port, database, user, password) and that the "
                       "database server is running and reachable.")
    if "could not be read" in message:  # WorkersFailed, raised as the sync's dg.Failure
        return Problem(what, _first_sentence(message), "Nothing else is lost: the next sync "
                       "reads those workers again. Each worker's error is in the log.")
    if cls_name == "KeyboardInterrupt":
        return Problem(what, "Interrupted.", "Run it again: a sync picks up where it stopped.")
    return Problem(what, f"{cls_name}: {_first_sentence(message)}",
                   "See the log for the full trace.")


def step_failures(result: Any) -> Iterator[tuple[str, str, str]]:
    """(step key, error class, message) for each failed step of a Dagster run result."""
    for event in result.get_step_failure_events():
        error = getattr(event.event_specific_data, "error", None)
        if error is None:
            continue
        cls_name, message = innermost_info(error)
        yield str(event.step_key), cls_name, message
