"""TaskRouter REST client: Basic auth, paging by ``next_page_url``, retries, a shared rate limit.

Retries are layered on well-kept libraries:
- urllib3's ``Retry`` (mounted on the session's adapter) retries 429/500/502/503/504, connection
  errors and read timeouts, honouring ``Retry-After`` (capped) and otherwise backing off
  exponentially with jitter;
- ``tenacity`` retries what urllib3 cannot see, because it happens after the headers arrived: a
  body cut short, a reset mid-body, or a 200 whose JSON is not a TaskRouter page.
Both layers draw on ONE budget per logical request (a thread-local count of failed attempts and
a deadline), so a request makes at most ``max_attempts`` HTTP attempts in all, however its
failures alternate between the layers, and stops retrying once ``max_retry_wait`` has passed.
Every attempt, retries included, first takes a slot from the shared rate limiter. 401/403 and
redirects are never retried or followed.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson
import requests
import tenacity
from requests.adapters import HTTPAdapter
from urllib3.exceptions import InvalidHeader, MaxRetryError
from urllib3.util.retry import Retry

from pipelines.taskrouter.credentials import CREDENTIAL_VARIABLES, Credentials
from pipelines.taskrouter.errors import (
    TaskRouterAuthError,
    TaskRouterBadPage,
    TaskRouterError,
    TaskRouterNotFound,
    UnsafeNextPageUrl,
)
from pipelines.taskrouter.ratelimit import RateLimiter

DEFAULT_BASE_URL = "https://taskrouter.twilio.com"
MAX_PAGE_SIZE = 1000
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass
class ClientStats:
    """Counters shared by all threads of one client; read them for progress and metadata."""

    requests: int = 0
    retries: int = 0
    pages: int = 0
    bytes: int = 0
    rate_limit_wait_s: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **deltas: float) -> None:
        with self._lock:
            for name, delta in deltas.items():
                setattr(self, name, getattr(self, name) + delta)

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            return {
                "requests": self.requests,
                "retries": self.retries,
                "pages": self.pages,
                "bytes": self.bytes,
                "rate_limit_wait_s": round(self.rate_limit_wait_s, 3),
            }


@dataclass
class WorkerRead:
    """One worker's complete reservation list, or why it could not be read."""

    workspace_sid: str
    worker_sid: str
    records: list[dict[str, Any]]
    pages: int = 0
    outcome: str = "ok"  # ok | not_found | failed
    error: str | None = None

    @property
    def complete(self) -> bool:
        return self.outcome == "ok"


class _Budget(threading.local):
    """Failed attempts and deadline of the one logical request this thread is making."""

    failures: int = 0
    limit: int = 0  # 0: no request of ours in progress on this thread
    deadline: float = 0.0

    def start(self, limit: int, max_wait: float) -> None:
        self.failures, self.limit, self.deadline = 0, limit, time.monotonic() + max_wait

    def spent(self) -> bool:
        return self.limit > 0 and (
            self.failures >= self.limit or time.monotonic() >= self.deadline
        )


_budget = _Budget()


class _LimitedRetry(Retry):
    """urllib3 Retry that shares the request's budget and calls hooks around each retry's wait.

    ``on_wait`` gives up the request's in-flight slot while it backs off; ``on_retry`` takes
    it back, counts the retry and takes a rate-limit slot, so retries obey the limit too.
    """

    on_wait: Any = None
    on_retry: Any = None

    def new(self, **kw: Any) -> _LimitedRetry:
        fresh = super().new(**kw)
        fresh.on_wait, fresh.on_retry = self.on_wait, self.on_retry
        return fresh

    def increment(self, *args: Any, **kwargs: Any) -> _LimitedRetry:
        _budget.failures += 1
        return super().increment(*args, **kwargs)

    def is_exhausted(self) -> bool:
        return super().is_exhausted() or _budget.spent()

    def get_retry_after(self, response: Any) -> float | None:
        # A Retry-After we cannot read is no reason to give up: back off exponentially instead.
        try:
            return super().get_retry_after(response)
        except InvalidHeader:
            return None

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


class _BodyFault(Exception):
    """A response whose body could not be read or parsed; worth another attempt."""


def _is_body_fault(exc: BaseException) -> bool:
    if isinstance(exc, _BodyFault | requests.exceptions.ChunkedEncodingError):
        return True
    if isinstance(exc, requests.exceptions.ContentDecodingError):
        return True
    if isinstance(exc, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
        # urllib3 already spent its attempts on this one; do not multiply them.
        return not (exc.args and isinstance(exc.args[0], MaxRetryError))
    return False


def _describe(exc: BaseException) -> str:
    """The kind of failure, without the exception text (it may carry URLs and their queries)."""
    if isinstance(exc, _BodyFault):
        return str(exc)
    reason = exc.args[0] if exc.args else None
    if isinstance(reason, MaxRetryError) and reason.reason is not None:
        reason = reason.reason
    inner = f" ({type(reason).__name__})" if isinstance(reason, BaseException) else ""
    return f"{type(exc).__name__}{inner}"


def _origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or (443 if scheme == "https" else 80)
    return scheme, (parts.hostname or "").lower(), port


class TaskRouterClient:
    """Reads workspaces, workers and reservations from TaskRouter (or the local emulator)."""

    def __init__(
        self,
        credentials: Credentials,
        base_url: str = DEFAULT_BASE_URL,
        *,
        page_size: int = MAX_PAGE_SIZE,
        concurrency: int = 8,
        requests_per_second: float | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        max_attempts: int = 6,
        backoff_factor: float = 0.5,
        backoff_max: float = 30.0,
        retry_after_max: float = 60.0,
        max_retry_wait: float = 120.0,
    ) -> None:
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be 1..{MAX_PAGE_SIZE} (TaskRouter error 20007 above)")
        self.base_url = base_url.rstrip("/")
        self._origin = _origin(self.base_url)
        self.page_size = page_size
        self.concurrency = max(1, int(concurrency))
        # ``concurrency`` requests in flight at most, but four reader threads per slot: a worker
        # backing off before a retry (or waiting out Retry-After) gives its slot to another
        # instead of idling it, so faults cost their waits once, not once per blocked slot.
        self._in_flight = threading.BoundedSemaphore(self.concurrency)
        self.threads = 4 * self.concurrency
        self.timeout = (connect_timeout, read_timeout)
        self.max_attempts = max(1, int(max_attempts))
        # No retry starts after this many seconds; one started may still wait its backoff (at
        # most backoff_max) or Retry-After (at most retry_after_max) plus its own timeouts.
        self.max_retry_wait = max_retry_wait
        self.backoff_factor, self.backoff_max = backoff_factor, backoff_max
        self.stats = ClientStats()
        self.limiter = RateLimiter(requests_per_second)
        self._auth_kind = credentials.kind

        retry = _LimitedRetry(
            total=self.max_attempts - 1,
            connect=self.max_attempts - 1,
            read=self.max_attempts - 1,
            status=self.max_attempts - 1,
            other=0,
            redirect=0,
            allowed_methods=frozenset({"GET"}),
            status_forcelist=RETRY_STATUSES,
            backoff_factor=backoff_factor,
            backoff_max=backoff_max,
            backoff_jitter=backoff_factor,
            retry_after_max=retry_after_max,
            respect_retry_after_header=True,
            raise_on_status=False,
            raise_on_redirect=False,
        )
        retry.on_wait, retry.on_retry = self._in_flight.release, self._before_retry
        adapter = HTTPAdapter(
            pool_connections=4, pool_maxsize=self.threads + 2, max_retries=retry
        )
        self.session = requests.Session()
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        self.session.auth = credentials.as_auth()
        self.session.trust_env = False
        self.session.headers.update(
            {"Accept": "application/json", "User-Agent": "taskrouter-warehouse/0.1"}
        )

    # -- lifecycle ---------------------------------------------------------------------------
    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> TaskRouterClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- one request -------------------------------------------------------------------------
    def get_json(self, url: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """GET one URL on the configured host, with both retry layers; returns the parsed body."""
        self._check_same_origin(url)
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(_is_body_fault),
            stop=lambda _state: _budget.spent(),
            wait=tenacity.wait_exponential_jitter(
                initial=self.backoff_factor, max=self.backoff_max, jitter=self.backoff_factor
            ),
            before_sleep=lambda _state: self.stats.add(retries=1),
            reraise=True,
        )
        _budget.start(self.max_attempts, self.max_retry_wait)
        try:
            return retrying(self._attempt, url, params)
        except (requests.exceptions.RequestException, _BodyFault) as exc:
            raise TaskRouterError(
                f"TaskRouter request failed after {_budget.failures} attempt(s): "
                f"{_describe(exc)}",
                path=urlsplit(url).path,
            ) from None
        finally:
            _budget.limit = 0

    def _before_retry(self) -> None:
        """Runs before every urllib3 retry: take an in-flight slot back, count, rate-limit."""
        self._in_flight.acquire()
        self.stats.add(retries=1, requests=1, rate_limit_wait_s=self.limiter.acquire())

    def _attempt(self, url: str, params: dict[str, Any] | None) -> dict[str, Any]:
        with self._in_flight:
            self.stats.add(requests=1, rate_limit_wait_s=self.limiter.acquire())
            try:
                return self._get_once(url, params)
            except BaseException as exc:
                if _is_body_fault(exc):
                    _budget.failures += 1
                raise

    def _get_once(self, url: str, params: dict[str, Any] | None) -> dict[str, Any]:
        # Redirects are not followed: credentials go to TASKROUTER_BASE_URL and nowhere else.
        response = self.session.get(
            url, params=params, timeout=self.timeout, allow_redirects=False
        )
        self.stats.add(bytes=len(response.content))
        if response.status_code >= 300:
            raise self._error_from(response)
        try:
            body = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise _BodyFault("response body is not valid JSON") from None
        if not isinstance(body, dict):
            raise _BodyFault("response body is not a JSON object")
        return body

    def _error_from(self, response: requests.Response) -> TaskRouterError:
        path = urlsplit(response.url).path
        try:
            body = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        message = str(body.get("message") or response.reason or "error")
        kwargs: dict[str, Any] = {
            "status": response.status_code,
            "code": body.get("code"),
            "more_info": body.get("more_info"),
            "path": path,
        }
        if response.status_code in (401, 403):
            which = (
                "TWILIO_API_KEY_SID / TWILIO_API_KEY_SECRET"
                if self._auth_kind == "api_key"
                else "TWILIO_ACCOUNT_SID / TWILIO_AUTH_TOKEN"
            )
            return TaskRouterAuthError(
                f"TaskRouter refused the credentials ({message}). Check {which} "
                f"(one of {', '.join(CREDENTIAL_VARIABLES)}) and TASKROUTER_BASE_URL",
                **kwargs,
            )
        if response.status_code == 404:
            return TaskRouterNotFound(message, **kwargs)
        if response.status_code < 400:
            return TaskRouterError(
                "TaskRouter answered with a redirect, which is not followed (credentials are only "
                "sent to TASKROUTER_BASE_URL)",
                **kwargs,
            )
        return TaskRouterError(message, **kwargs)

    def _check_same_origin(self, url: str) -> None:
        if _origin(url) != self._origin:
            scheme, host, port = _origin(url)
            raise UnsafeNextPageUrl(
                f"Refusing to follow a URL on {scheme}://{host}:{port}; only "
                f"{self.base_url} (TASKROUTER_BASE_URL) receives the credentials"
            )

    # -- paging ------------------------------------------------------------------------------
    def iter_pages(
        self, path: str, params: dict[str, Any] | None = None
    ) -> Iterator[list[dict[str, Any]]]:
        """Yield each page's records, following ``meta.next_page_url`` exactly as given."""
        url: str | None = f"{self.base_url}{path}"
        query: dict[str, Any] | None = {"PageSize": self.page_size, **(params or {})}
        while url:
            body = self.get_json(url, query)
            records, url = self._unwrap_page(body, path)
            self.stats.add(pages=1)
            query = None  # the next URL already carries PageSize, filters and the PageToken
            yield records

    def _unwrap_page(
        self, body: dict[str, Any], path: str
    ) -> tuple[list[dict[str, Any]], str | None]:
        meta = body.get("meta")
        key = meta.get("key") if isinstance(meta, dict) else None
        records = body.get(key) if isinstance(key, str) else None
        if not isinstance(records, list):
            raise TaskRouterBadPage(
                "TaskRouter page without a 'meta.key' list (not a TaskRouter list response?)",
                path=path,
            )
        next_url = meta.get("next_page_url")
        if next_url is not None and not isinstance(next_url, str):
            raise TaskRouterBadPage("meta.next_page_url is neither a URL nor null", path=path)
        return records, next_url or None

    # -- listings ----------------------------------------------------------------------------
    def list_workspaces(self, sids: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """Every workspace of the account, or exactly the given ones (404 names the variable)."""
        wanted = [s.strip() for s in (sids or []) if s and s.strip()]
        if not wanted:
            return [w for page in self.iter_pages("/v1/Workspaces") for w in page]
        found = []
        for sid in wanted:
            try:
                found.append(self.get_json(f"{self.base_url}/v1/Workspaces/{sid}"))
            except TaskRouterNotFound as exc:
                raise TaskRouterNotFound(
                    f"Workspace {sid} does not exist for these credentials; "
                    "check TASKROUTER_WORKSPACE_SIDS",
                    status=exc.status,
                    code=exc.code,
                    path=exc.path,
                ) from None
        return found

    def list_workers(self, workspace_sid: str) -> list[dict[str, Any]]:
        path = f"/v1/Workspaces/{workspace_sid}/Workers"
        return [w for page in self.iter_pages(path) for w in page]

    def read_worker_reservations(
        self, workspace_sid: str, worker_sid: str, status: str | None = None
    ) -> WorkerRead:
        """All pages of one worker, in order; a vanished worker is an outcome, not an error."""
        path = f"/v1/Workspaces/{workspace_sid}/Workers/{worker_sid}/Reservations"
        params = {"ReservationStatus": status} if status else None
        read = WorkerRead(workspace_sid, worker_sid, [])
        try:
            for page in self.iter_pages(path, params):
                read.records.extend(page)
                read.pages += 1
        except TaskRouterNotFound:
            read.outcome, read.error = "not_found", "worker not found (deleted upstream?)"
        except (TaskRouterAuthError, UnsafeNextPageUrl):
            raise
        except TaskRouterError as exc:
            read.outcome, read.error = "failed", str(exc)
        return read

    def read_reservations(
        self,
        workspace_sid: str,
        worker_sids: Iterable[str],
        status: str | None = None,
    ) -> Iterator[WorkerRead]:
        """Read many workers with a bounded pool; yields as each finishes, so memory stays flat.

        At most ``concurrency`` requests are in flight, and at most ``8 x concurrency`` workers
        are being read or waiting to be consumed. One worker's pages are read in order.
        """
        pending: set[Future[WorkerRead]] = set()
        window = 2 * self.threads
        sids = iter(worker_sids)
        pool = ThreadPoolExecutor(self.threads, thread_name_prefix="taskrouter")
        try:
            exhausted = False
            while True:
                while not exhausted and len(pending) < window:
                    sid = next(sids, None)
                    if sid is None:
                        exhausted = True
                        break
                    pending.add(
                        pool.submit(self.read_worker_reservations, workspace_sid, sid, status)
                    )
                if not pending:
                    return
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield future.result()
        finally:
            for future in pending:
                future.cancel()
            pool.shutdown(wait=True, cancel_futures=True)
