"""The client's exceptions, and ONE table deciding what each failure means: ``ERRORS``.

Every answer or fault that is not a usable page has a row: its action (retry it, fail the read,
or skip what is gone), its failure kind (what the sync does about a read that ends this way)
and the message. The client consults the table and nothing else: urllib3's retried statuses,
the faults tenacity retries, the exception built from an error answer, and what
``read_worker_reservations`` does with a worker whose read failed.

Messages are built only from the request path and Twilio's error body, never from the
request's headers or the session's auth, so a secret cannot leak through ``str(exc)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

import orjson


class TaskRouterError(Exception):
    """An error answer from TaskRouter (or something that behaves like one).

    ``fault`` is the row of ``ERRORS`` it came from and ``attempts`` the HTTP attempts its
    request made (0: not known, e.g. rebuilt from the reader process's frame).
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: int | None = None,
        more_info: str | None = None,
        path: str | None = None,
        fault: int | str | None = None,
        attempts: int = 0,
    ) -> None:
        self.message = message
        self.status = status
        self.code = code
        self.more_info = more_info
        self.path = path
        self.fault = fault if fault is not None else status
        self.attempts = attempts
        super().__init__(self._render())

    def _render(self) -> str:
        parts = [self.message]
        if self.status is not None:
            parts.append(f"HTTP {self.status}")
        if self.code is not None:
            parts.append(f"Twilio error {self.code}")
        if self.path:
            parts.append(f"on {self.path}")
        if self.more_info:
            parts.append(f"see {self.more_info}")
        return " | ".join(parts)


class TaskRouterAuthError(TaskRouterError):
    """401/403: retrying cannot help, so the sync stops at once."""


class TaskRouterNotFound(TaskRouterError):
    """404: a workspace or worker that does not exist (or no longer exists)."""


class TaskRouterBadPage(TaskRouterError):
    """A 200 whose body is not the TaskRouter list envelope we expect."""


class UnsafeNextPageUrl(TaskRouterError):
    """A ``next_page_url`` that points away from the configured API host.

    Following it would send the account's credentials to another server.
    """


class ReaderProcessFailed(TaskRouterError):
    """The child process reading reservations died or failed outside TaskRouter's answers."""


class MissingCredentials(ValueError):
    """No usable TaskRouter credentials in the environment."""


# -- the table ----------------------------------------------------------------------------------
class Action(Enum):
    RETRY = "retry"  # the same request again, after a backoff, while the request's budget lasts
    FAIL = "fail"  # give up on the request now
    SKIP = "skip"  # what was asked for is gone: nothing to read, nothing failed


class Failure(Enum):
    """What a read that ends in this failure means for the sync."""

    TRANSIENT = "transient"  # may pass by itself: the read fails, the next sync reads it again
    REFUSED = "refused"  # TaskRouter would answer the same: the read fails, not retried
    CONFIG = "config"  # the settings are wrong (credentials, base URL): the whole sync stops
    GONE = "gone"  # deleted upstream (confirmed by the caller before it believes it)


@dataclass(frozen=True)
class ErrorRule:
    """One row: ``label`` names the failure in a worker's line ("HTTP 500", "connection
    reset"); ``message`` is the exception's text, formatted with ``message`` (Twilio's or the
    HTTP reason), ``credentials`` (which variables to check), ``attempts`` and ``detail``."""

    action: Action
    failure: Failure
    error: type[TaskRouterError]
    label: str
    message: str

    @property
    def retried(self) -> bool:
        return self.action is Action.RETRY


_TWILIO = "{message}"
_GAVE_UP = "TaskRouter request failed after {attempts} attempt(s): {detail}"
_REFUSED = ("TaskRouter refused the credentials ({message}). Check {credentials} "
            "and TASKROUTER_BASE_URL")
_REDIRECT = ("TaskRouter answered with a redirect, which is not followed (credentials are only "
             "sent to TASKROUTER_BASE_URL)")
_RETRY, _FAIL, _SKIP = Action.RETRY, Action.FAIL, Action.SKIP
_TRANSIENT, _REFUSES, _CONFIG = Failure.TRANSIENT, Failure.REFUSED, Failure.CONFIG

ERRORS: Mapping[int | str, ErrorRule] = {
    # answers, by status; urllib3 retries the RETRY ones (honouring Retry-After)
    429: ErrorRule(_RETRY, _TRANSIENT, TaskRouterError, "HTTP 429", _TWILIO),
    500: ErrorRule(_RETRY, _TRANSIENT, TaskRouterError, "HTTP 500", _TWILIO),
    502: ErrorRule(_RETRY, _TRANSIENT, TaskRouterError, "HTTP 502", _TWILIO),
    503: ErrorRule(_RETRY, _TRANSIENT, TaskRouterError, "HTTP 503", _TWILIO),
    504: ErrorRule(_RETRY, _TRANSIENT, TaskRouterError, "HTTP 504", _TWILIO),
    400: ErrorRule(_FAIL, _REFUSES, TaskRouterError, "HTTP 400", _TWILIO),
    401: ErrorRule(_FAIL, _CONFIG, TaskRouterAuthError, "HTTP 401", _REFUSED),
    403: ErrorRule(_FAIL, _CONFIG, TaskRouterAuthError, "HTTP 403", _REFUSED),
    404: ErrorRule(_SKIP, Failure.GONE, TaskRouterNotFound, "HTTP 404", _TWILIO),
    "redirect": ErrorRule(_FAIL, _REFUSES, TaskRouterError, "a redirect", _REDIRECT),  # 3xx
    "client_error": ErrorRule(_FAIL, _REFUSES, TaskRouterError, "HTTP {status}", _TWILIO),  # 4xx
    "server_error": ErrorRule(_FAIL, _REFUSES, TaskRouterError, "HTTP {status}", _TWILIO),  # 5xx
    # faults of the connection or the body; tenacity retries those urllib3 cannot see
    "connect": ErrorRule(_RETRY, _TRANSIENT, TaskRouterError, "no connection", _GAVE_UP),
    "timeout": ErrorRule(_RETRY, _TRANSIENT, TaskRouterError, "a timeout", _GAVE_UP),
    "reset": ErrorRule(_RETRY, _TRANSIENT, TaskRouterError, "connection reset", _GAVE_UP),
    "truncated": ErrorRule(_RETRY, _TRANSIENT, TaskRouterError, "a body cut short", _GAVE_UP),
    "bad_json": ErrorRule(_RETRY, _TRANSIENT, TaskRouterError, "a body that is not JSON",
                          _GAVE_UP),
    "not_object": ErrorRule(_RETRY, _TRANSIENT, TaskRouterError, "a body that is not an object",
                            _GAVE_UP),
    "request_error": ErrorRule(_FAIL, _TRANSIENT, TaskRouterError, "a request error",
                               _GAVE_UP),  # any other requests exception: not ours to retry
    # pages that cannot be followed (pipelines.taskrouter.paging)
    "bad_page": ErrorRule(_FAIL, _REFUSES, TaskRouterBadPage, "a page without its list",
                          "TaskRouter page without a 'meta.key' list (not a TaskRouter list "
                          "response?)"),
    "bad_next_url": ErrorRule(_FAIL, _REFUSES, TaskRouterBadPage, "a next page URL that is "
                              "not a URL", "meta.next_page_url is neither a URL nor null"),
    "unusable_next_url": ErrorRule(_FAIL, _REFUSES, TaskRouterBadPage, "an unusable next page "
                                   "URL", "TaskRouter sent a next page URL that cannot be "
                                   "followed ({detail})"),
    "repeated_page": ErrorRule(_FAIL, _REFUSES, TaskRouterBadPage, "a page read twice",
                               "meta.next_page_url repeats a page already read (after "
                               "{detail} page(s)): paging would never end"),
    "foreign_next_url": ErrorRule(_FAIL, _CONFIG, UnsafeNextPageUrl, "a next page URL on "
                                  "another host", "Refusing to follow a URL on {detail}; only "
                                  "{base_url} (TASKROUTER_BASE_URL) receives the credentials"),
    # a worker whose reservations answered 404 while the worker itself is still there
    "worker_still_there": ErrorRule(_FAIL, _TRANSIENT, TaskRouterError,
                                    "HTTP 404 while the worker exists", _TWILIO),
}


def status_fault(status: int) -> int | str:
    """The row of an HTTP status: its own, or the row of its class."""
    if status in ERRORS:
        return status
    if status < 400:
        return "redirect"
    return "client_error" if status < 500 else "server_error"


def retried_statuses() -> frozenset[int]:
    """The statuses urllib3 retries (its ``status_forcelist``)."""
    return frozenset(k for k, rule in ERRORS.items() if isinstance(k, int) and rule.retried)


def rule_of(error: TaskRouterError) -> ErrorRule:
    """The row of an exception the client raised (or the reader process rebuilt)."""
    if error.fault in ERRORS:
        return ERRORS[error.fault]
    if error.status is not None:
        return ERRORS[status_fault(error.status)]
    if isinstance(error, UnsafeNextPageUrl):
        return ERRORS["foreign_next_url"]
    if isinstance(error, TaskRouterAuthError):
        return ERRORS[401]
    return ERRORS["bad_page" if isinstance(error, TaskRouterBadPage) else "request_error"]


def make_error(fault: int | str, *, path: str | None = None, status: int | None = None,
               code: int | None = None, more_info: str | None = None, attempts: int = 0,
               **fields: object) -> TaskRouterError:
    """The exception for row ``fault``, its message formatted with ``fields``."""
    rule = ERRORS[fault]
    text = rule.message.format(attempts=attempts, **fields)
    return rule.error(text, status=status, code=code, more_info=more_info, path=path,
                      fault=fault, attempts=attempts)


def answer_error(status: int, content: bytes, reason: str | None, path: str,
                 credentials: str) -> TaskRouterError:
    """The exception of an error answer: its row of ``ERRORS``, with Twilio's error body
    (``credentials`` names the variables to check when the credentials are refused)."""
    try:
        body = orjson.loads(content)
    except orjson.JSONDecodeError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    return make_error(status_fault(status), path=path, status=status, code=body.get("code"),
                      more_info=body.get("more_info"), credentials=credentials,
                      message=str(body.get("message") or reason or "error"))


def failure_line(label: str, attempts: int, retried: bool) -> str:
    """How one worker's read ended, for ``WorkersFailed``: "HTTP 500 after 6 attempts",
    "HTTP 400, not retried"."""
    if not retried:
        return f"{label}, not retried"
    return f"{label} after {attempts} attempt{'s' if attempts != 1 else ''}"


def label_of(error: TaskRouterError) -> str:
    """The failure's short name ("HTTP 503", "connection reset")."""
    return rule_of(error).label.format(status=error.status)
