"""The one table that decides retry, fail or skip (``pipelines.taskrouter.errors.ERRORS``), row by row.

Each row is checked for its action, failure kind and exception, then for what the client does
with it: the statuses urllib3 retries, the exceptions tenacity retries (real ``requests`` and
urllib3 exception objects, as they arrive), the exception built from an error answer (fake
bodies) and the line a failed worker gets.
"""

from __future__ import annotations

import pytest
import requests
from urllib3.exceptions import (
    ConnectTimeoutError,
    MaxRetryError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)

from pipelines.taskrouter.errors import (
    ERRORS,
    Action,
    Failure,
    TaskRouterAuthError,
    TaskRouterBadPage,
    TaskRouterError,
    TaskRouterNotFound,
    UnsafeNextPageUrl,
    answer_error,
    failure_line,
    label_of,
    make_error,
    retried_statuses,
    rule_of,
    status_fault,
)
from pipelines.taskrouter.retry import BodyFault, describe, fault_of, retry_in_tenacity

RETRY, FAIL, SKIP = Action.RETRY, Action.FAIL, Action.SKIP
TRANSIENT, REFUSED, CONFIG, GONE = (Failure.TRANSIENT, Failure.REFUSED, Failure.CONFIG,
                                    Failure.GONE)

# row: (action, failure kind, exception class)
EXPECTED = {
    429: (RETRY, TRANSIENT, TaskRouterError),
    500: (RETRY, TRANSIENT, TaskRouterError),
    502: (RETRY, TRANSIENT, TaskRouterError),
    503: (RETRY, TRANSIENT, TaskRouterError),
    504: (RETRY, TRANSIENT, TaskRouterError),
    400: (FAIL, REFUSED, TaskRouterError),
    401: (FAIL, CONFIG, TaskRouterAuthError),
    403: (FAIL, CONFIG, TaskRouterAuthError),
    404: (SKIP, GONE, TaskRouterNotFound),
    "redirect": (FAIL, REFUSED, TaskRouterError),
    "client_error": (FAIL, REFUSED, TaskRouterError),
    "server_error": (FAIL, REFUSED, TaskRouterError),
    "connect": (RETRY, TRANSIENT, TaskRouterError),
    "timeout": (RETRY, TRANSIENT, TaskRouterError),
    "reset": (RETRY, TRANSIENT, TaskRouterError),
    "truncated": (RETRY, TRANSIENT, TaskRouterError),
    "bad_json": (RETRY, TRANSIENT, TaskRouterError),
    "not_object": (RETRY, TRANSIENT, TaskRouterError),
    "request_error": (FAIL, TRANSIENT, TaskRouterError),
    "bad_page": (FAIL, REFUSED, TaskRouterBadPage),
    "bad_next_url": (FAIL, REFUSED, TaskRouterBadPage),
    "unusable_next_url": (FAIL, REFUSED, TaskRouterBadPage),
    "repeated_page": (FAIL, REFUSED, TaskRouterBadPage),
    "foreign_next_url": (FAIL, CONFIG, UnsafeNextPageUrl),
    "worker_still_there": (FAIL, TRANSIENT, TaskRouterError),
}
FIELDS = {"message": "Twilio says no", "credentials": "TWILIO_X / TWILIO_Y", "detail": "why",
          "base_url": "http://h"}


def test_every_row_is_one_of_the_expected_ones():
    assert set(ERRORS) == set(EXPECTED)


@pytest.mark.parametrize("fault", list(EXPECTED), ids=str)
def test_each_row_decides_its_action_failure_and_exception(fault):
    action, failure, error = EXPECTED[fault]
    rule = ERRORS[fault]
    assert (rule.action, rule.failure, rule.error) == (action, failure, error)
    built = make_error(fault, path="/v1/Workspaces", status=fault if isinstance(fault, int)
                       else None, attempts=3, **FIELDS)
    assert type(built) is error and built.fault == fault and built.attempts == 3
    assert rule_of(built) is rule
    assert "/v1/Workspaces" in str(built)
    # what a worker whose read ended this way is told
    line = failure_line(label_of(built), built.attempts, rule.retried)
    assert line.endswith(", not retried") != rule.retried


def test_urllib3_retries_exactly_the_retry_statuses():
    assert retried_statuses() == {429, 500, 502, 503, 504}


@pytest.mark.parametrize(("status", "fault"), [
    (301, "redirect"), (302, "redirect"), (400, 400), (401, 401), (403, 403), (404, 404),
    (405, "client_error"), (418, "client_error"), (429, 429), (500, 500), (501, "server_error"),
    (502, 502), (503, 503), (504, 504), (505, "server_error"),
])
def test_each_status_has_its_row(status, fault):
    assert status_fault(status) == fault


@pytest.mark.parametrize(("status", "body", "cls", "text"), [
    (401, b'{"code": 20003, "message": "Authenticate"}', TaskRouterAuthError,
     "TaskRouter refused the credentials (Authenticate). Check TWILIO_X / TWILIO_Y and "
     "TASKROUTER_BASE_URL | HTTP 401 | Twilio error 20003 | on /v1/W"),
    (403, b'[1, 2]', TaskRouterAuthError, "refused the credentials (Forbidden)"),
    (404, b'{"code": 20404, "message": "Not found", "more_info": "https://e/20404"}',
     TaskRouterNotFound, "Not found | HTTP 404 | Twilio error 20404 | on /v1/W | see https://e/20404"),
    (302, b"", TaskRouterError, "redirect, which is not followed"),
    (500, b"<html>oops</html>", TaskRouterError, "Forbidden | HTTP 500"),
    (418, b'{"message": "teapot"}', TaskRouterError, "teapot | HTTP 418"),
])
def test_an_error_answer_becomes_its_rows_exception(status, body, cls, text):
    error = answer_error(status, body, "Forbidden", "/v1/W", "TWILIO_X / TWILIO_Y")
    assert type(error) is cls and error.status == status
    assert text in str(error)


def _wrapped(reason: Exception) -> MaxRetryError:
    return MaxRetryError(None, "/v1/W", reason)  # type: ignore[arg-type]


# (exception as requests raises it, its row, retried by tenacity)
TRANSPORT = [
    (BodyFault("bad_json", "response body is not valid JSON"), "bad_json", True),
    (BodyFault("not_object", "response body is not a JSON object"), "not_object", True),
    (requests.exceptions.ChunkedEncodingError(ProtocolError("cut")), "truncated", True),
    (requests.exceptions.ContentDecodingError("gzip"), "truncated", True),
    (requests.exceptions.ConnectionError(ProtocolError("reset", ConnectionResetError())),
     "reset", True),
    (requests.exceptions.ConnectionError(ReadTimeoutError(None, "/", "read")), "timeout", True),
    (requests.exceptions.ReadTimeout("read"), "timeout", True),
    # urllib3 already spent the request's attempts on these: not once more in tenacity
    (requests.exceptions.ConnectionError(_wrapped(NewConnectionError(None, "refused"))),
     "connect", False),
    (requests.exceptions.ConnectTimeout(_wrapped(ConnectTimeoutError())), "timeout", False),
    (requests.exceptions.InvalidURL("no host"), None, False),
    (ValueError("not ours"), None, False),
]


@pytest.mark.parametrize(("exc", "fault", "retried"), TRANSPORT,
                         ids=[f"{type(e).__name__}-{f}" for e, f, _ in TRANSPORT])
def test_each_transport_fault_has_its_row_and_tenacity_retries_only_what_urllib3_did_not(
        exc, fault, retried):
    assert fault_of(exc) == fault
    assert retry_in_tenacity(exc) is retried


def test_a_failure_is_described_without_its_text():
    secret_url = "http://h/v1/W?PageToken=S3CR3T"
    exc = requests.exceptions.ConnectionError(_wrapped(NewConnectionError(None, secret_url)))
    assert describe(exc) == "ConnectionError (NewConnectionError)"
    assert describe(BodyFault("bad_json", "response body is not valid JSON")) == (
        "response body is not valid JSON")


def test_an_exception_rebuilt_from_its_fields_finds_its_row():
    # the reader process rebuilds exceptions from class, message and status only
    assert rule_of(TaskRouterAuthError("x", status=401)) is ERRORS[401]
    assert rule_of(TaskRouterNotFound("x", status=404)) is ERRORS[404]
    assert rule_of(UnsafeNextPageUrl("x")) is ERRORS["foreign_next_url"]
    assert rule_of(TaskRouterBadPage("x")) is ERRORS["bad_page"]
    assert rule_of(TaskRouterError("x", status=599)) is ERRORS["server_error"]
    assert rule_of(TaskRouterError("x")) is ERRORS["request_error"]


@pytest.mark.parametrize(("label", "attempts", "retried", "line"), [
    ("HTTP 500", 6, True, "HTTP 500 after 6 attempts"),
    ("HTTP 503", 1, True, "HTTP 503 after 1 attempt"),
    ("HTTP 400", 1, False, "HTTP 400, not retried"),
    ("a page without its list", 2, False, "a page without its list, not retried"),
])
def test_failure_lines(label, attempts, retried, line):
    assert failure_line(label, attempts, retried) == line
