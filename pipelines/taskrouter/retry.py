"""Retries in two layers that share one budget per request.

- urllib3's ``Retry`` (``LimitedRetry``, mounted on the session's adapter) retries the statuses
  ``ERRORS`` marks RETRY, connection errors and read timeouts, honouring ``Retry-After`` (capped,
  with jitter) and otherwise backing off exponentially with jitter;
- ``tenacity`` (``new_retrying``) retries what urllib3 cannot see because it happens after the
  headers arrived: a body cut short, a reset mid-body, or a 200 whose JSON is unusable.

Both draw on ONE ``Budget`` per logical request (a thread-local count of attempts and failed
attempts, and a deadline), so a request makes at most ``max_attempts`` HTTP attempts in all,
however its failures alternate between the layers, and no retry starts after ``max_retry_wait``.
Which fault is retried is decided by ``pipelines.taskrouter.errors.ERRORS`` alone.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import requests
import tenacity
from urllib3.exceptions import (
    ConnectTimeoutError,
    InvalidHeader,
    MaxRetryError,
    NewConnectionError,
    ReadTimeoutError,
)
from urllib3.util.retry import Retry

from pipelines.taskrouter.errors import ERRORS, retried_statuses
from pipelines.taskrouter.options import ClientOptions


class BackoffListener(Protocol):
    """Told when this thread starts and ends a backoff (the reader pool lends its slot)."""

    def backoff_begins(self) -> None: ...

    def backoff_ends(self) -> None: ...


class Budget(threading.local):
    """Attempts, failed attempts and deadline of the one logical request this thread is making,
    and the reader pool this thread serves (told when the thread backs off)."""

    attempts: int = 0
    failures: int = 0
    limit: int = 0  # 0: no request of ours in progress on this thread
    deadline: float = 0.0
    pool: BackoffListener | None = None

    def start(self, limit: int, max_wait: float) -> None:
        self.attempts, self.failures, self.limit = 0, 0, limit
        self.deadline = time.monotonic() + max_wait

    def spent(self) -> bool:
        return self.limit > 0 and (
            self.failures >= self.limit or time.monotonic() >= self.deadline
        )


budget = Budget()


class LimitedRetry(Retry):
    """urllib3 Retry that shares the request's budget and calls hooks around each retry's wait.

    ``on_wait`` gives up the request's in-flight slot while it backs off; ``on_retry`` takes
    it back, counts the retry and takes a rate-limit slot, so retries obey the limit too;
    ``on_throttle`` hears every 429, so the shared limiter slows every thread down, not only
    the one that was told.
    """

    on_wait: Any = None
    on_retry: Any = None
    on_throttle: Any = None

    def new(self, **kw: Any) -> LimitedRetry:
        fresh = super().new(**kw)
        fresh.on_wait, fresh.on_retry = self.on_wait, self.on_retry
        fresh.on_throttle = self.on_throttle
        return fresh

    def increment(self, *args: Any, **kwargs: Any) -> LimitedRetry:
        budget.failures += 1
        response = kwargs.get("response", args[2] if len(args) > 2 else None)
        if self.on_throttle is not None and getattr(response, "status", None) == 429:
            self.on_throttle()
        return super().increment(*args, **kwargs)

    def is_exhausted(self) -> bool:
        return super().is_exhausted() or budget.spent()

    def get_retry_after(self, response: Any) -> float | None:
        # A Retry-After we cannot read is no reason to give up: back off exponentially instead.
        try:
            seconds = super().get_retry_after(response)
        except InvalidHeader:
            return None
        if not seconds:
            return seconds
        # Up to half as long again, at random: threads told the same Retry-After at the same
        # moment would otherwise all come back at the same instant and meet 429 together.
        return min(float(self.retry_after_max), seconds * (1.0 + 0.5 * random.random()))

    def get_backoff_time(self) -> float:
        # urllib3 retries the first failure immediately; a rate-limited API deserves a pause.
        errors = len(self.history)
        if errors == 0:
            return 0.0
        base = self.backoff_factor * (2 ** (errors - 1))
        return float(min(self.backoff_max, base + random.random() * self.backoff_jitter))

    def sleep(self, response: Any = None) -> None:
        if self.on_wait is not None:
            self.on_wait()
        try:
            super().sleep(response)
        finally:
            if self.on_retry is not None:
                self.on_retry()


def new_limited_retry(options: ClientOptions, on_wait: Callable[[], None],
                      on_retry: Callable[[], None], on_throttle: Callable[[], None]) -> LimitedRetry:
    """The urllib3 layer: GET only, never a redirect, the RETRY statuses of ``ERRORS``."""
    retries = options.max_attempts - 1
    retry = LimitedRetry(
        total=retries, connect=retries, read=retries, status=retries, other=0, redirect=0,
        allowed_methods=frozenset({"GET"}),
        status_forcelist=retried_statuses(),
        backoff_factor=options.backoff_factor,
        backoff_max=options.backoff_max,
        backoff_jitter=options.backoff_factor,
        retry_after_max=options.retry_after_max,
        respect_retry_after_header=True,
        raise_on_status=False,
        raise_on_redirect=False,
    )
    retry.on_wait, retry.on_retry, retry.on_throttle = on_wait, on_retry, on_throttle
    return retry


class BodyFault(Exception):
    """A 200 whose body could not be used; ``fault`` is its row of ``ERRORS``."""

    def __init__(self, fault: str, text: str) -> None:
        super().__init__(text)
        self.fault = fault


def fault_of(exc: BaseException) -> str | None:
    """The row of ``ERRORS`` a transport or body exception belongs to (None: not ours)."""
    if isinstance(exc, BodyFault):
        return exc.fault
    if isinstance(exc, requests.exceptions.ChunkedEncodingError
                  | requests.exceptions.ContentDecodingError):
        return "truncated"
    if not isinstance(exc, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
        return None
    reason = _reason(exc)
    if isinstance(reason, NewConnectionError):  # urllib3 makes it a ConnectTimeoutError too
        return "connect"
    if isinstance(exc, requests.exceptions.Timeout) or isinstance(
            reason, ReadTimeoutError | ConnectTimeoutError):
        return "timeout"
    return "reset"


def retry_in_tenacity(exc: BaseException) -> bool:
    """tenacity's condition: a RETRY fault that urllib3 has not already spent attempts on."""
    fault = fault_of(exc)
    if fault is None or not ERRORS[fault].retried:
        return False
    return not (exc.args and isinstance(exc.args[0], MaxRetryError))


def describe(exc: BaseException) -> str:
    """The kind of failure, without the exception text (it may carry URLs and their queries)."""
    if isinstance(exc, BodyFault):
        return str(exc)
    reason = _reason(exc)
    inner = f" ({type(reason).__name__})" if isinstance(reason, BaseException) else ""
    return f"{type(exc).__name__}{inner}"


def _reason(exc: BaseException) -> object:
    reason = exc.args[0] if exc.args else None
    if isinstance(reason, MaxRetryError) and reason.reason is not None:
        reason = reason.reason
    return reason


def backoff_sleep(seconds: float) -> None:
    """tenacity's sleep: the slot is already given up; let the reader pool lend the thread's turn."""
    pool = budget.pool
    if pool is not None:
        pool.backoff_begins()
    try:
        time.sleep(seconds)
    finally:
        if pool is not None:
            pool.backoff_ends()


def new_retrying(options: ClientOptions, before_sleep: Callable[[], None]) -> tenacity.Retrying:
    """The tenacity layer; the client keeps one per thread, reused for each of its requests."""
    return tenacity.Retrying(
        retry=tenacity.retry_if_exception(retry_in_tenacity),
        stop=lambda _state: budget.spent(),
        wait=tenacity.wait_exponential_jitter(
            multiplier=options.backoff_factor, max=options.backoff_max, jitter=options.backoff_factor
        ),
        before_sleep=lambda _state: before_sleep(),
        sleep=backoff_sleep,
        reraise=True,
    )
